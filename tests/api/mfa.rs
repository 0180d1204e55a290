//! Second factors over HTTP: TOTP enrolment and confirmation, a login that needs the code,
//! wrong and replayed codes, recovery codes, the account's lock counting code guesses, the
//! challenge (single use, expiry, bound to its browser), disabling, and what tokens say
//! about how the holder signed in. Time is the test's own clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use tessera::domain::{Clock, SystemClock, Timestamp};
use tessera::startup::Application;

use crate::helpers::*;

/// A clock the test moves.
pub struct TestClock(AtomicI64);

impl TestClock {
    /// A second into a fresh 30-second TOTP step.
    fn new() -> Arc<TestClock> {
        let step = SystemClock.now().seconds() / 30 + 1;
        Arc::new(TestClock(AtomicI64::new(step * 30_000 + 1_000)))
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

pub async fn spawn_with_clock(
    clock: Arc<TestClock>,
    tweak: impl FnOnce(&mut tessera::config::Config),
) -> TestApp {
    let storage = test_storage().await;
    let mut config = test_config(&storage);
    tweak(&mut config);
    let app = Application::build_with_clock(&config, clock)
        .await
        .expect("build");
    serve(app, config, Arc::new(storage))
}

/// The TOTP code of `secret` (base32) at the clock's time.
pub fn code(secret: &str, clock: &TestClock) -> String {
    code_at(secret, clock.now())
}

/// The TOTP code of `secret` (base32) at `at`.
pub fn code_at(secret: &str, at: Timestamp) -> String {
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).expect("base32"))
        .build()
        .expect("totp");
    totp.generate(at.seconds() as u64).to_string()
}

/// The claims of an access token (not verified: the server made it).
pub fn claims(access_token: &str) -> Value {
    let payload = access_token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("json")
}

/// Signs up `email`, turns TOTP on; returns the access token, the secret and the recovery codes.
pub async fn enrolled(app: &TestApp, clock: &TestClock, email: &str) -> (String, String, Vec<String>) {
    let tokens = app.signup_and_login(email).await;
    let access = s(&tokens, "access_token");
    let (secret, codes) = enable_totp(app, clock, &access).await;
    (access, secret, codes)
}

/// Turns TOTP on for the holder of `access`; returns the secret and the recovery codes.
pub async fn enable_totp(app: &TestApp, clock: &TestClock, access: &str) -> (String, Vec<String>) {
    let access = access.to_owned();
    let r = app.post_authed("/v1/account/mfa/totp", &access, None).await;
    assert_eq!(r.status(), 201);
    let enrolment: Value = r.json().await.expect("json");
    let secret = s(&enrolment, "secret");
    let r = app
        .post_authed(
            "/v1/account/mfa/totp/confirm",
            &access,
            Some(&json!({ "code": code(&secret, clock) })),
        )
        .await;
    let codes: Vec<String> = json_ok(r).await["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("a code").to_owned())
        .collect();
    // The confirming code's step is spent: the next code is the next step's.
    clock.advance(Duration::from_secs(30));
    (secret, codes)
}

/// Logs in with the password; asserts the `mfa_required` answer and returns its challenge.
pub async fn challenge(app: &TestApp, email: &str) -> String {
    let body = json_ok(app.login(email).await).await;
    assert_eq!(body["mfa_required"], true, "{body}");
    s(&body, "challenge")
}

pub async fn verify(app: &TestApp, challenge: &str, method: &str, code: &str) -> reqwest::Response {
    app.post_json(
        "/v1/auth/mfa/verify",
        &json!({ "challenge": challenge, "method": method, "code": code }),
    )
    .await
}

#[tokio::test]
async fn totp_is_enrolled_confirmed_and_then_needed_at_login() {
    let clock = TestClock::new();
    let app = spawn_with_clock(Arc::clone(&clock), |_| {}).await;
    let email = "totp@example.com";
    let tokens = app.signup_and_login(email).await;
    let access = s(&tokens, "access_token");

    let none = json_ok(app.get_authed("/v1/account/mfa", &access).await).await;
    assert_eq!(
        none,
        json!({ "totp": null, "recovery_codes_left": 0, "passkeys": [] })
    );
    let r = app
        .post_authed(
            "/v1/account/mfa/totp/confirm",
            &access,
            Some(&json!({ "code": "123456" })),
        )
        .await;
    assert_problem(r, 409, "mfa_not_enabled").await;

    let r = app.post_authed("/v1/account/mfa/totp", &access, None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let enrolment: Value = r.json().await.expect("json");
    let secret = s(&enrolment, "secret");
    let uri = s(&enrolment, "otpauth_uri");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(s(&enrolment, "qr_svg").contains("<svg"), "an SVG document");
    // Not a factor until confirmed: the password alone still signs in.
    assert!(app.login_ok(email).await["access_token"].is_string());
    let pending = json_ok(app.get_authed("/v1/account/mfa", &access).await).await;
    assert_eq!(pending["totp"]["enabled"], false);

    let r = app
        .post_authed(
            "/v1/account/mfa/totp/confirm",
            &access,
            Some(&json!({ "code": "000000" })),
        )
        .await;
    assert_problem(r, 401, "invalid_mfa_code").await;
    let r = app
        .post_authed(
            "/v1/account/mfa/totp/confirm",
            &access,
            Some(&json!({ "code": code(&secret, &clock) })),
        )
        .await;
    let codes = json_ok(r).await["recovery_codes"].clone();
    assert_eq!(codes.as_array().expect("codes").len(), 10);
    let on = json_ok(app.get_authed("/v1/account/mfa", &access).await).await;
    assert_eq!(on["totp"]["enabled"], true);
    assert_eq!(on["recovery_codes_left"], 10);
    let r = app.post_authed("/v1/account/mfa/totp", &access, None).await;
    assert_problem(r, 409, "mfa_already_enabled").await;

    // The password alone is half a login now.
    let r = app.login(email).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("set-cookie").is_none(),
        "no cookie in body transport"
    );
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["mfa_required"], true);
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    let challenge = s(&body, "challenge");

    // The confirming code is spent: the same step again is a replay.
    let r = verify(&app, &challenge, "totp", &code(&secret, &clock)).await;
    assert_problem(r, 401, "mfa_code_replayed").await;
    let r = verify(&app, &challenge, "totp", "000000").await;
    assert_problem(r, 401, "invalid_mfa_code").await;
    clock.advance(Duration::from_secs(30));
    let now_code = code(&secret, &clock);
    let r = verify(&app, &challenge, "totp", &now_code).await;
    let tokens = json_ok(r).await;
    assert!(s(&tokens, "refresh_token").starts_with("tsr_"));
    assert_eq!(tokens["user"]["email"], email);
    assert_eq!(app.me(&s(&tokens, "access_token")).await.status(), 200);

    // Used: the challenge is gone, and the code is not accepted again with a new one.
    let r = verify(&app, &challenge, "totp", &now_code).await;
    assert_problem(r, 401, "mfa_challenge_invalid").await;
    let again = self::challenge(&app, email).await;
    let r = verify(&app, &again, "totp", &now_code).await;
    assert_problem(r, 401, "mfa_code_replayed").await;
    // A code one step old or ahead is fine (clock drift), once.
    clock.advance(Duration::from_secs(30));
    let next = code(&secret, &clock);
    clock.advance(Duration::from_secs(29));
    assert_eq!(verify(&app, &again, "totp", &next).await.status(), 200);

    let r = verify(&app, "nope", "totp", &next).await;
    assert_problem(r, 401, "mfa_challenge_invalid").await;
    let r = verify(&app, &again, "sms", "123456").await;
    assert_validation(r, &["method"]).await;
}

#[tokio::test]
async fn a_recovery_code_signs_in_once() {
    let clock = TestClock::new();
    let app = spawn_with_clock(Arc::clone(&clock), |_| {}).await;
    let email = "recovery@example.com";
    let (access, _, codes) = enrolled(&app, &clock, email).await;
    let first = codes[0].to_uppercase().replace('-', " ");
    let challenge = self::challenge(&app, email).await;
    assert_eq!(
        verify(&app, &challenge, "recovery_code", &first).await.status(),
        200
    );
    let challenge = self::challenge(&app, email).await;
    let r = verify(&app, &challenge, "recovery_code", &codes[0]).await;
    assert_problem(r, 401, "invalid_mfa_code").await;
    assert_eq!(
        json_ok(app.get_authed("/v1/account/mfa", &access).await).await["recovery_codes_left"],
        9
    );
    let used: Vec<_> = app
        .audit_events(email)
        .await
        .into_iter()
        .filter(|e| e.event == "recovery_code_used")
        .collect();
    assert_eq!(used.len(), 1);

    // A new set (with the password): the old set dies.
    let r = app
        .post_authed(
            "/v1/account/mfa/recovery-codes",
            &access,
            Some(&json!({ "password": "wrong password" })),
        )
        .await;
    assert_problem(r, 401, "invalid_credentials").await;
    let r = app
        .post_authed(
            "/v1/account/mfa/recovery-codes",
            &access,
            Some(&json!({ "password": PASSWORD })),
        )
        .await;
    let fresh = json_ok(r).await["recovery_codes"][0]
        .as_str()
        .expect("code")
        .to_owned();
    let r = verify(&app, &challenge, "recovery_code", &codes[1]).await;
    assert_problem(r, 401, "invalid_mfa_code").await;
    assert_eq!(
        verify(&app, &challenge, "recovery_code", &fresh).await.status(),
        200
    );
}

#[tokio::test]
async fn wrong_codes_count_toward_the_accounts_lock() {
    let clock = TestClock::new();
    let app = spawn_with_clock(Arc::clone(&clock), |c| {
        c.lockout_threshold = 3;
        c.lockout_window = Duration::from_secs(600);
        c.lockout_cooldown = Duration::from_secs(60);
    })
    .await;
    let email = "guess@example.com";
    let (_, secret, _) = enrolled(&app, &clock, email).await;
    let challenge = self::challenge(&app, email).await;
    for _ in 0..2 {
        assert_problem(
            verify(&app, &challenge, "totp", "111111").await,
            401,
            "invalid_mfa_code",
        )
        .await;
    }
    // A right password in between clears nothing.
    let challenge = self::challenge(&app, email).await;
    assert_problem(
        verify(&app, &challenge, "totp", "111111").await,
        401,
        "invalid_mfa_code",
    )
    .await;
    // Locked: even the right code (and the password) waits.
    let r = verify(&app, &challenge, "totp", &code(&secret, &clock)).await;
    assert_problem(r, 429, "rate_limited").await;
    assert_problem(app.login(email).await, 429, "rate_limited").await;
    assert!(app
        .audit_events(email)
        .await
        .iter()
        .any(|e| e.event == "account_locked"));
}

#[tokio::test]
async fn a_challenge_dies_after_five_wrong_codes_and_expires() {
    let clock = TestClock::new();
    let app = spawn_with_clock(Arc::clone(&clock), |c| c.lockout_threshold = 100).await;
    let email = "challenge@example.com";
    let (_, secret, _) = enrolled(&app, &clock, email).await;
    let challenge = self::challenge(&app, email).await;
    for _ in 0..5 {
        assert_problem(
            verify(&app, &challenge, "totp", "222222").await,
            401,
            "invalid_mfa_code",
        )
        .await;
    }
    let r = verify(&app, &challenge, "totp", &code(&secret, &clock)).await;
    assert_problem(r, 401, "mfa_challenge_invalid").await;

    let challenge = self::challenge(&app, email).await;
    clock.advance(Duration::from_secs(300));
    let r = verify(&app, &challenge, "totp", &code(&secret, &clock)).await;
    assert_problem(r, 401, "mfa_challenge_expired").await;
}

#[tokio::test]
async fn a_cookie_login_is_finished_only_in_its_own_browser() {
    let clock = TestClock::new();
    let app = spawn_with_clock(Arc::clone(&clock), |_| {}).await;
    let email = "browser@example.com";
    let (_, secret, _) = enrolled(&app, &clock, email).await;
    let r = app
        .post_json(
            "/v1/auth/login",
            &json!({ "email": email, "password": PASSWORD, "transport": "cookie" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect();
    assert_eq!(set.len(), 1, "only the challenge's cookie: {set:?}");
    for attribute in [
        "tessera_mfa=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/v1/auth/mfa",
        "Max-Age=300",
    ] {
        assert!(set[0].contains(attribute), "{attribute} in {}", set[0]);
    }
    let cookie = set[0].split(';').next().expect("name=value").to_owned();
    let challenge = s(&r.json::<Value>().await.expect("json"), "challenge");
    let body = json!({ "challenge": challenge, "method": "totp", "code": code(&secret, &clock) });

    // Another browser (no cookie, or another one) cannot finish it.
    let r = app.post_json("/v1/auth/mfa/verify", &body).await;
    assert_problem(r, 401, "mfa_challenge_other_browser").await;
    let r = app
        .client
        .post(app.url("/v1/auth/mfa/verify"))
        .header("cookie", "tessera_mfa=someone-elses")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_problem(r, 401, "mfa_challenge_other_browser").await;

    let r = app
        .client
        .post(app.url("/v1/auth/mfa/verify"))
        .header("cookie", &cookie)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get_all("set-cookie").iter().count() >= 3,
        "the session's cookies"
    );
    let tokens: Value = r.json().await.expect("json");
    assert!(tokens.get("refresh_token").is_none() && tokens["csrf_token"].is_string());
}

#[tokio::test]
async fn totp_is_turned_off_with_the_password_or_a_code() {
    let clock = TestClock::new();
    let app = spawn_with_clock(Arc::clone(&clock), |_| {}).await;
    let email = "off@example.com";
    let (access, secret, _) = enrolled(&app, &clock, email).await;
    let off = |body: Value| {
        let (app, access) = (&app, access.clone());
        async move {
            app.client
                .delete(app.url("/v1/account/mfa/totp"))
                .bearer_auth(access)
                .json(&body)
                .send()
                .await
                .expect("send")
        }
    };
    assert_validation(
        off(json!({ "password": PASSWORD, "code": "333333" })).await,
        &["password"],
    )
    .await;
    assert_problem(off(json!({ "code": "333333" })).await, 401, "invalid_mfa_code").await;
    assert_eq!(off(json!({ "code": code(&secret, &clock) })).await.status(), 204);
    assert_problem(off(json!({ "password": PASSWORD })).await, 409, "mfa_not_enabled").await;
    assert!(
        app.login_ok(email).await["access_token"].is_string(),
        "the password alone again"
    );
    let events: Vec<String> = app
        .audit_events(email)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(events.iter().any(|e| e == "mfa_enabled"), "{events:?}");
    assert!(events.iter().any(|e| e == "mfa_disabled"), "{events:?}");

    // On again, off with the password.
    let (access, _, _) = {
        let r = app.post_authed("/v1/account/mfa/totp", &access, None).await;
        assert_eq!(r.status(), 201);
        let secret = s(&r.json::<Value>().await.expect("json"), "secret");
        clock.advance(Duration::from_secs(30));
        let r = app
            .post_authed(
                "/v1/account/mfa/totp/confirm",
                &access,
                Some(&json!({ "code": code(&secret, &clock) })),
            )
            .await;
        assert_eq!(r.status(), 200);
        (access, secret, ())
    };
    let r = app
        .client
        .delete(app.url("/v1/account/mfa/totp"))
        .bearer_auth(&access)
        .json(&json!({ "password": PASSWORD }))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn tokens_say_how_and_when_the_holder_signed_in_also_after_a_refresh() {
    let clock = TestClock::new();
    let app = spawn_with_clock(Arc::clone(&clock), |_| {}).await;
    let email = "amr@example.com";
    let tokens = app.signup_and_login(email).await;
    let plain = claims(&s(&tokens, "access_token"));
    assert_eq!(plain["amr"], json!(["pwd"]));
    assert_eq!(plain["auth_time"], clock.now().seconds());

    let (secret, _) = enable_totp(&app, &clock, &s(&tokens, "access_token")).await;
    let challenge = self::challenge(&app, email).await;
    clock.advance(Duration::from_secs(7));
    let signed_in_at = clock.now().seconds();
    let tokens = json_ok(verify(&app, &challenge, "totp", &code(&secret, &clock)).await).await;
    let two_step = claims(&s(&tokens, "access_token"));
    assert_eq!(two_step["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(two_step["auth_time"], signed_in_at);

    // A refresh keeps both (the sign-in's time, not the refresh's).
    clock.advance(Duration::from_secs(60));
    let refreshed = app.refresh_ok(&s(&tokens, "refresh_token")).await;
    let later = claims(&s(&refreshed, "access_token"));
    assert_eq!(later["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(later["auth_time"], signed_in_at);
    assert!(later["iat"].as_i64() > two_step["iat"].as_i64());
}

#[tokio::test]
async fn sensitive_changes_need_a_recent_sign_in_which_reauthenticate_renews() {
    let clock = TestClock::new();
    let app = spawn_with_clock(Arc::clone(&clock), |c| {
        c.reauthentication_max_age = Duration::from_secs(600);
        c.access_ttl = Duration::from_secs(3600);
    })
    .await;
    let email = "stepup@example.com";
    let (access, secret, _) = enrolled(&app, &clock, email).await;
    let first = claims(&access)["auth_time"].as_i64().expect("auth_time");

    // Fresh enough: a new set of recovery codes needs no proof in the request.
    let r = app
        .post_authed("/v1/account/mfa/recovery-codes", &access, Some(&json!({})))
        .await;
    assert_eq!(r.status(), 200);

    clock.advance(Duration::from_secs(601));
    let r = app
        .post_authed("/v1/account/mfa/recovery-codes", &access, Some(&json!({})))
        .await;
    assert_problem(r, 403, "reauthentication_required").await;
    let r = app
        .client
        .delete(app.url("/v1/account/mfa/totp"))
        .bearer_auth(&access)
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_problem(r, 403, "reauthentication_required").await;
    let r = app
        .post_authed(
            "/v1/auth/password",
            &access,
            Some(&json!({ "current_password": PASSWORD, "new_password": "another good password" })),
        )
        .await;
    assert_problem(r, 403, "reauthentication_required").await;
    let r = app
        .post_authed(
            "/v1/auth/email/change",
            &access,
            Some(&json!({ "new_email": "new@example.com", "current_password": PASSWORD })),
        )
        .await;
    assert_problem(r, 403, "reauthentication_required").await;

    // Reauthenticate: a wrong password is refused, a code renews auth_time and amr.
    let r = app
        .post_authed(
            "/v1/auth/reauthenticate",
            &access,
            Some(&json!({ "password": "nope nope" })),
        )
        .await;
    assert_problem(r, 401, "invalid_credentials").await;
    assert_validation(
        app.post_authed("/v1/auth/reauthenticate", &access, Some(&json!({})))
            .await,
        &["password"],
    )
    .await;
    let r = app
        .post_authed(
            "/v1/auth/reauthenticate",
            &access,
            Some(&json!({ "method": "totp", "code": code(&secret, &clock) })),
        )
        .await;
    let fresh = json_ok(r).await;
    let renewed = claims(&s(&fresh, "access_token"));
    assert_eq!(renewed["auth_time"], clock.now().seconds());
    assert!(renewed["auth_time"].as_i64() > Some(first));
    assert_eq!(renewed["amr"], json!(["pwd", "otp", "mfa"]));
    let access = s(&fresh, "access_token");
    let r = app
        .post_authed(
            "/v1/auth/password",
            &access,
            Some(&json!({ "current_password": PASSWORD, "new_password": "another good password" })),
        )
        .await;
    let changed = json_ok(r).await;
    // And a refresh keeps the renewed time.
    let refreshed = app.refresh_ok(&s(&changed, "refresh_token")).await;
    assert_eq!(
        claims(&s(&refreshed, "access_token"))["auth_time"],
        clock.now().seconds()
    );
}

#[tokio::test]
async fn operators_see_the_factors_and_reset_them() {
    let clock = TestClock::new();
    let app = spawn_with_clock(Arc::clone(&clock), |c| {
        c.admin_credentials = crate::admin_api::admin_credentials();
    })
    .await;
    let email = "lost-phone@example.com";
    let (access, _, _) = enrolled(&app, &clock, email).await;
    let id = s(&json_ok(app.me(&access).await).await["user"], "id");

    let shown = crate::admin_cli::tessera(&app, &["users", "show", email], None).await;
    assert!(
        shown.out().contains("second factors  totp, 10 recovery codes"),
        "{}",
        shown.stdout
    );
    let json = crate::admin_cli::tessera(&app, &["users", "show", email, "--json"], None)
        .await
        .json_lines();
    assert_eq!(json[0]["factors"][0]["type"], "totp");
    let detail = json_ok(
        app.get_authed(&format!("/v1/admin/users/{id}"), crate::admin_api::WRITE_SECRET)
            .await,
    )
    .await;
    assert_eq!(detail["factors"][0]["type"], "totp", "{detail}");
    assert_eq!(detail["factors"][0]["enabled"], true);
    assert_eq!(
        detail["factors"][1],
        json!({ "type": "recovery_codes", "left": 10 })
    );

    let reset = crate::admin_cli::tessera(&app, &["users", "mfa", "reset", email], None).await;
    assert_eq!(
        reset.out().trim(),
        format!("removed the second factors of {email}")
    );
    let again = crate::admin_cli::tessera(&app, &["users", "mfa", "reset", email], None).await;
    assert_eq!(again.out().trim(), format!("{email} had no second factor"));
    assert!(
        app.login_ok(email).await["access_token"].is_string(),
        "the password alone"
    );
    let shown = crate::admin_cli::tessera(&app, &["users", "show", email], None).await;
    assert!(shown.out().contains("second factors  -"), "{}", shown.stdout);
    assert!(app
        .audit_events(email)
        .await
        .iter()
        .any(|e| e.event == "mfa_disabled"
            && e.detail.as_deref().is_some_and(|d| d.contains("\"reset\":true"))));
}
