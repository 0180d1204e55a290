//! Passkeys over HTTP with a software authenticator (`tests/support/authenticator.rs`):
//! registration while signed in, listing, renaming and removal, sign-in with a passkey alone
//! in both transports, and every refusal: malformed and replayed answers, a ceremony used
//! twice or after its time, another origin or relying party id, an unknown credential, no
//! user verification, a signature counter gone backwards.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Response;
use serde_json::{json, Value};
use tessera::domain::{Clock, SystemClock, Timestamp};
use tessera::startup::Application;

use crate::authenticator::Authenticator;
use crate::helpers::*;

const ORIGIN: &str = "http://localhost:5173";

fn passkeys_on(c: &mut tessera::config::Config) {
    c.webauthn_rp_id = Some("localhost".into());
    c.webauthn_origins = vec![ORIGIN.into()];
}

async fn spawn_with_passkeys() -> TestApp {
    spawn_app_with(passkeys_on).await
}

impl TestApp {
    async fn patch_authed(&self, path: &str, access_token: &str, body: &Value) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(access_token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Registers a passkey for the account of `access` with `auth`; the passkey view.
    async fn add_passkey(&self, access: &str, auth: &mut Authenticator, name: Option<&str>) -> Value {
        let options = json_ok(
            self.post_authed("/v1/account/passkeys/register/options", access, None)
                .await,
        )
        .await;
        let credential = auth.create(&options);
        let mut body = json!({ "credential": credential });
        if let Some(name) = name {
            body["name"] = name.into();
        }
        let r = self
            .post_authed("/v1/account/passkeys/register", access, Some(&body))
            .await;
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
        r.json().await.unwrap()
    }

    async fn passkeys(&self, access: &str) -> Vec<Value> {
        let list = json_ok(self.get_authed("/v1/account/passkeys", access).await).await;
        list["passkeys"].as_array().unwrap().clone()
    }

    /// A sign-in ceremony: (ceremony id, request options).
    async fn passkey_options(&self) -> (String, Value) {
        let v = json_ok(self.post_json("/v1/auth/passkey/options", &json!({})).await).await;
        (s(&v, "ceremony"), v["publicKey"].clone())
    }

    async fn passkey_sign_in(&self, ceremony: &str, credential: &Value) -> Response {
        self.post_json(
            "/v1/auth/passkey",
            &json!({ "ceremony": ceremony, "credential": credential }),
        )
        .await
    }
}

#[tokio::test]
async fn passkeys_are_off_when_the_public_url_is_an_ip_address() {
    let app = spawn_app().await;
    assert_problem(
        app.post_json("/v1/auth/passkey/options", &json!({})).await,
        404,
        "passkeys_disabled",
    )
    .await;
    let t = app.signup_and_login(EMAIL).await;
    let access = s(&t, "access_token");
    assert_problem(
        app.get_authed("/v1/account/passkeys", &access).await,
        404,
        "passkeys_disabled",
    )
    .await;
}

#[tokio::test]
async fn registration_asks_for_a_discoverable_verified_credential_without_attestation() {
    let app = spawn_with_passkeys().await;
    let t = app.signup_and_login(EMAIL).await;
    let access = s(&t, "access_token");
    let options = json_ok(
        app.post_authed("/v1/account/passkeys/register/options", &access, None)
            .await,
    )
    .await;
    let pk = &options["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["user"]["name"], EMAIL);
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(pk["authenticatorSelection"]["requireResidentKey"], true);
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(pk["attestation"], "none");
    assert!(pk["challenge"].as_str().is_some_and(|c| c.len() >= 43), "{pk}");
}

#[tokio::test]
async fn a_passkey_is_registered_listed_renamed_and_removed_by_its_account_only() {
    let app = spawn_with_passkeys().await;
    let alice = s(&app.signup_and_login(EMAIL).await, "access_token");
    let bob = s(&app.signup_and_login("bob@example.com").await, "access_token");
    let mut auth = Authenticator::new(ORIGIN);

    let added = app.add_passkey(&alice, &mut auth, Some("Laptop")).await;
    assert_uuid(&added["id"]);
    assert_eq!(added["name"], "Laptop");
    assert_rfc3339(&added["created_at"]);
    assert!(added["last_used_at"].is_null());
    let unnamed = app.add_passkey(&alice, &mut auth, None).await;
    assert_eq!(unnamed["name"], "Passkey 2");
    let listed = app.passkeys(&alice).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], added["id"]);
    assert!(app.passkeys(&bob).await.is_empty());

    let id = s(&added, "id");
    let path = format!("/v1/account/passkeys/{id}");
    let renamed = json_ok(
        app.patch_authed(&path, &alice, &json!({ "name": " Work laptop " }))
            .await,
    )
    .await;
    assert_eq!(renamed["name"], "Work laptop");
    assert_validation(
        app.patch_authed(&path, &alice, &json!({ "name": "" })).await,
        &["name"],
    )
    .await;
    // Another account's passkey is no passkey of its own.
    assert_problem(
        app.patch_authed(&path, &bob, &json!({ "name": "mine" })).await,
        404,
        "passkey_not_found",
    )
    .await;
    assert_problem(app.delete_authed(&path, &bob).await, 404, "passkey_not_found").await;
    assert_problem(
        app.delete_authed("/v1/account/passkeys/not-an-id", &alice).await,
        404,
        "passkey_not_found",
    )
    .await;

    assert_status(app.delete_authed(&path, &alice).await, 204).await;
    assert_problem(app.delete_authed(&path, &alice).await, 404, "passkey_not_found").await;
    let left = app.passkeys(&alice).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], unnamed["id"]);

    let kinds: Vec<String> = app
        .audit_events(EMAIL)
        .await
        .iter()
        .map(|e| e.event.clone())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "passkey_added").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "passkey_removed").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_registration_is_answered_once_and_for_its_own_origin() {
    let app = spawn_with_passkeys().await;
    let access = s(&app.signup_and_login(EMAIL).await, "access_token");
    let register = |body: Value| {
        let (app, access) = (&app, access.clone());
        async move {
            app.post_authed("/v1/account/passkeys/register", &access, Some(&body))
                .await
        }
    };
    // Nothing started.
    let mut auth = Authenticator::new(ORIGIN);
    let options = json!({ "publicKey": {
        "rp": { "id": "localhost" }, "challenge": "AAAA", "user": { "id": "AAAA" } } });
    assert_problem(
        register(json!({ "credential": auth.create(&options) })).await,
        400,
        "passkey_ceremony_invalid",
    )
    .await;
    assert_validation(register(json!({})).await, &["credential"]).await;
    assert_validation(
        register(json!({ "credential": {}, "extra": 1 })).await,
        &["extra"],
    )
    .await;
    // Malformed: refused before the ceremony is spent.
    json_ok(
        app.post_authed("/v1/account/passkeys/register/options", &access, None)
            .await,
    )
    .await;
    assert_problem(
        register(json!({ "credential": { "id": 1 } })).await,
        400,
        "passkey_invalid",
    )
    .await;
    // Another origin.
    let options = json_ok(
        app.post_authed("/v1/account/passkeys/register/options", &access, None)
            .await,
    )
    .await;
    let mut elsewhere = Authenticator::new("https://evil.example");
    assert_problem(
        register(json!({ "credential": elsewhere.create(&options) })).await,
        400,
        "passkey_wrong_origin",
    )
    .await;
    // The ceremony went with that answer: the right one now finds none.
    let credential = auth.create(&options);
    assert_problem(
        register(json!({ "credential": credential.clone() })).await,
        400,
        "passkey_ceremony_invalid",
    )
    .await;
    // The same credential twice (a new ceremony, an old answer): its challenge is not this one.
    let options = json_ok(
        app.post_authed("/v1/account/passkeys/register/options", &access, None)
            .await,
    )
    .await;
    let fresh = auth.create(&options);
    assert_status(register(json!({ "credential": fresh.clone() })).await, 201).await;
    json_ok(
        app.post_authed("/v1/account/passkeys/register/options", &access, None)
            .await,
    )
    .await;
    assert_problem(
        register(json!({ "credential": fresh })).await,
        400,
        "passkey_invalid",
    )
    .await;
    assert_eq!(app.passkeys(&access).await.len(), 1);
}

#[tokio::test]
async fn a_passkey_alone_signs_in_in_either_transport() {
    let app = spawn_with_passkeys().await;
    let access = s(&app.signup_and_login(EMAIL).await, "access_token");
    let mut auth = Authenticator::new(ORIGIN);
    app.add_passkey(&access, &mut auth, Some("Phone")).await;

    let (ceremony, options) = app.passkey_options().await;
    assert_eq!(options["rpId"], "localhost");
    assert_eq!(options["userVerification"], "required");
    assert!(
        options["allowCredentials"].as_array().is_none_or(Vec::is_empty),
        "{options}"
    );
    let assertion = auth.get(&options, 0);
    let t = json_ok(app.passkey_sign_in(&ceremony, &assertion).await).await;
    assert_user(&t["user"], EMAIL);
    let me = json_ok(app.me(&s(&t, "access_token")).await).await;
    assert_eq!(me["session_id"], t["session_id"]);
    json_ok(app.refresh(&s(&t, "refresh_token")).await).await;
    let listed = app.passkeys(&access).await;
    assert_rfc3339(&listed[0]["last_used_at"]);

    // The same answer again: its ceremony is gone.
    assert_problem(
        app.passkey_sign_in(&ceremony, &assertion).await,
        400,
        "passkey_ceremony_invalid",
    )
    .await;
    // An old answer to a new ceremony: the challenge is not this one's.
    let (ceremony, _) = app.passkey_options().await;
    assert_problem(
        app.passkey_sign_in(&ceremony, &assertion).await,
        400,
        "passkey_invalid",
    )
    .await;

    // Cookie transport, exactly as a login answers it.
    let (ceremony, options) = app.passkey_options().await;
    let r = app
        .post_json(
            "/v1/auth/passkey",
            &json!({ "ceremony": ceremony, "credential": auth.get(&options, 0), "transport": "cookie" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("tessera_at=")),
        "{cookies:?}"
    );
    assert!(
        cookies.iter().any(|c| c.starts_with("tessera_rt=")),
        "{cookies:?}"
    );
    let body: Value = r.json().await.unwrap();
    assert!(body.get("access_token").is_none());
    assert!(body["csrf_token"].is_string());

    let events = app.audit_events(EMAIL).await;
    let passkey_logins = events
        .iter()
        .filter(|e| e.event == "login_succeeded" && e.detail.as_deref() == Some("passkey"))
        .count();
    assert_eq!(passkey_logins, 2);
}

#[tokio::test]
async fn refused_sign_ins_issue_nothing() {
    let app = spawn_with_passkeys().await;
    let access = s(&app.signup_and_login(EMAIL).await, "access_token");
    let mut auth = Authenticator::new(ORIGIN);
    app.add_passkey(&access, &mut auth, None).await;

    // Malformed input.
    assert_validation(
        app.post_json("/v1/auth/passkey", &json!({})).await,
        &["ceremony", "credential"],
    )
    .await;
    let (ceremony, options) = app.passkey_options().await;
    assert_problem(
        app.passkey_sign_in(&ceremony, &json!({ "id": "x", "response": {} }))
            .await,
        400,
        "passkey_invalid",
    )
    .await;
    let mut garbled = auth.get(&options, 0);
    garbled["response"]["signature"] = "AAAA".into();
    assert_problem(
        app.passkey_sign_in(&ceremony, &garbled).await,
        400,
        "passkey_invalid",
    )
    .await;
    // An unknown ceremony.
    let (_, options) = app.passkey_options().await;
    assert_problem(
        app.passkey_sign_in("no-such-ceremony", &auth.get(&options, 0))
            .await,
        400,
        "passkey_ceremony_invalid",
    )
    .await;
    // Another origin; another relying party id.
    auth.origin = "https://evil.example".into();
    let (ceremony, options) = app.passkey_options().await;
    assert_problem(
        app.passkey_sign_in(&ceremony, &auth.get(&options, 0)).await,
        400,
        "passkey_wrong_origin",
    )
    .await;
    auth.origin = ORIGIN.into();
    auth.rp_id_override = Some("example.com".into());
    let (ceremony, options) = app.passkey_options().await;
    assert_problem(
        app.passkey_sign_in(&ceremony, &auth.get(&options, 0)).await,
        400,
        "passkey_wrong_origin",
    )
    .await;
    auth.rp_id_override = None;
    // Without user verification.
    auth.user_verified = false;
    let (ceremony, options) = app.passkey_options().await;
    assert_problem(
        app.passkey_sign_in(&ceremony, &auth.get(&options, 0)).await,
        400,
        "passkey_invalid",
    )
    .await;
    auth.user_verified = true;
    // A credential never registered (made, but its registration never sent).
    let mut stranger = Authenticator::new(ORIGIN);
    let options = json_ok(
        app.post_authed("/v1/account/passkeys/register/options", &access, None)
            .await,
    )
    .await;
    stranger.create(&options);
    let (ceremony, options) = app.passkey_options().await;
    assert_problem(
        app.passkey_sign_in(&ceremony, &stranger.get(&options, 0)).await,
        401,
        "passkey_unknown",
    )
    .await;
    // Still good after all that.
    let (ceremony, options) = app.passkey_options().await;
    json_ok(app.passkey_sign_in(&ceremony, &auth.get(&options, 0)).await).await;
    let sessions_before = app.sessions(&access).await.len();
    assert_eq!(sessions_before, 2);
}

#[tokio::test]
async fn a_counter_gone_backwards_is_refused_and_raised() {
    let app = spawn_with_passkeys().await;
    let access = s(&app.signup_and_login(EMAIL).await, "access_token");
    let mut auth = Authenticator::new(ORIGIN);
    app.add_passkey(&access, &mut auth, None).await;
    auth.credentials[0].counter = 7;
    let (ceremony, options) = app.passkey_options().await;
    json_ok(app.passkey_sign_in(&ceremony, &auth.get(&options, 0)).await).await;
    // A clone that signs with an older counter.
    auth.credentials[0].counter = 2;
    let (ceremony, options) = app.passkey_options().await;
    assert_problem(
        app.passkey_sign_in(&ceremony, &auth.get(&options, 0)).await,
        401,
        "passkey_counter_regressed",
    )
    .await;
    let events = app.audit_events(EMAIL).await;
    assert!(
        events.iter().any(|e| e.event == "passkey_counter_regressed"),
        "{:?}",
        events.iter().map(|e| &e.event).collect::<Vec<_>>()
    );
    assert_eq!(app.sessions(&access).await.len(), 2, "no session for the clone");
}

#[tokio::test]
async fn a_removed_passkey_signs_in_no_more() {
    let app = spawn_with_passkeys().await;
    let access = s(&app.signup_and_login(EMAIL).await, "access_token");
    let mut auth = Authenticator::new(ORIGIN);
    let added = app.add_passkey(&access, &mut auth, None).await;
    assert_status(
        app.delete_authed(&format!("/v1/account/passkeys/{}", s(&added, "id")), &access)
            .await,
        204,
    )
    .await;
    let (ceremony, options) = app.passkey_options().await;
    assert_problem(
        app.passkey_sign_in(&ceremony, &auth.get(&options, 0)).await,
        401,
        "passkey_unknown",
    )
    .await;
}

/// A clock the test sets.
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[tokio::test]
async fn a_ceremony_answered_after_its_time_is_refused() {
    let clock = Arc::new(ManualClock(AtomicI64::new(SystemClock.now().millis())));
    let storage = test_storage().await;
    let mut config = test_config(&storage);
    passkeys_on(&mut config);
    let built = Application::build_with_clock(&config, clock.clone())
        .await
        .expect("build");
    let app = serve(built, config, Arc::new(storage));
    let access = s(&app.signup_and_login(EMAIL).await, "access_token");
    let mut auth = Authenticator::new(ORIGIN);
    let options = json_ok(
        app.post_authed("/v1/account/passkeys/register/options", &access, None)
            .await,
    )
    .await;
    let late = Duration::from_secs(5 * 60).as_millis() as i64;
    clock.0.fetch_add(late, Ordering::SeqCst);
    assert_problem(
        app.post_authed(
            "/v1/account/passkeys/register",
            &access,
            Some(&json!({ "credential": auth.create(&options) })),
        )
        .await,
        400,
        "passkey_ceremony_expired",
    )
    .await;
    let access = s(&app.login_ok(EMAIL).await, "access_token");
    app.add_passkey(&access, &mut auth, None).await;
    let (ceremony, options) = app.passkey_options().await;
    clock.0.fetch_add(late - 1, Ordering::SeqCst);
    let (ceremony2, options2) = app.passkey_options().await;
    clock.0.fetch_add(1, Ordering::SeqCst);
    assert_problem(
        app.passkey_sign_in(&ceremony, &auth.get(&options, 1)).await,
        400,
        "passkey_ceremony_expired",
    )
    .await;
    // One made later is still good.
    json_ok(app.passkey_sign_in(&ceremony2, &auth.get(&options2, 1)).await).await;
}

#[test]
fn an_inconsistent_relying_party_stops_serve_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TESSERA_WEBAUTHN_RP_ID", "example.com".to_owned()),
        ("TESSERA_WEBAUTHN_ORIGINS", "https://example.org".to_owned()),
    ];
    let (mut served, _stdout) = crate::binary::Served::spawn(dir.path(), &[], &env);
    let status = served.wait_for_exit();
    assert!(!status.success(), "exit status {status}");
    let stderr = served.stderr();
    assert!(
        stderr.contains("webauthn_origins") && stderr.contains("https://example.org"),
        "{stderr}"
    );
}

/// The claims of an access token (its signature is the server's business here).
fn claims(access: &str) -> Value {
    use base64::Engine;
    let payload = access.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

#[tokio::test]
async fn a_passkey_alone_says_so_in_amr_and_is_a_second_factor_after_a_password() {
    let app = spawn_with_passkeys().await;
    let access = s(&app.signup_and_login(EMAIL).await, "access_token");
    let mut auth = Authenticator::new(ORIGIN);
    app.add_passkey(&access, &mut auth, None).await;

    // Alone: a device-bound key, the person verified.
    let (ceremony, options) = app.passkey_options().await;
    let t = json_ok(app.passkey_sign_in(&ceremony, &auth.get(&options, 0)).await).await;
    let amr = claims(&s(&t, "access_token"))["amr"].clone();
    assert_eq!(amr, json!(["hwk", "user", "mfa"]), "{amr}");

    // After a password: the second step offers the passkey.
    let first = json_ok(app.login(EMAIL).await).await;
    assert_eq!(first["mfa_required"], true, "{first}");
    assert!(
        first["methods"].as_array().unwrap().contains(&json!("passkey")),
        "{first}"
    );
    let challenge = s(&first, "challenge");
    let options = json_ok(
        app.post_json("/v1/auth/mfa/passkey/options", &json!({ "challenge": challenge }))
            .await,
    )
    .await;
    let credential = auth.get(&options["publicKey"], 0);
    let verify = |credential: Value| {
        let (app, challenge) = (&app, challenge.clone());
        async move {
            app.post_json(
                "/v1/auth/mfa/verify",
                &json!({ "challenge": challenge, "method": "passkey", "credential": credential }),
            )
            .await
        }
    };
    assert_validation(
        app.post_json(
            "/v1/auth/mfa/verify",
            &json!({ "challenge": challenge, "method": "passkey" }),
        )
        .await,
        &["credential"],
    )
    .await;
    let t = json_ok(verify(credential.clone()).await).await;
    let amr = claims(&s(&t, "access_token"))["amr"].clone();
    assert!(
        ["pwd", "hwk", "mfa"]
            .iter()
            .all(|v| amr.as_array().unwrap().contains(&json!(v))),
        "{amr}"
    );
    // The same answer again: the challenge and the ceremony are spent.
    assert!(!verify(credential).await.status().is_success());
    // A challenge that is no challenge gets no options.
    assert_problem(
        app.post_json("/v1/auth/mfa/passkey/options", &json!({ "challenge": "nope" }))
            .await,
        401,
        "mfa_challenge_invalid",
    )
    .await;
}

/// `tessera users mfa reset` removes passkeys too: the holder who lost them signs in with the
/// password alone again (before, a passkey survived the reset and still asked for a second step).
#[tokio::test]
async fn an_operators_factor_reset_removes_passkeys_too() {
    let app = spawn_with_passkeys().await;
    let t = app.signup_and_login(EMAIL).await;
    let access = s(&t, "access_token");
    let mut auth = Authenticator::new(ORIGIN);
    app.add_passkey(&access, &mut auth, Some("laptop")).await;
    let asked = json_ok(app.login(EMAIL).await).await;
    assert_eq!(asked["mfa_required"], true, "{asked}");

    let reset = crate::admin_cli::tessera(&app, &["users", "mfa", "reset", EMAIL], None).await;
    assert_eq!(
        reset.out().trim(),
        format!("removed the second factors of {EMAIL}")
    );
    let tokens = json_ok(app.login(EMAIL).await).await;
    assert!(tokens.get("mfa_required").is_none(), "{tokens}");
    assert!(app.passkeys(&s(&tokens, "access_token")).await.is_empty());
    let again = crate::admin_cli::tessera(&app, &["users", "mfa", "reset", EMAIL], None).await;
    assert_eq!(again.out().trim(), format!("{EMAIL} had no second factor"));
}

/// `POST /v1/auth/reauthenticate` with a passkey: a ceremony for the signed-in holder, answered
/// once; the renewed tokens say a passkey was used (a password session gains `hwk` and `mfa`).
#[tokio::test]
async fn a_passkey_reauthenticates_the_holder_once_per_ceremony() {
    let app = spawn_with_passkeys().await;
    let access = s(&app.signup_and_login(EMAIL).await, "access_token");
    let mut auth = Authenticator::new(ORIGIN);
    app.add_passkey(&access, &mut auth, None).await;

    let options = json_ok(
        app.post_authed("/v1/auth/reauthenticate/passkey/options", &access, None)
            .await,
    )
    .await;
    let credential = auth.get(&options["publicKey"], 0);
    let reauthenticate = |credential: Value| {
        let (app, access) = (&app, access.clone());
        async move {
            app.post_authed(
                "/v1/auth/reauthenticate",
                &access,
                Some(&json!({ "method": "passkey", "credential": credential })),
            )
            .await
        }
    };
    assert_validation(
        app.post_authed(
            "/v1/auth/reauthenticate",
            &access,
            Some(&json!({ "method": "passkey" })),
        )
        .await,
        &["credential"],
    )
    .await;
    let renewed = json_ok(reauthenticate(credential.clone()).await).await;
    let amr = claims(&s(&renewed, "access_token"))["amr"].clone();
    assert!(
        ["pwd", "hwk", "mfa"]
            .iter()
            .all(|v| amr.as_array().unwrap().contains(&json!(v))),
        "{amr}"
    );
    // The same answer again: the ceremony is spent.
    assert!(!reauthenticate(credential).await.status().is_success());
    // Without a passkey there is nothing to ask for.
    let other = s(&app.signup_and_login("other@example.com").await, "access_token");
    assert_problem(
        app.post_authed("/v1/auth/reauthenticate/passkey/options", &other, None)
            .await,
        401,
        "passkey_unknown",
    )
    .await;
}

#[tokio::test]
async fn a_cookie_sign_in_gets_passkey_options_only_in_its_own_browser() {
    let app = spawn_with_passkeys().await;
    let access = s(&app.signup_and_login(EMAIL).await, "access_token");
    let mut auth = Authenticator::new(ORIGIN);
    app.add_passkey(&access, &mut auth, None).await;
    let r = app
        .post_json(
            "/v1/auth/login",
            &json!({ "email": EMAIL, "password": PASSWORD, "transport": "cookie" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("the challenge's cookie")
        .to_owned();
    assert!(cookie.starts_with("tessera_mfa="), "{cookie}");
    let challenge = s(&r.json::<Value>().await.expect("json"), "challenge");
    let options = |cookie: Option<&str>| {
        let mut request = app
            .client
            .post(app.url("/v1/auth/mfa/passkey/options"))
            .json(&json!({ "challenge": challenge }));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };

    // Another browser, holding the challenge but not the cookie, is told nothing (not even
    // which passkeys the account has) and cannot replace the ceremony the real one started.
    let r = options(None).await.expect("send");
    assert_problem(r, 401, "mfa_challenge_other_browser").await;
    let r = options(Some("tessera_mfa=someone-elses")).await.expect("send");
    assert_problem(r, 401, "mfa_challenge_other_browser").await;

    let options = json_ok(options(Some(&cookie)).await.expect("send")).await;
    let credential = auth.get(&options["publicKey"], 0);
    let r = app
        .client
        .post(app.url("/v1/auth/mfa/verify"))
        .header("cookie", &cookie)
        .json(&json!({ "challenge": challenge, "method": "passkey", "credential": credential }))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
}
