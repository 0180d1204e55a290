//! The key-set cache against a stand-in JWKS endpoint that counts its fetches: unknown `kid`s
//! refetch, at most once per interval, concurrent misses share one fetch, and
//! `Cache-Control: max-age` decides routine refreshes.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use tessera_verify::{Error, Verifier};

struct Endpoint {
    fetches: AtomicUsize,
    keys: Mutex<Vec<Value>>,
    cache_control: &'static str,
    /// Answers 500, as a Tessera whose database is down would.
    broken: AtomicBool,
}

async fn jwks(State(endpoint): State<Arc<Endpoint>>) -> axum::response::Response {
    endpoint.fetches.fetch_add(1, Ordering::SeqCst);
    if endpoint.broken.load(Ordering::SeqCst) {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let keys = endpoint.keys.lock().unwrap().clone();
    (
        [(header::CACHE_CONTROL, endpoint.cache_control)],
        json!({ "keys": keys }).to_string(),
    )
        .into_response()
}

async fn serve(cache_control: &'static str) -> (Arc<Endpoint>, String) {
    let endpoint = Arc::new(Endpoint {
        fetches: AtomicUsize::new(0),
        keys: Mutex::new(Vec::new()),
        cache_control,
        broken: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/jwks", get(jwks))
        .with_state(Arc::clone(&endpoint));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (endpoint, url)
}

struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        SigningKey {
            kid: kid.into(),
            pair: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kid": self.kid, "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
        })
    }

    fn token(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid});
        let claims = json!({
            "iss": "https://auth.test", "aud": "api", "sub": "u", "sid": "s",
            "iat": now, "exp": now + 300, "jti": "j", "roles": [],
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

fn verifier(url: &str, refetch: Duration) -> Verifier {
    Verifier::builder("https://auth.test", "api")
        .jwks_url(url)
        .refetch_interval(refetch)
        .build()
        .unwrap()
}

#[tokio::test]
async fn concurrent_misses_of_a_new_kid_share_one_fetch() {
    let (endpoint, url) = serve("public, max-age=600").await;
    let first = SigningKey::new("k1");
    endpoint.keys.lock().unwrap().push(first.jwk());
    let v = verifier(&url, Duration::ZERO);
    v.verify(&first.token()).await.expect("first key");
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 1);

    let second = SigningKey::new("k2");
    endpoint.keys.lock().unwrap().push(second.jwk());
    let token = second.token();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("rotated-in key");
    }
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let (endpoint, url) = serve("public, max-age=600").await;
    let known = SigningKey::new("k1");
    endpoint.keys.lock().unwrap().push(known.jwk());
    let v = verifier(&url, Duration::from_millis(500));
    v.verify(&known.token()).await.expect("known key");

    let stranger = SigningKey::new("made-up");
    for _ in 0..5 {
        assert_eq!(v.verify(&stranger.token()).await, Err(Error::Invalid));
    }
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 1, "within the interval");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(v.verify(&stranger.token()).await, Err(Error::Invalid));
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2, "after the interval");
}

#[tokio::test]
async fn max_age_decides_routine_refreshes() {
    let (endpoint, url) = serve("public, max-age=1").await;
    let key = SigningKey::new("k1");
    endpoint.keys.lock().unwrap().push(key.jwk());
    let v = verifier(&url, Duration::ZERO);
    let token = key.token();
    v.verify(&token).await.unwrap();
    v.verify(&token).await.unwrap();
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 1, "fresh for a second");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.verify(&token).await.unwrap();
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2, "stale after it");
}

#[tokio::test]
async fn an_unreachable_endpoint_keeps_the_keys_held_and_makes_new_kids_unavailable() {
    // no-store: every verification is a routine refresh.
    let (endpoint, url) = serve("no-store").await;
    let key = SigningKey::new("k1");
    endpoint.keys.lock().unwrap().push(key.jwk());
    let v = verifier(&url, Duration::ZERO);
    let token = key.token();
    v.verify(&token).await.unwrap();

    endpoint.broken.store(true, Ordering::SeqCst);
    v.verify(&token).await.expect("the key held still verifies");
    assert_eq!(endpoint.fetches.load(Ordering::SeqCst), 2, "a refresh was tried");
    // A kid only a fresh set could know: not the client's fault, so not `Invalid`.
    let unknown = SigningKey::new("k2").token();
    assert!(matches!(v.verify(&unknown).await, Err(Error::KeysUnavailable(_))));
}

#[tokio::test]
async fn without_any_keys_a_malformed_token_is_still_invalid() {
    let (endpoint, url) = serve("public, max-age=600").await;
    endpoint.broken.store(true, Ordering::SeqCst);
    let v = verifier(&url, Duration::ZERO);
    assert_eq!(v.verify("not.a.token").await, Err(Error::Invalid));
    let mut none_alg = SigningKey::new("k1").token();
    none_alg.replace_range(
        ..none_alg.find('.').unwrap(),
        &URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#),
    );
    assert_eq!(v.verify(&none_alg).await, Err(Error::Invalid));
    assert!(matches!(
        v.verify(&SigningKey::new("k1").token()).await,
        Err(Error::KeysUnavailable(_))
    ));
}
