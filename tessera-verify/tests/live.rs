//! The crate against the real Tessera: tokens it issues verify, for every signing algorithm,
//! and what it would refuse is refused.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use support::{kid, Tessera, AUDIENCE, ISSUER};
use tessera_verify::{Error, Verifier};

fn verifier(issuer: &str, audience: &str, jwks_url: &str) -> Verifier {
    Verifier::builder(issuer, audience)
        .jwks_url(jwks_url)
        .build()
        .expect("verifier")
}

/// The token with its claims re-encoded to grant `admin`, the signature left as it was.
fn with_forged_roles(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["roles"] = serde_json::json!(["admin"]);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{claims}.{}", parts[0], parts[2])
}

#[tokio::test]
async fn every_signing_algorithm_verifies_and_wrong_tokens_are_refused() {
    for alg in ["EdDSA", "Ed25519", "ES256", "RS256"] {
        let tessera = Tessera::start(&[("TESSERA_SIGNING_ALG", alg)]).await;
        let grant = tessera.login("ada@example.com").await;
        let token = grant["access_token"].as_str().expect("access_token");

        let good = verifier(ISSUER, AUDIENCE, &tessera.jwks_url());
        let claims = good.verify(token).await.unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims.user_id, grant["user"]["id"].as_str().unwrap(), "{alg}");
        assert_eq!(claims.session_id, grant["session_id"].as_str().unwrap(), "{alg}");
        assert!(claims.roles.is_empty(), "{alg}");
        assert!(claims.exp > claims.iat, "{alg}");

        let wrong_audience = verifier(ISSUER, "billing-api", &tessera.jwks_url());
        assert_eq!(wrong_audience.verify(token).await, Err(Error::Invalid), "{alg}");
        let wrong_issuer = verifier("https://other.test", AUDIENCE, &tessera.jwks_url());
        assert_eq!(wrong_issuer.verify(token).await, Err(Error::Invalid), "{alg}");
        assert_eq!(
            good.verify(&with_forged_roles(token)).await,
            Err(Error::Invalid),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_as_expired() {
    let tessera = Tessera::start(&[("TESSERA_ACCESS_TTL", "1")]).await;
    let grant = tessera.login("grace@example.com").await;
    let token = grant["access_token"].as_str().expect("access_token");
    let v = verifier(ISSUER, AUDIENCE, &tessera.jwks_url());
    // `exp` is in whole seconds: two seconds are past it whatever the sub-second issue time.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(v.verify(token).await, Err(Error::Expired));
}

#[tokio::test]
async fn a_key_rotated_in_is_picked_up_by_refetch_without_a_restart() {
    let tessera = Tessera::start(&[("TESSERA_SIGNING_ALG", "EdDSA")]).await;
    let old = tessera.login("rotation@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let v = Verifier::builder(ISSUER, AUDIENCE)
        .jwks_url(tessera.jwks_url())
        .refetch_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    v.verify(&old).await.expect("token of the first key");

    // Changing the algorithm is a rotation too; ES256 makes the new key unmistakable.
    tessera
        .cli(&[("TESSERA_SIGNING_ALG", "ES256")], &["rotate-key"])
        .await;
    let client = reqwest::Client::new();
    let unknown_kid = format!(
        "{}.e30.AAAA",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"at+jwt","kid":"not-yet-known"}"#)
    );
    // The server reloads its keys every minute, or at once (at most once a second) when it
    // sees a kid it does not know: show it one, until it signs with the new key.
    let mut new = String::new();
    for _ in 0..20 {
        client
            .get(format!("{}/v1/auth/me", tessera.base))
            .bearer_auth(&unknown_kid)
            .send()
            .await
            .expect("me");
        new = tessera.login("rotation@example.com").await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        if kid(&new) != kid(&old) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_ne!(kid(&new), kid(&old), "the server never signed with the new key");
    assert_eq!(support::alg(&new), "ES256");
    // Past the refetch interval since the first fetch, so the unknown kid may refetch.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let claims = v.verify(&new).await.expect("token of the rotated-in key");
    assert!(claims.roles.is_empty());
    v.verify(&old)
        .await
        .expect("the retired key keeps verifying its tokens");
}

#[tokio::test]
async fn keys_are_found_through_discovery_and_a_wrong_issuer_metadata_is_refused() {
    // Discovery needs the issuer to be the server's own URL, so the port is chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let tessera = Tessera::start(&[
        ("TESSERA_ISSUER", issuer.as_str()),
        ("TESSERA_LISTEN", listen.as_str()),
        ("TESSERA_SIGNING_ALG", "ES256"),
    ])
    .await;
    let token = tessera.login("disco@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let discovered = Verifier::builder(issuer.as_str(), AUDIENCE).build().unwrap();
    discovered.verify(&token).await.expect("keys via discovery");

    // The same server, but configured with an issuer its metadata does not state
    // (RFC 8414 §3.3): its keys are not used.
    let mismatched = Verifier::builder(format!("{issuer}/"), AUDIENCE).build().unwrap();
    assert!(matches!(
        mismatched.verify(&token).await,
        Err(Error::KeysUnavailable(_))
    ));
}

#[tokio::test]
async fn unreachable_keys_are_unavailable_not_invalid() {
    let tessera = Tessera::start(&[]).await;
    let token = tessera.login("offline@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // A port nothing listens on (bound, read, released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let v = verifier(
        ISSUER,
        AUDIENCE,
        &format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
    );
    assert!(matches!(v.verify(&token).await, Err(Error::KeysUnavailable(_))));
}

const FEED_CREDENTIAL: &str = "orders-api-feed-credential-0123456789abcdef";

async fn logout(tessera: &Tessera, access_token: &str) {
    let status = reqwest::Client::new()
        .post(format!("{}/v1/auth/logout", tessera.base))
        .bearer_auth(access_token)
        .send()
        .await
        .expect("logout")
        .status();
    assert_eq!(status, 204);
}

/// Polls `verify` until it stops accepting the token; returns how long that took.
async fn until_refused(verifier: &Verifier, token: &str) -> (Error, Duration) {
    let started = std::time::Instant::now();
    loop {
        match verifier.verify(token).await {
            Ok(_) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Ok(_) => panic!("still accepted 5 s after the revocation"),
            Err(e) => return (e, started.elapsed()),
        }
    }
}

#[tokio::test]
async fn following_the_revocation_feed_refuses_a_revoked_session_within_a_second() {
    let tessera = Tessera::start(&[("TESSERA_REVOCATION_FEED_CREDENTIALS", FEED_CREDENTIAL)]).await;
    let revoked_before_start = tessera.login("early@example.com").await;
    let early_token = revoked_before_start["access_token"].as_str().unwrap().to_string();
    logout(&tessera, &early_token).await;

    let following = Verifier::builder(ISSUER, AUDIENCE)
        .jwks_url(tessera.jwks_url())
        .revocation_feed(FEED_CREDENTIAL)
        .revocation_feed_url(format!("{}/v1/revocations", tessera.base))
        .build()
        .expect("verifier");
    let local_only = verifier(ISSUER, AUDIENCE, &tessera.jwks_url());
    following.prefetch().await.expect("keys");
    // Catching up at start: a session revoked before the verifier existed is refused.
    let (e, _) = until_refused(&following, &early_token).await;
    assert_eq!(e, Error::Revoked);
    assert!(following.revocations_in_sync());
    assert!(following.revocation_feed_error().is_none());

    let grant = tessera.login("ada@example.com").await;
    let token = grant["access_token"].as_str().unwrap();
    following
        .verify(token)
        .await
        .expect("a live session's token verifies");
    logout(&tessera, token).await;
    let (e, took) = until_refused(&following, token).await;
    assert_eq!(e, Error::Revoked);
    assert!(took < Duration::from_secs(1), "refused {took:?} after the logout");
    // Without the feed, the same token passes until it expires: the feed made the difference.
    local_only.verify(token).await.expect("local verification alone");
}

#[tokio::test]
async fn a_verifier_just_started_refuses_what_was_revoked_before_it_from_its_first_call() {
    let tessera = Tessera::start(&[("TESSERA_REVOCATION_FEED_CREDENTIALS", FEED_CREDENTIAL)]).await;
    let revoked_before_start = tessera.login("early@example.com").await;
    let early_token = revoked_before_start["access_token"].as_str().unwrap().to_string();
    logout(&tessera, &early_token).await;
    let live = tessera.login("live@example.com").await;
    for _ in 0..5 {
        // A verifier (a restarted service) whose very first call is the revoked token: it
        // waits for its first catch-up instead of judging by the nothing it knows yet.
        let following = Verifier::builder(ISSUER, AUDIENCE)
            .jwks_url(tessera.jwks_url())
            .revocation_feed(FEED_CREDENTIAL)
            .revocation_feed_url(format!("{}/v1/revocations", tessera.base))
            .build()
            .expect("verifier");
        assert_eq!(following.verify(&early_token).await.unwrap_err(), Error::Revoked);
        following
            .verify(live["access_token"].as_str().unwrap())
            .await
            .expect("a live session's token verifies");
    }
}

#[tokio::test]
async fn by_default_an_unreadable_feed_refuses_every_token_after_ten_seconds() {
    let tessera = Tessera::start(&[("TESSERA_REVOCATION_FEED_CREDENTIALS", FEED_CREDENTIAL)]).await;
    let following = Verifier::builder(ISSUER, AUDIENCE)
        .jwks_url(tessera.jwks_url())
        .revocation_feed("not-the-credential-but-long-enough-0123456789")
        .revocation_feed_url(format!("{}/v1/revocations", tessera.base))
        .build()
        .expect("verifier");
    following.prefetch().await.expect("keys");
    let grant = tessera.login("ada@example.com").await;
    let started = std::time::Instant::now();
    match following.verify(grant["access_token"].as_str().unwrap()).await {
        Err(Error::RevocationsUnavailable(why)) => assert!(why.contains("401"), "{why}"),
        other => panic!("expected RevocationsUnavailable, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(12),
        "refused after {took:?}: the default bound is 10 s from the start"
    );
    // Past the bound, refused at once.
    let started = std::time::Instant::now();
    assert!(matches!(
        following.verify(grant["access_token"].as_str().unwrap()).await,
        Err(Error::RevocationsUnavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_millis(100));
}

/// A feed that stops answering without an error (a frozen server, a link dropping packets)
/// ages what the verifier knows just as an unreadable one does: refused past the bound,
/// accepted again soon after it answers.
#[tokio::test]
async fn a_stalled_feed_is_refused_past_the_bound_and_recovers() {
    let tessera = Tessera::start(&[("TESSERA_REVOCATION_FEED_CREDENTIALS", FEED_CREDENTIAL)]).await;
    let bound = Duration::from_secs(2);
    let following = Verifier::builder(ISSUER, AUDIENCE)
        .jwks_url(tessera.jwks_url())
        .revocation_feed(FEED_CREDENTIAL)
        .revocation_feed_url(format!("{}/v1/revocations", tessera.base))
        .revocation_feed_max_lag(bound)
        .build()
        .expect("verifier");
    following.prefetch().await.expect("keys");
    let grant = tessera.login("ada@example.com").await;
    let token = grant["access_token"].as_str().unwrap().to_string();
    following
        .verify(&token)
        .await
        .expect("a live session's token verifies");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signal = |sig: &str| {
        let done = std::process::Command::new("kill")
            .args([sig, &tessera.pid().to_string()])
            .status()
            .expect("kill");
        assert!(done.success(), "kill {sig}");
    };
    signal("-STOP");
    let stalled = std::time::Instant::now();
    let refused_after = loop {
        match following.verify(&token).await {
            Err(Error::RevocationsUnavailable(_)) => break stalled.elapsed(),
            Ok(_) => {}
            Err(other) => {
                signal("-CONT");
                panic!("unexpected {other:?}");
            }
        }
        if stalled.elapsed() > Duration::from_secs(6) {
            signal("-CONT");
            panic!(
                "still accepted {:?} into the stall (bound {bound:?})",
                stalled.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!following.revocations_in_sync());
    signal("-CONT");
    assert!(
        refused_after <= bound + Duration::from_millis(600),
        "refused after {refused_after:?}"
    );
    let resumed = std::time::Instant::now();
    while following.verify(&token).await.is_err() {
        assert!(resumed.elapsed() < Duration::from_secs(5), "never current again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(following.revocations_in_sync());
}

#[tokio::test]
async fn failing_open_on_a_wrong_feed_credential_shows_as_out_of_sync_and_changes_nothing_else() {
    let tessera = Tessera::start(&[("TESSERA_REVOCATION_FEED_CREDENTIALS", FEED_CREDENTIAL)]).await;
    let following = Verifier::builder(ISSUER, AUDIENCE)
        .jwks_url(tessera.jwks_url())
        .revocation_feed("not-the-credential-but-long-enough-0123456789")
        .revocation_feed_url(format!("{}/v1/revocations", tessera.base))
        .revocation_feed_fail_open()
        .build()
        .expect("verifier");
    following.prefetch().await.expect("keys");
    let grant = tessera.login("ada@example.com").await;
    following
        .verify(grant["access_token"].as_str().unwrap())
        .await
        .expect("tokens still verify");
    let started = std::time::Instant::now();
    while following.revocation_feed_error().is_none() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!following.revocations_in_sync());
    let why = following.revocation_feed_error().expect("the feed's error");
    assert!(why.contains("401"), "{why}");
}

#[tokio::test]
async fn failing_closed_refuses_every_token_once_the_feed_lags_too_long() {
    let tessera = Tessera::start(&[("TESSERA_REVOCATION_FEED_CREDENTIALS", FEED_CREDENTIAL)]).await;
    let feed_url = format!("{}/v1/revocations", tessera.base);
    let closed = |credential: &str| {
        Verifier::builder(ISSUER, AUDIENCE)
            .jwks_url(tessera.jwks_url())
            .revocation_feed(credential)
            .revocation_feed_url(feed_url.clone())
            .revocation_feed_max_lag(Duration::from_millis(300))
            .build()
            .expect("verifier")
    };
    let following = closed(FEED_CREDENTIAL);
    let locked_out = closed("not-the-credential-but-long-enough-0123456789");
    following.prefetch().await.expect("keys");
    locked_out.prefetch().await.expect("keys");
    let grant = tessera.login("ada@example.com").await;
    let token = grant["access_token"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    following
        .verify(token)
        .await
        .expect("a feed in step changes nothing");
    match locked_out.verify(token).await {
        Err(Error::RevocationsUnavailable(why)) => assert!(why.contains("401"), "{why}"),
        other => panic!("expected RevocationsUnavailable, got {other:?}"),
    }
}
