//! The flows by email over a real SMTP server (aiosmtpd, `tests/support/smtp.rs`), on the
//! backend `TESSERA_TEST_BACKEND` names: verification, password reset, email change, sign-in
//! links, new-device notices; single use, expiry, supersession, no account enumeration.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tessera::config::{Config, SmtpUrl};

use crate::helpers::*;
use crate::jose::Jwt;
use crate::smtp_support::{Received, SinkOptions, SmtpSink};

const WAIT: Duration = Duration::from_secs(15);

fn with_sink(c: &mut Config, sink: &SmtpSink) {
    let url = format!("smtp://127.0.0.1:{}?tls=none", sink.port);
    c.smtp_url = Some(SmtpUrl::parse(&url).expect("smtp url"));
    c.mail_from = Some("Acme <no-reply@acme.example>".into());
    c.public_url = Some("https://auth.acme.example".into());
}

/// A sink and a server mailing to it; `None` when aiosmtpd is not available (said so).
async fn app_with_mail(test: &str, tweak: impl FnOnce(&mut Config)) -> Option<(SmtpSink, TestApp)> {
    let sink = SmtpSink::start(test, &SinkOptions::default())?;
    let app = spawn_app_with(|c| {
        with_sink(c, &sink);
        tweak(c);
    })
    .await;
    Some((sink, app))
}

/// The mails to `to` whose text has `marker`.
fn mails_to(sink: &SmtpSink, to: &str, marker: &str) -> Vec<Received> {
    sink.mails()
        .into_iter()
        .filter(|m| m.rcpt_tos().iter().any(|r| r == to) && m.text().contains(marker))
        .collect()
}

/// Waits for the `n`th mail to `to` whose text has `marker`; returns it.
async fn wait_mail(sink: &SmtpSink, to: &str, marker: &str, n: usize) -> Received {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = mails_to(sink, to, marker);
        if found.len() >= n {
            return found[n - 1].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no mail #{n} to {to} with {marker:?}; got {:?}",
            sink.mails()
                .iter()
                .map(|m| (m.rcpt_tos(), m.header("Subject")))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The token after `marker` (`/reset#token=`, ...) in a mail's text.
fn token_in(mail: &Received, marker: &str) -> String {
    let text = mail.text();
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in {text}"))
        + marker.len();
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn token_of(sink: &SmtpSink, to: &str, marker: &str, n: usize) -> String {
    token_in(&wait_mail(sink, to, marker, n).await, marker)
}

const VERIFY: &str = "/verify#token=";
const RESET: &str = "/reset#token=";
const CHANGE: &str = "/verify#change=";
const LINK: &str = "/login#link=";

async fn forgot(app: &TestApp, email: &str) -> reqwest::Response {
    app.post_json("/v1/auth/password/forgot", &json!({ "email": email }))
        .await
}

async fn reset_with(app: &TestApp, token: String) -> reqwest::Response {
    app.post_json(
        "/v1/auth/password/reset",
        &json!({ "token": token, "new_password": "a brand new password" }),
    )
    .await
}

async fn change_with(app: &TestApp, access: &str, new_email: &str, password: &str) -> reqwest::Response {
    app.post_authed(
        "/v1/auth/email/change",
        access,
        Some(&json!({ "new_email": new_email, "current_password": password })),
    )
    .await
}

async fn link_with(app: &TestApp, email: &str) -> reqwest::Response {
    app.post_json("/v1/auth/email-link", &json!({ "email": email }))
        .await
}

async fn body_bytes(r: reqwest::Response) -> (u16, Vec<u8>) {
    let status = r.status().as_u16();
    (status, r.bytes().await.expect("body").to_vec())
}

#[tokio::test]
async fn the_verification_mail_verifies_once_and_email_verified_reaches_the_token() {
    let Some((sink, app)) = app_with_mail("email_flows::verification", |_| {}).await else {
        return;
    };
    let tokens = app.signup_and_login("vera@example.com").await;
    let access = s(&tokens, "access_token");
    assert_eq!(Jwt::parse(&access).claims["email_verified"], false);
    let me = json_ok(app.me(&access).await).await;
    assert_eq!(me["user"]["email_verified"], false, "{me}");

    let token = token_of(&sink, "vera@example.com", VERIFY, 1).await;
    assert_eq!(token.len(), 43, "256 bits, base64url");
    let r = app
        .post_json("/v1/auth/email/verify", &json!({ "token": token }))
        .await;
    let body = json_ok(r).await;
    assert_eq!(body["user"]["email"], "vera@example.com");
    assert_eq!(body["user"]["email_verified"], true);
    // Single use.
    let again = app
        .post_json("/v1/auth/email/verify", &json!({ "token": token }))
        .await;
    assert_problem(again, 400, "invalid_email_token").await;
    let wrong = app
        .post_json("/v1/auth/email/verify", &json!({ "token": "x".repeat(43) }))
        .await;
    assert_problem(wrong, 400, "invalid_email_token").await;

    // The user view says so at once; the next access token carries it.
    let me = json_ok(app.me(&access).await).await;
    assert_eq!(me["user"]["email_verified"], true, "{me}");
    let refreshed = app.refresh_ok(&s(&tokens, "refresh_token")).await;
    assert_eq!(
        Jwt::parse(&s(&refreshed, "access_token")).claims["email_verified"],
        true
    );
    let login = app.login_ok("vera@example.com").await;
    assert_eq!(
        Jwt::parse(&s(&login, "access_token")).claims["email_verified"],
        true
    );
}

#[tokio::test]
async fn resending_supersedes_the_older_link_and_is_rate_limited() {
    let Some((sink, app)) = app_with_mail("email_flows::resend", |_| {}).await else {
        return;
    };
    let tokens = app.signup_and_login("rita@example.com").await;
    let access = s(&tokens, "access_token");
    let first = token_of(&sink, "rita@example.com", VERIFY, 1).await;
    let r = app
        .post_authed("/v1/auth/email/verify/resend", &access, None)
        .await;
    assert_eq!(r.status(), 202);
    let second = token_of(&sink, "rita@example.com", VERIFY, 2).await;
    assert_ne!(first, second);
    let old = app
        .post_json("/v1/auth/email/verify", &json!({ "token": first }))
        .await;
    assert_problem(old, 400, "invalid_email_token").await;
    // Three a minute per account.
    for _ in 0..2 {
        let r = app
            .post_authed("/v1/auth/email/verify/resend", &access, None)
            .await;
        assert_eq!(r.status(), 202);
    }
    let r = app
        .post_authed("/v1/auth/email/verify/resend", &access, None)
        .await;
    assert!(r.headers().contains_key("retry-after"));
    assert_problem(r, 429, "rate_limited").await;
    // The newest link works, the one before it not. (The last two resends' mails may arrive
    // in either order: they are delivered concurrently.)
    token_of(&sink, "rita@example.com", VERIFY, 4).await;
    let mut verified = 0;
    for n in [3, 4] {
        let token = token_of(&sink, "rita@example.com", VERIFY, n).await;
        let r = app
            .post_json("/v1/auth/email/verify", &json!({ "token": token }))
            .await;
        if r.status() == 200 {
            verified += 1;
        } else {
            assert_problem(r, 400, "invalid_email_token").await;
        }
    }
    assert_eq!(verified, 1, "exactly the newest link verifies");
    // Without a session: refused.
    let r = app.post_json("/v1/auth/email/verify/resend", &json!({})).await;
    assert_problem(r, 401, "invalid_token").await;
}

#[tokio::test]
async fn with_required_verification_login_waits_and_registration_reveals_nothing() {
    let Some((sink, app)) = app_with_mail("email_flows::required", |c| c.require_verified_email = true).await
    else {
        return;
    };
    let first = body_bytes(app.register("nora@example.com").await).await;
    assert_eq!(first.0, 202, "{}", String::from_utf8_lossy(&first.1));
    // The same address again (it has an account now): byte for byte the same answer.
    let second = body_bytes(app.register("nora@example.com").await).await;
    assert_eq!(first, second);
    // The owner is told someone tried.
    wait_mail(&sink, "nora@example.com", "which already has one", 1).await;

    // A right password, an unverified address: a clear refusal (only to the password's holder).
    let r = app.login("nora@example.com").await;
    assert_problem(r, 403, "email_not_verified").await;
    let r = app.login_with("nora@example.com", "wrong password!").await;
    assert_problem(r, 401, "invalid_credentials").await;

    let token = token_of(&sink, "nora@example.com", VERIFY, 1).await;
    let r = app
        .post_json("/v1/auth/email/verify", &json!({ "token": token }))
        .await;
    assert_eq!(r.status(), 200);
    let tokens = app.login_ok("nora@example.com").await;
    assert_eq!(
        Jwt::parse(&s(&tokens, "access_token")).claims["email_verified"],
        true
    );
}

#[tokio::test]
async fn a_reset_works_once_revokes_every_session_and_answers_alike_for_unknown_addresses() {
    let Some((sink, app)) = app_with_mail("email_flows::reset", |_| {}).await else {
        return;
    };
    let email = "rose@example.com";
    let one = app.signup_and_login(email).await;
    let two = app.login_ok(email).await;

    let known = body_bytes(
        app.post_json("/v1/auth/password/forgot", &json!({ "email": email }))
            .await,
    )
    .await;
    let unknown = body_bytes(
        app.post_json(
            "/v1/auth/password/forgot",
            &json!({ "email": "nobody@example.com" }),
        )
        .await,
    )
    .await;
    assert_eq!(known.0, 202);
    assert_eq!(known, unknown, "byte-identical answers");
    let token = token_of(&sink, email, RESET, 1).await;

    // Validation first, then the token.
    let r = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({ "token": token, "new_password": "short" }),
        )
        .await;
    assert_validation(r, &["new_password"]).await;
    let r = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({ "token": "y".repeat(43), "new_password": "a brand new password" }),
        )
        .await;
    assert_problem(r, 400, "invalid_email_token").await;

    let r = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({ "token": token, "new_password": "a brand new password" }),
        )
        .await;
    assert_eq!(r.status(), 204);
    let again = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({ "token": token, "new_password": "another new password" }),
        )
        .await;
    assert_problem(again, 400, "invalid_email_token").await;

    // Every old session and refresh token is out; the old password too.
    for tokens in [&one, &two] {
        assert_problem(app.me(&s(tokens, "access_token")).await, 401, "session_revoked").await;
        let r = app.refresh(&s(tokens, "refresh_token")).await;
        assert_eq!(r.status(), 401);
    }
    assert_problem(app.login(email).await, 401, "invalid_credentials").await;
    let r = app.login_with(email, "a brand new password").await;
    assert_eq!(r.status(), 200);
    // The holder is told; nothing went to the unknown address.
    wait_mail(&sink, email, "was just changed", 1).await;
    assert!(mails_to(&sink, "nobody@example.com", "").is_empty());
}

#[tokio::test]
async fn a_reset_token_expires_and_is_superseded_by_a_newer_request_or_a_password_change() {
    let Some((sink, app)) = app_with_mail("email_flows::reset_void", |c| {
        c.password_reset_ttl = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let email = "sam@example.com";
    let tokens = app.signup_and_login(email).await;
    let reset = |token: String| reset_with(&app, token);
    // Expired.
    assert_eq!(forgot(&app, email).await.status(), 202);
    let expired = token_of(&sink, email, RESET, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_problem(reset(expired).await, 400, "email_token_expired").await;
    // Superseded by a newer request (both still in time).
    assert_eq!(forgot(&app, email).await.status(), 202);
    let older = token_of(&sink, email, RESET, 2).await;
    assert_eq!(forgot(&app, email).await.status(), 202);
    let newer = token_of(&sink, email, RESET, 3).await;
    assert_problem(reset(older).await, 400, "invalid_email_token").await;
    // Voided by a password change.
    let r = app
        .post_authed(
            "/v1/auth/password",
            &s(&tokens, "access_token"),
            Some(&json!({ "current_password": PASSWORD, "new_password": "changed by the user" })),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_problem(reset(newer).await, 400, "invalid_email_token").await;
    // A password change is mailed to the holder too.
    wait_mail(&sink, email, "was just changed", 1).await;
    // Three a minute per address: the fourth is refused (an unknown address alike).
    let r = forgot(&app, email).await;
    assert_problem(r, 429, "rate_limited").await;
}

#[tokio::test]
async fn logins_racing_a_reset_with_the_old_password_leave_no_session() {
    let Some((sink, app)) = app_with_mail("email_flows::reset_race", |_| {}).await else {
        return;
    };
    let email = "race@example.com";
    assert_eq!(app.register(email).await.status(), 201);
    assert_eq!(
        app.post_json("/v1/auth/password/forgot", &json!({ "email": email }))
            .await
            .status(),
        202
    );
    let token = token_of(&sink, email, RESET, 1).await;
    let logins: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/v1/auth/login"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({ "email": email, "password": PASSWORD }))
                    .send()
                    .await
                    .expect("login")
            })
        })
        .collect();
    let reset = app
        .post_json(
            "/v1/auth/password/reset",
            &json!({ "token": token, "new_password": "a brand new password" }),
        )
        .await;
    let mut results = Vec::new();
    for login in logins {
        results.push(login.await.expect("login task"));
    }
    assert_eq!(reset.status(), 204);
    for r in results {
        if r.status() == 200 {
            let tokens: Value = r.json().await.expect("json");
            let refreshed = app.refresh(&s(&tokens, "refresh_token")).await;
            assert_eq!(
                refreshed.status(),
                401,
                "a session of the old password outlived the reset"
            );
        }
    }
}

#[tokio::test]
async fn an_email_change_applies_only_when_the_new_address_confirms_it() {
    let Some((sink, app)) = app_with_mail("email_flows::change", |_| {}).await else {
        return;
    };
    let tokens = app.signup_and_login("old@example.com").await;
    assert_eq!(app.register("taken@example.com").await.status(), 201);
    let access = s(&tokens, "access_token");
    let change =
        |new_email: &'static str, password: &'static str| change_with(&app, &access, new_email, password);
    assert_problem(
        change("new@example.com", "wrong password!").await,
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(change("new@example.com", PASSWORD).await.status(), 202);
    // The old address is told; the new one gets the link; nothing changed yet.
    wait_mail(&sink, "old@example.com", "new@example.com", 1).await;
    let token = token_of(&sink, "new@example.com", CHANGE, 1).await;
    assert_eq!(app.login("old@example.com").await.status(), 200);
    assert_eq!(app.login("new@example.com").await.status(), 401);

    // An address that has an account: the same answer, and no link goes there.
    assert_eq!(change("taken@example.com", PASSWORD).await.status(), 202);
    wait_mail(&sink, "old@example.com", "taken@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(mails_to(&sink, "taken@example.com", CHANGE).is_empty());

    let r = app
        .post_json("/v1/auth/email/change/confirm", &json!({ "token": token }))
        .await;
    let body = json_ok(r).await;
    assert_eq!(body["user"]["email"], "new@example.com");
    assert_eq!(body["user"]["email_verified"], true);
    let again = app
        .post_json("/v1/auth/email/change/confirm", &json!({ "token": token }))
        .await;
    assert_problem(again, 400, "invalid_email_token").await;
    assert_eq!(app.login("new@example.com").await.status(), 200);
    assert_eq!(app.login("old@example.com").await.status(), 401);
    let me = json_ok(app.me(&access).await).await;
    assert_eq!(me["user"]["email"], "new@example.com");
}

#[tokio::test]
async fn an_address_taken_before_the_confirmation_fails_cleanly() {
    let Some((sink, app)) = app_with_mail("email_flows::change_taken", |_| {}).await else {
        return;
    };
    let tokens = app.signup_and_login("first@example.com").await;
    let r = app
        .post_authed(
            "/v1/auth/email/change",
            &s(&tokens, "access_token"),
            Some(&json!({ "new_email": "later@example.com", "current_password": PASSWORD })),
        )
        .await;
    assert_eq!(r.status(), 202);
    let token = token_of(&sink, "later@example.com", CHANGE, 1).await;
    assert_eq!(app.register("later@example.com").await.status(), 201);
    let r = app
        .post_json("/v1/auth/email/change/confirm", &json!({ "token": token }))
        .await;
    assert_problem(r, 409, "email_taken").await;
    assert_eq!(app.login("first@example.com").await.status(), 200);
}

#[tokio::test]
async fn sign_in_links_are_off_by_default() {
    let app = spawn_app().await;
    let r = app
        .post_json("/v1/auth/email-link", &json!({ "email": "a@example.com" }))
        .await;
    assert_problem(r, 404, "not_found").await;
    let r = app
        .post_json("/v1/auth/email-link/verify", &json!({ "token": "t".repeat(43) }))
        .await;
    assert_problem(r, 404, "not_found").await;
}

#[tokio::test]
async fn a_sign_in_link_signs_in_once_and_expires() {
    let Some((sink, app)) = app_with_mail("email_flows::link", |c| {
        c.email_link_signin = true;
        c.email_link_ttl = Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let email = "lina@example.com";
    assert_eq!(app.register(email).await.status(), 201);
    let link = |email: &'static str| link_with(&app, email);
    let known = body_bytes(link(email).await).await;
    let unknown = body_bytes(link("ghost@example.com").await).await;
    assert_eq!(known.0, 202);
    assert_eq!(known, unknown);
    let token = token_of(&sink, email, LINK, 1).await;
    let r = app
        .post_json("/v1/auth/email-link/verify", &json!({ "token": token }))
        .await;
    let tokens = json_ok(r).await;
    assert!(s(&tokens, "refresh_token").starts_with("tsr_"));
    assert_eq!(
        tokens["user"]["email_verified"], true,
        "the link proved the address"
    );
    assert_eq!(
        json_ok(app.me(&s(&tokens, "access_token")).await).await["user"]["email"],
        email
    );
    let again = app
        .post_json("/v1/auth/email-link/verify", &json!({ "token": token }))
        .await;
    assert_problem(again, 400, "invalid_email_token").await;

    // Cookie transport, like login.
    assert_eq!(link(email).await.status(), 202);
    let token = token_of(&sink, email, LINK, 2).await;
    let r = app
        .post_json(
            "/v1/auth/email-link/verify",
            &json!({ "token": token, "transport": "cookie" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get_all("set-cookie").iter().count() >= 3);
    let body: Value = r.json().await.expect("json");
    assert!(body.get("refresh_token").is_none() && body["csrf_token"].is_string());

    // Expired.
    assert_eq!(link(email).await.status(), 202);
    let token = token_of(&sink, email, LINK, 3).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = app
        .post_json("/v1/auth/email-link/verify", &json!({ "token": token }))
        .await;
    assert_problem(r, 400, "email_token_expired").await;
}

#[tokio::test]
async fn a_login_from_a_new_device_mails_the_holder_and_a_known_one_does_not() {
    let Some((sink, app)) = app_with_mail("email_flows::new_device", |_| {}).await else {
        return;
    };
    let email = "dev@example.com";
    assert_eq!(app.register(email).await.status(), 201);
    let login_as = |agent: &'static str| {
        app.client
            .post(app.url("/v1/auth/login"))
            .header("user-agent", agent)
            .json(&json!({ "email": email, "password": PASSWORD }))
            .send()
    };
    assert_eq!(login_as("Firefox/120").await.unwrap().status(), 200);
    assert_eq!(login_as("Firefox/120").await.unwrap().status(), 200);
    // A browser update is no new device.
    assert_eq!(login_as("Firefox/121.0.1").await.unwrap().status(), 200);
    assert_eq!(login_as("Chromium/131").await.unwrap().status(), 200);
    let notice = wait_mail(&sink, email, "Chromium/131", 1).await;
    assert!(notice.text().contains("127.0.0.1"), "{}", notice.text());
    // Only that one: neither the first login nor the known device mailed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mails_to(&sink, email, "Firefox/").is_empty());
}

#[tokio::test]
async fn a_link_asked_for_in_a_browser_signs_in_in_that_browser_only() {
    let Some((sink, app)) = app_with_mail("email_flows::link_browser", |c| c.email_link_signin = true).await
    else {
        return;
    };
    let email = "bea@example.com";
    assert_eq!(app.register(email).await.status(), 201);
    // Asked for from a browser (cookie transport): it keeps a cookie for the link endpoints.
    let r = app
        .post_json(
            "/v1/auth/email-link",
            &json!({ "email": email, "transport": "cookie" }),
        )
        .await;
    assert_eq!(r.status(), 202);
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .find(|c| c.starts_with("tessera_link="))
        .expect("the link cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/v1/auth/email-link"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    let cookie = set.split(';').next().expect("name=value").to_owned();
    // An unknown address gets a cookie too: the answers do not differ.
    let r = app
        .post_json(
            "/v1/auth/email-link",
            &json!({ "email": "ghost@example.com", "transport": "cookie" }),
        )
        .await;
    assert!(r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap_or_default().starts_with("tessera_link=")));
    let token = token_of(&sink, email, LINK, 1).await;

    // Opened elsewhere (no cookie, or another browser's): refused, and the link is not spent.
    let verify = |cookie: Option<String>| {
        let mut req = app
            .client
            .post(app.url("/v1/auth/email-link/verify"))
            .json(&json!({ "token": token, "transport": "cookie" }));
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.send()
    };
    let r = verify(None).await.expect("request");
    assert_problem(r, 400, "email_link_other_browser").await;
    let r = verify(Some("tessera_link=someone-elses".into()))
        .await
        .expect("request");
    assert_problem(r, 400, "email_link_other_browser").await;
    // In the browser that asked: signed in.
    let r = verify(Some(cookie)).await.expect("request");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["user"]["email"], email);
}

#[tokio::test]
async fn an_account_made_without_a_password_is_invited_to_choose_one() {
    let Some((sink, app)) = app_with_mail("email_flows::invite", |c| {
        c.admin_credentials = crate::admin_api::admin_credentials();
    })
    .await
    else {
        return;
    };
    let r = app
        .client
        .post(app.url("/v1/admin/users"))
        .bearer_auth(crate::admin_api::WRITE_SECRET)
        .json(&json!({ "email": "newbie@example.com", "roles": ["support"] }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 201);
    let mail = wait_mail(&sink, "newbie@example.com", RESET, 1).await;
    assert!(
        mail.header("Subject").contains("invited"),
        "{}",
        mail.header("Subject")
    );
    assert!(mail.text().contains("7 days"), "{}", mail.text());
    // Until a password is chosen nobody signs in (there is none to guess).
    assert_problem(
        app.login_with("newbie@example.com", "a brand new password").await,
        401,
        "invalid_credentials",
    )
    .await;
    let token = token_in(&mail, RESET);
    assert_eq!(reset_with(&app, token.clone()).await.status(), 204);
    let t = json_ok(app.login_with("newbie@example.com", "a brand new password").await).await;
    assert_eq!(
        Jwt::parse(&s(&t, "access_token")).claims["roles"],
        json!(["support"])
    );
    // The link works once.
    assert_problem(reset_with(&app, token).await, 400, "invalid_email_token").await;
}

/// A sign-in link stands for the password, never for the second factor: an account with one
/// gets the `mfa_required` challenge from the link, and tokens only after a code.
#[tokio::test]
async fn a_sign_in_link_asks_for_the_second_factor_too() {
    let Some((sink, app)) = app_with_mail("email_flows::link_mfa", |c| c.email_link_signin = true).await
    else {
        return;
    };
    let email = "twostep@example.com";
    let access = s(&app.signup_and_login(email).await, "access_token");
    let r = app.post_authed("/v1/account/mfa/totp", &access, None).await;
    assert_eq!(r.status(), 201);
    let secret = s(&r.json::<Value>().await.expect("json"), "secret");
    let now = tessera::domain::Clock::now(&tessera::domain::SystemClock);
    let r = app
        .post_authed(
            "/v1/account/mfa/totp/confirm",
            &access,
            Some(&json!({ "code": crate::mfa::code_at(&secret, now) })),
        )
        .await;
    let codes = json_ok(r).await["recovery_codes"].clone();

    assert_eq!(link_with(&app, email).await.status(), 202);
    let token = token_of(&sink, email, LINK, 1).await;
    let r = app
        .post_json("/v1/auth/email-link/verify", &json!({ "token": token }))
        .await;
    let body = json_ok(r).await;
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    let r = crate::mfa::verify(
        &app,
        &s(&body, "challenge"),
        "recovery_code",
        codes[0].as_str().expect("a code"),
    )
    .await;
    let tokens = json_ok(r).await;
    assert_eq!(
        crate::mfa::claims(&s(&tokens, "access_token"))["sub"],
        tokens["user"]["id"]
    );
}
