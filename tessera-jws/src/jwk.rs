//! JWKS documents into verification keys. A key is usable only with the one algorithm its
//! `alg` names, and only if its type and curve are what that algorithm needs: a JWK whose
//! fields disagree is dropped, never guessed at.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
use serde::Deserialize;

use crate::{Alg, PublicKey, Verification};

/// RFC 7518 §3.3: RSA keys below 2048 bits are not acceptable (ring's verification algorithm
/// enforces the same floor; refusing at parse time keeps such a key out of the set).
const RSA_MIN_MODULUS_BYTES: usize = 256;

/// The JWK members we read. Private members (`d`, ...) are ignored, not refused: a published
/// key set never carries them, and they play no part in verification.
#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

/// Why a whole document was refused (a single bad key is skipped instead).
#[derive(Debug, PartialEq, Eq)]
pub struct BadJwks;

fn b64(field: Option<&String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(field?).ok()
}

/// One JWK as a `(kid, key)`, or `None` when it is not a signing key Tessera could have made.
fn parse_key(jwk: &Jwk) -> Option<(String, PublicKey)> {
    let kid = jwk.kid.clone().filter(|k| !k.is_empty())?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    // Tessera always publishes `alg`; without it the key could be tried with any algorithm,
    // which is exactly the confusion pinning exists to prevent.
    let alg = Alg::from_jose(jwk.alg.as_deref()?)?;
    let key = match (alg, jwk.kty.as_deref(), jwk.crv.as_deref()) {
        (Alg::EdDSA | Alg::Ed25519, Some("OKP"), Some("Ed25519")) => {
            let x = b64(jwk.x.as_ref()).filter(|x| x.len() == 32)?;
            Verification::Unparsed(UnparsedPublicKey::new(&ED25519, x))
        }
        (Alg::ES256, Some("EC"), Some("P-256")) => {
            let x = b64(jwk.x.as_ref()).filter(|x| x.len() == 32)?;
            let y = b64(jwk.y.as_ref()).filter(|y| y.len() == 32)?;
            // SEC 1 uncompressed form, what ring's ECDSA verification takes.
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Verification::Unparsed(UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point))
        }
        (Alg::RS256, Some("RSA"), None) => {
            let n = b64(jwk.n.as_ref())?;
            let e = b64(jwk.e.as_ref()).filter(|e| !e.is_empty())?;
            // Leading zero bytes do not count towards the modulus size.
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < RSA_MIN_MODULUS_BYTES {
                return None;
            }
            Verification::Rsa(RsaPublicKeyComponents { n, e })
        }
        _ => return None,
    };
    Some((kid, PublicKey { alg, key }))
}

/// A JWKS document (`{"keys": [...]}`) as usable keys by `kid`. Keys that are malformed, of
/// another type or for another algorithm are left out, so one odd key does not cost the rest.
pub fn parse_jwks(document: &[u8]) -> Result<HashMap<String, PublicKey>, BadJwks> {
    let set: JwkSet = serde_json::from_slice(document).map_err(|_| BadJwks)?;
    Ok(set
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| parse_key(&jwk))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    fn ed25519() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn parse(keys: serde_json::Value) -> HashMap<String, PublicKey> {
        parse_jwks(&serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap()
    }

    #[test]
    fn ed25519_keys_verify_under_their_own_algorithm_name() {
        let pair = ed25519();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let keys = parse(json!([
            {"kid": "a", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "x": x},
            {"kid": "b", "kty": "OKP", "crv": "Ed25519", "alg": "Ed25519", "x": x},
        ]));
        assert_eq!(keys["a"].alg(), Alg::EdDSA);
        assert_eq!(keys["b"].alg(), Alg::Ed25519);
        let signature = pair.sign(b"message");
        assert!(keys["a"].verifies(b"message", signature.as_ref()));
        assert!(!keys["a"].verifies(b"massage", signature.as_ref()));
    }

    #[test]
    fn p256_keys_are_rebuilt_from_x_and_y() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let keys = parse(json!([{
            "kid": "e", "kty": "EC", "crv": "P-256", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        }]));
        let signature = pair.sign(&rng, b"message").unwrap();
        assert!(keys["e"].verifies(b"message", signature.as_ref()));
        assert!(!keys["e"].verifies(b"other", signature.as_ref()));
    }

    #[test]
    fn keys_whose_fields_disagree_are_left_out() {
        let x = URL_SAFE_NO_PAD.encode(ed25519().public_key().as_ref());
        let short = URL_SAFE_NO_PAD.encode([7u8; 31]);
        let small_n = URL_SAFE_NO_PAD.encode([0xffu8; 128]);
        let keys = parse(json!([
            {"kid": "no-alg", "kty": "OKP", "crv": "Ed25519", "x": x},
            {"kid": "wrong-kty", "kty": "EC", "crv": "Ed25519", "alg": "EdDSA", "x": x},
            {"kid": "alg-for-other-type", "kty": "OKP", "crv": "Ed25519", "alg": "ES256", "x": x},
            {"kid": "short", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": short},
            {"kid": "enc", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "enc", "x": x},
            {"kid": "hmac", "kty": "oct", "alg": "HS256", "k": x},
            {"kid": "rsa-1024", "kty": "RSA", "alg": "RS256", "n": small_n, "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": x},
            "not an object",
            {"kid": "good", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": x},
        ]));
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["good"]);
    }

    #[test]
    fn rsa_keys_of_2048_bits_are_kept() {
        let n = URL_SAFE_NO_PAD.encode([0xc3u8; 256]);
        let keys = parse(json!([{"kid": "r", "kty": "RSA", "alg": "RS256", "n": n, "e": "AQAB"}]));
        assert_eq!(keys["r"].alg(), Alg::RS256);
    }

    #[test]
    fn a_document_without_keys_is_refused() {
        assert_eq!(parse_jwks(b"{}").err(), Some(BadJwks));
        assert_eq!(parse_jwks(b"<html>").err(), Some(BadJwks));
        assert!(parse_jwks(br#"{"keys": []}"#).unwrap().is_empty());
    }
}
