use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use super::*;

fn pair() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn sign(pair: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let signature = pair.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

fn header() -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k1"})
}

fn claims() -> Value {
    json!({"sub": "u-1", "roles": ["admin"]})
}

fn check(token: &str, key: &PublicKey) -> Result<Value, JwsError> {
    let jws = CompactJws::parse(token)?;
    assert_eq!(jws.kid(), "k1");
    jws.verify(key)
}

#[test]
fn an_honest_token_verifies_and_yields_its_claims() {
    let pair = pair();
    let key = PublicKey::from_ring_bytes(Alg::EdDSA, pair.public_key().as_ref().to_vec());
    let token = sign(&pair, &header(), &claims());
    assert_eq!(check(&token, &key), Ok(claims()));
    assert_eq!(CompactJws::parse(&token).unwrap().alg(), Alg::EdDSA);
}

#[test]
fn headers_outside_the_rules_are_refused_before_any_key_is_needed() {
    let pair = pair();
    let mut cases = Vec::new();
    for (field, value) in [
        ("typ", json!("JWT")),
        ("alg", json!("none")),
        ("alg", json!("HS256")),
        ("alg", json!("eddsa")),
        ("jwk", json!({"kty": "OKP"})),
        ("jku", json!("https://evil.test/jwks")),
        ("x5u", json!("https://evil.test/cert")),
        ("x5c", json!(["MII"])),
        ("crit", json!(["exp"])),
    ] {
        let mut h = header();
        h[field] = value;
        cases.push(h);
    }
    let mut no_typ = header();
    no_typ.as_object_mut().unwrap().remove("typ");
    let mut no_kid = header();
    no_kid.as_object_mut().unwrap().remove("kid");
    cases.extend([no_typ, no_kid]);
    for h in cases {
        assert_eq!(
            CompactJws::parse(&sign(&pair, &h, &claims())).err(),
            Some(JwsError::Invalid),
            "{h}"
        );
    }
}

#[test]
fn a_key_verifies_only_under_its_own_algorithm_name() {
    let pair = pair();
    let public = pair.public_key().as_ref().to_vec();
    let eddsa = PublicKey::from_ring_bytes(Alg::EdDSA, public.clone());
    let ed25519 = PublicKey::from_ring_bytes(Alg::Ed25519, public);
    let mut h = header();
    h["alg"] = json!("Ed25519");
    let token = sign(&pair, &h, &claims());
    // The same signature, but the header names the other algorithm: refused.
    assert_eq!(check(&token, &eddsa), Err(JwsError::Invalid));
    assert_eq!(check(&token, &ed25519), Ok(claims()));
}

#[test]
fn tampered_and_malformed_tokens_are_refused() {
    let pair = pair();
    let key = PublicKey::from_ring_bytes(Alg::EdDSA, pair.public_key().as_ref().to_vec());
    let good = sign(&pair, &header(), &claims());
    let (signed, signature) = good.rsplit_once('.').unwrap();
    let forged = format!("{}.{}.{signature}", b64(&header()), b64(&json!({"sub": "u-2"})));
    for token in [
        forged,
        format!("{signed}."),
        format!("{signed}.!!!"),
        format!("{signed}={signature}"),
    ] {
        assert_eq!(check(&token, &key), Err(JwsError::Invalid), "{token}");
    }
    for token in [format!("{good}.extra"), "a.b".to_string(), String::new()] {
        assert_eq!(
            CompactJws::parse(&token).err(),
            Some(JwsError::Invalid),
            "{token}"
        );
    }
    // Padded base64 is not canonical base64url.
    let padded = format!("{}=.{}", b64(&header()), &good[b64(&header()).len() + 1..]);
    assert_eq!(CompactJws::parse(&padded).err(), Some(JwsError::Invalid));
}

#[test]
fn algorithm_names_are_exact_on_the_wire_and_forgiving_in_settings() {
    for alg in Alg::ALL {
        assert_eq!(Alg::from_jose(alg.as_str()), Some(alg));
        assert_eq!(alg.as_str().to_lowercase().parse::<Alg>(), Ok(alg));
    }
    assert_eq!(Alg::from_jose("es256"), None);
    assert_eq!(Alg::default(), Alg::EdDSA);
    assert!("HS256".parse::<Alg>().is_err());
}
