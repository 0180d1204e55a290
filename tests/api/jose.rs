//! Taking JWTs apart and forging them: what the token-format and attack tests need.

#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use crate::helpers::TestApp;

/// A compact JWS split into its decoded header and claims and its raw signature segment.
#[derive(Clone, Debug)]
pub struct Jwt {
    pub header: Value,
    pub claims: Value,
    pub signature: String,
}

impl Jwt {
    pub fn parse(token: &str) -> Jwt {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
        Jwt {
            header: decode_json(parts[0]),
            claims: decode_json(parts[1]),
            signature: parts[2].to_owned(),
        }
    }

    /// Header and claims re-encoded with this token's (now possibly mismatched) signature.
    pub fn encode(&self) -> String {
        format!("{}.{}", signing_input(&self.header, &self.claims), self.signature)
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(segment: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {segment}"))
}

fn decode_json(segment: &str) -> Value {
    serde_json::from_slice(&unb64(segment)).expect("segment is JSON")
}

fn signing_input(header: &Value, claims: &Value) -> String {
    let encode = |v: &Value| b64(&serde_json::to_vec(v).expect("serialize"));
    format!("{}.{}", encode(header), encode(claims))
}

/// A JWT signed with an Ed25519 key.
pub fn sign_ed25519(key: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

/// A JWT "signed" with HMAC-SHA256 under `secret`.
pub fn sign_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// A fresh Ed25519 key the server has never seen, and its public JWK.
pub fn attacker_key() -> (Ed25519KeyPair, Value) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().as_ref()) });
    (key, jwk)
}

/// The server's own active signing key, read from its database: lets a test forge a token
/// that differs from a genuine one in exactly one respect.
pub async fn server_signing_key(app: &TestApp) -> (String, Ed25519KeyPair) {
    let store = tessera::store::connect(&app.config.database_url, 1)
        .await
        .expect("open the app's database");
    let keys = store.find_signing_keys().await.expect("signing keys");
    let active = keys.iter().find(|k| k.active).expect("an active key");
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&active.private_pkcs8).expect("pkcs8");
    (active.kid.clone(), pair)
}

/// The current Unix time in seconds.
pub fn now_secs() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    i64::try_from(d.as_secs()).expect("seconds")
}
