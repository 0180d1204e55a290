use super::key_set::*;
use super::keys::*;
use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;

use crate::domain::{Clock, SystemClock, Timestamp};

const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

/// A key set of just `key`, issuing and accepting `iss`/`aud`.
fn key_set(key: &SigningKeyRecord, iss: &str, aud: &str) -> AccessTokens {
    AccessTokens::new(std::slice::from_ref(key), iss, aud, key.created_at, HOUR).unwrap()
}

fn tokens() -> (AccessTokens, SigningKeyRecord) {
    let key = SigningKeyRecord::generate_ed25519(SystemClock.now()).unwrap();
    (key_set(&key, "https://iss", "aud"), key)
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn issue(t: &AccessTokens, ttl_secs: i64) -> String {
    let now = SystemClock.now();
    t.issue(
        UserId::new(),
        SessionId::new(),
        &["admin".into()],
        now,
        Timestamp(now.0 + ttl_secs * 1000),
    )
    .unwrap()
}

#[test]
fn issued_tokens_verify_and_carry_the_claims() {
    let (t, key) = tokens();
    let jwt = issue(&t, 60);
    let parts: Vec<_> = jwt.split('.').collect();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], key.kid.as_str());
    let claims = t.verify(&jwt, false, SystemClock.now()).unwrap();
    assert_eq!(claims.iss, "https://iss");
    assert_eq!(claims.aud, "aud");
    assert_eq!(claims.roles, vec!["admin".to_string()]);
    assert!(claims.exp > claims.iat);
}

#[test]
fn expired_tokens_say_so_and_only_logout_may_ignore_it() {
    let (t, _) = tokens();
    let jwt = issue(&t, -5);
    assert!(matches!(
        t.verify(&jwt, false, SystemClock.now()),
        Err(TokenError::Expired)
    ));
    assert!(t.verify(&jwt, true, SystemClock.now()).is_ok());
}

#[test]
fn foreign_keys_issuers_and_audiences_are_refused() {
    let (t, _) = tokens();
    let (other, _) = tokens();
    assert!(matches!(
        t.verify(&issue(&other, 60), false, SystemClock.now()),
        Err(TokenError::UnknownKey)
    ));
    let key = SigningKeyRecord::generate_ed25519(SystemClock.now()).unwrap();
    let wrong_iss = key_set(&key, "https://evil", "aud");
    let same_key_right_iss = key_set(&key, "https://iss", "aud");
    assert!(matches!(
        same_key_right_iss.verify(&issue(&wrong_iss, 60), false, SystemClock.now()),
        Err(TokenError::Invalid)
    ));
    let wrong_aud = key_set(&key, "https://iss", "other");
    assert!(matches!(
        same_key_right_iss.verify(&issue(&wrong_aud, 60), false, SystemClock.now()),
        Err(TokenError::Invalid)
    ));
}

#[test]
fn header_tricks_are_refused() {
    let (t, key) = tokens();
    let jwt = issue(&t, 60);
    let parts: Vec<_> = jwt.split('.').collect();
    let with_header = |h: serde_json::Value| format!("{}.{}.{}", b64(&h), parts[1], parts[2]);
    // alg none, wrong typ, missing typ, jwk/jku embedded, unknown kid.
    let cases = [
        serde_json::json!({"alg":"none","typ":"at+jwt","kid":key.kid}),
        serde_json::json!({"alg":"EdDSA","typ":"JWT","kid":key.kid}),
        serde_json::json!({"alg":"EdDSA","kid":key.kid}),
        serde_json::json!({"alg":"EdDSA","typ":"at+jwt","kid":key.kid,"jku":"http://127.0.0.1:1/k"}),
        serde_json::json!({"alg":"EdDSA","typ":"at+jwt","kid":key.kid,"x5u":"http://127.0.0.1:1/k"}),
        serde_json::json!({"alg":"HS256","typ":"at+jwt","kid":key.kid}),
    ];
    for h in cases {
        assert!(
            matches!(
                t.verify(&with_header(h.clone()), false, SystemClock.now()),
                Err(TokenError::Invalid)
            ),
            "{h}"
        );
    }
    let unknown_kid = with_header(serde_json::json!({"alg":"EdDSA","typ":"at+jwt","kid":"nope"}));
    assert!(matches!(
        t.verify(&unknown_kid, false, SystemClock.now()),
        Err(TokenError::UnknownKey)
    ));
    assert!(matches!(
        t.verify(&format!("{}.{}.", parts[0], parts[1]), false, SystemClock.now()),
        Err(TokenError::Invalid)
    ));
    assert!(matches!(
        t.verify("garbage", false, SystemClock.now()),
        Err(TokenError::Invalid)
    ));
}

#[test]
fn retired_keys_verify_until_their_tokens_can_have_expired() {
    let now = SystemClock.now();
    let mut old = SigningKeyRecord::generate_ed25519(Timestamp(now.0 - 10_000)).unwrap();
    let signed_by_old = issue(
        &AccessTokens::new(std::slice::from_ref(&old), "https://iss", "aud", now, HOUR).unwrap(),
        60,
    );
    old.active = false;
    old.retired_at = Some(now);
    let new = SigningKeyRecord::generate_ed25519(now).unwrap();
    let both = [old.clone(), new.clone()];

    let t = AccessTokens::new(&both, "https://iss", "aud", now.plus(HOUR / 2), HOUR).unwrap();
    assert!(
        t.verify(&signed_by_old, false, SystemClock.now()).is_ok(),
        "retired key still verifies"
    );
    assert_eq!(t.jwks()["keys"].as_array().unwrap().len(), 2);
    let fresh = issue(&t, 60);
    assert!(fresh.split('.').next().is_some_and(|h| {
        let h: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        h["kid"] == new.kid.as_str()
    }));

    let later = AccessTokens::new(&both, "https://iss", "aud", now.plus(HOUR * 2), HOUR).unwrap();
    assert!(matches!(
        later.verify(&signed_by_old, false, SystemClock.now()),
        Err(TokenError::UnknownKey)
    ));
    assert_eq!(later.jwks()["keys"].as_array().unwrap().len(), 1);
}

#[test]
fn a_verified_token_is_remembered_but_still_expires() {
    let (t, _) = tokens();
    let now = SystemClock.now();
    // Expires one second from now (exp is in whole seconds).
    let jwt = t
        .issue(
            UserId::new(),
            SessionId::new(),
            &[],
            now,
            Timestamp((now.seconds() + 1) * 1000),
        )
        .unwrap();
    assert!(t.verify(&jwt, false, SystemClock.now()).is_ok());
    assert!(t.verified.get(&jwt).is_some());
    assert!(
        t.verify(&jwt, false, SystemClock.now()).is_ok(),
        "second time from the cache"
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(matches!(
        t.verify(&jwt, false, SystemClock.now()),
        Err(TokenError::Expired)
    ));
    assert!(t.verify(&jwt, true, SystemClock.now()).is_ok());
    // One changed byte is a different token: verified afresh, and refused.
    let mut tampered = jwt.clone().into_bytes();
    let i = tampered.len() - 3;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(matches!(
        t.verify(&tampered, true, SystemClock.now()),
        Err(TokenError::Invalid)
    ));
}

#[test]
fn a_token_is_expired_from_its_exp_on() {
    let (t, _) = tokens();
    let now = SystemClock.now();
    let exp = Timestamp((now.seconds() + 5) * 1000);
    let jwt = t.issue(UserId::new(), SessionId::new(), &[], now, exp).unwrap();
    assert!(t.verify(&jwt, false, Timestamp(exp.millis() - 1)).is_ok());
    // RFC 7519 §4.1.4: "on or after" exp, not only after it.
    assert!(matches!(t.verify(&jwt, false, exp), Err(TokenError::Expired)));
    let fresh = t.issue(UserId::new(), SessionId::new(), &[], now, exp).unwrap();
    assert!(
        matches!(t.verify(&fresh, false, exp), Err(TokenError::Expired)),
        "uncached too"
    );
    assert!(t.verify(&jwt, true, exp).is_ok());
}

#[test]
fn the_same_records_make_the_same_key_set() {
    let now = SystemClock.now();
    let mut old = SigningKeyRecord::generate_ed25519(Timestamp(now.0 - 10_000)).unwrap();
    let t = AccessTokens::new(std::slice::from_ref(&old), "i", "a", now, HOUR).unwrap();
    assert!(t.same_key_set(std::slice::from_ref(&old), now, HOUR));
    // A rotation: another active key, the old one retired but still verifying.
    let new = SigningKeyRecord::generate_ed25519(now).unwrap();
    old.active = false;
    old.retired_at = Some(now);
    let both = [old.clone(), new.clone()];
    assert!(!t.same_key_set(&both, now, HOUR));
    let t2 = AccessTokens::new(&both, "i", "a", now, HOUR).unwrap();
    assert!(t2.same_key_set(&both, now, HOUR));
    // The retired key aging out changes the set too.
    assert!(!t2.same_key_set(&both, now.plus(HOUR * 2), HOUR));
}

#[test]
fn jwks_has_no_private_parts() {
    let (t, key) = tokens();
    let jwks = t.jwks();
    let k = &jwks["keys"][0];
    assert_eq!(k["kid"], key.kid.as_str());
    assert_eq!(k["use"], "sig");
    assert_eq!(k["alg"], "EdDSA");
    assert!(k.get("d").is_none());
}

/// A token for `key` with `header` signed by `key`'s private part, whatever the header says.
fn signed_with(key: &SigningKeyRecord, header: serde_json::Value, claims: &serde_json::Value) -> String {
    let input = format!("{}.{}", b64(&header), b64(claims));
    let alg = SigningAlg::from_jose(&key.alg).unwrap();
    let (loaded, _) = LoadedKey::load(key, &SystemRandom::new()).unwrap();
    assert_eq!(loaded.verifier.alg(), alg);
    let signature = loaded
        .signer
        .sign(&SystemRandom::new(), input.as_bytes())
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

#[test]
fn every_algorithm_signs_verifies_and_publishes_its_key_type() {
    for (alg, kty, crv) in [
        (SigningAlg::EdDSA, "OKP", Some("Ed25519")),
        (SigningAlg::Ed25519, "OKP", Some("Ed25519")),
        (SigningAlg::ES256, "EC", Some("P-256")),
        (SigningAlg::RS256, "RSA", None),
    ] {
        let key = SigningKeyRecord::generate(alg, SystemClock.now()).unwrap();
        assert_eq!(key.alg, alg.as_str());
        let t = key_set(&key, "https://iss", "aud");
        let jwt = issue(&t, 60);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], alg.as_str());
        assert_eq!(header["typ"], "at+jwt");
        assert!(t.verify(&jwt, false, SystemClock.now()).is_ok(), "{alg}");

        let jwk = &t.jwks()["keys"][0];
        assert_eq!(jwk["kty"], kty, "{alg}");
        assert_eq!(jwk["alg"], alg.as_str());
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["crv"].as_str(), crv, "{alg}");
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(jwk.get(private).is_none(), "{alg}: {private}");
        }
        if alg == SigningAlg::RS256 {
            let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
            assert_eq!(n.len() * 8, 2048);
            assert_eq!(jwk["e"], "AQAB");
        }

        // The same signature bytes under another algorithm's name: refused (alg pinned).
        let claims = t.verify(&jwt, false, SystemClock.now()).unwrap();
        let claims = serde_json::to_value(&claims).unwrap();
        for other in SigningAlg::ALL.into_iter().filter(|o| *o != alg) {
            let forged = signed_with(
                &key,
                serde_json::json!({"alg": other.as_str(), "typ": "at+jwt", "kid": key.kid}),
                &claims,
            );
            assert!(
                matches!(
                    t.verify(&forged, false, SystemClock.now()),
                    Err(TokenError::Invalid)
                ),
                "{alg} key, header {other}"
            );
        }
        let honest = signed_with(
            &key,
            serde_json::json!({"alg": alg.as_str(), "typ": "at+jwt", "kid": key.kid}),
            &claims,
        );
        assert!(
            t.verify(&honest, false, SystemClock.now()).is_ok(),
            "{alg}: the control case"
        );
    }
}

#[test]
fn changing_the_algorithm_is_a_rotation_old_tokens_keep_verifying() {
    let now = SystemClock.now();
    let mut old = SigningKeyRecord::generate(SigningAlg::EdDSA, Timestamp(now.0 - 10_000)).unwrap();
    let by_old = issue(&key_set(&old, "https://iss", "aud"), 60);
    old.active = false;
    old.retired_at = Some(now);
    for alg in [SigningAlg::ES256, SigningAlg::RS256, SigningAlg::Ed25519] {
        let new = SigningKeyRecord::generate(alg, now).unwrap();
        let t = AccessTokens::new(&[old.clone(), new.clone()], "https://iss", "aud", now, HOUR).unwrap();
        assert!(t.verify(&by_old, false, SystemClock.now()).is_ok(), "{alg}");
        let fresh = issue(&t, 60);
        assert!(fresh.starts_with(
            &LoadedKey::load(&new, &SystemRandom::new())
                .unwrap()
                .0
                .encoded_header
        ));
        assert!(t.verify(&fresh, false, SystemClock.now()).is_ok(), "{alg}");
        let algs: Vec<_> = t.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["alg"].clone())
            .collect();
        assert_eq!(
            algs,
            vec![serde_json::json!("EdDSA"), serde_json::json!(alg.as_str())]
        );
    }
}

#[test]
fn weak_or_mismatched_keys_are_refused() {
    use rsa::pkcs8::EncodePrivateKey as _;
    let now = SystemClock.now();
    let weak = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
    let mut record = SigningKeyRecord::generate(SigningAlg::RS256, now).unwrap();
    record.private_pkcs8 = weak.to_pkcs8_der().unwrap().as_bytes().to_vec();
    assert!(matches!(
        AccessTokens::new(&[record], "i", "a", now, HOUR),
        Err(TokenError::BadKey { .. })
    ));
    let mut swapped = SigningKeyRecord::generate(SigningAlg::ES256, now).unwrap();
    swapped.public_key = SigningKeyRecord::generate(SigningAlg::ES256, now)
        .unwrap()
        .public_key;
    assert!(matches!(
        AccessTokens::new(&[swapped], "i", "a", now, HOUR),
        Err(TokenError::BadKey { .. })
    ));
    let mut renamed = SigningKeyRecord::generate(SigningAlg::ES256, now).unwrap();
    renamed.alg = "RS256".into();
    assert!(AccessTokens::new(&[renamed], "i", "a", now, HOUR).is_err());
}

#[test]
fn algorithm_names_parse_forgivingly_but_are_stored_exactly() {
    assert_eq!("es256".parse::<SigningAlg>(), Ok(SigningAlg::ES256));
    assert_eq!("Ed25519".parse::<SigningAlg>(), Ok(SigningAlg::Ed25519));
    assert!("HS256".parse::<SigningAlg>().is_err());
    assert_eq!(
        SigningAlg::from_jose("es256"),
        None,
        "JOSE names are case-sensitive"
    );
    assert_eq!(SigningAlg::default(), SigningAlg::EdDSA);
}

#[test]
fn crit_headers_and_extra_segments_are_refused() {
    let (t, key) = tokens();
    let jwt = issue(&t, 60);
    let claims = serde_json::to_value(t.verify(&jwt, false, SystemClock.now()).unwrap()).unwrap();
    let crit = signed_with(
        &key,
        serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid, "crit": ["exp"]}),
        &claims,
    );
    assert!(matches!(
        t.verify(&crit, false, SystemClock.now()),
        Err(TokenError::Invalid)
    ));
    assert!(matches!(
        t.verify(&format!("{jwt}.extra"), false, SystemClock.now()),
        Err(TokenError::Invalid)
    ));
}

/// `old` signing, `new` in the next stage from `at`: what `tessera keys rotate` writes.
fn staged_rotation(now: Timestamp, at: Timestamp) -> (SigningKeyRecord, SigningKeyRecord) {
    let mut old = SigningKeyRecord::generate_ed25519(Timestamp(now.0 - 10_000)).unwrap();
    let mut new = SigningKeyRecord::generate_ed25519(now).unwrap();
    old.active = false;
    old.retired_at = Some(at);
    new.activates_at = at;
    (old, new)
}

fn kid_of(jwt: &str) -> String {
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[test]
fn a_next_key_is_published_at_once_and_signs_from_its_activation_without_a_reload() {
    let now = SystemClock.now();
    let at = now.plus(std::time::Duration::from_secs(300));
    let (old, new) = staged_rotation(now, at);
    let both = [old.clone(), new.clone()];
    let t = AccessTokens::new(&both, "i", "a", now, HOUR).unwrap();
    let published: Vec<_> = t.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        published,
        vec![old.kid.clone(), new.kid.clone()],
        "next key in the JWKS"
    );
    let sign_at = |when: Timestamp| {
        kid_of(
            &t.issue(UserId::new(), SessionId::new(), &[], when, when.plus(HOUR))
                .unwrap(),
        )
    };
    assert_eq!(sign_at(now), old.kid, "the old key signs until the activation");
    assert_eq!(sign_at(Timestamp(at.0 - 1)), old.kid);
    assert_eq!(
        sign_at(at),
        new.kid,
        "the same key set switches at the activation"
    );
    assert_eq!(old.stage_at(&both, now, HOUR), KeyStage::Active);
    assert_eq!(new.stage_at(&both, now, HOUR), KeyStage::Next);
    assert_eq!(new.stage_at(&both, at, HOUR), KeyStage::Active);
    assert_eq!(old.stage_at(&both, at, HOUR), KeyStage::Retired);
    assert_eq!(old.stage_at(&both, at.plus(HOUR), HOUR), KeyStage::Expired);
    // Only the times matter, not the order of the records.
    assert_eq!(
        signing_key_at(&[new.clone(), old.clone()], now).map(|k| k.kid.as_str()),
        Some(old.kid.as_str())
    );
}

#[test]
fn a_key_set_needs_a_key_signing_now() {
    let now = SystemClock.now();
    let mut only_next = SigningKeyRecord::generate_ed25519(now).unwrap();
    only_next.activates_at = now.plus(HOUR);
    assert!(AccessTokens::new(&[only_next], "i", "a", now, HOUR).is_err());
}

#[test]
fn a_revoked_key_is_refused_at_once_and_unpublished() {
    let now = SystemClock.now();
    let leaked = SigningKeyRecord::generate_ed25519(Timestamp(now.0 - 10_000)).unwrap();
    let by_leaked = issue(&key_set(&leaked, "https://iss", "aud"), 60);
    let mut revoked = leaked.clone();
    revoked.revoked_at = Some(now);
    revoked.active = false;
    let fresh = SigningKeyRecord::generate_ed25519(now).unwrap();
    let records = [revoked.clone(), fresh.clone()];
    let t = AccessTokens::new(&records, "https://iss", "aud", now, HOUR).unwrap();
    assert!(matches!(
        t.verify(&by_leaked, false, SystemClock.now()),
        Err(TokenError::RevokedKey)
    ));
    assert_eq!(t.jwks()["keys"].as_array().unwrap().len(), 1);
    assert_eq!(t.jwks()["keys"][0]["kid"], fresh.kid.as_str());
    assert_eq!(revoked.stage_at(&records, now, HOUR), KeyStage::Revoked);
    assert!(t.revoked_kids().contains(&leaked.kid));
    // A revocation changes the key set even if nothing else did.
    let unrevoked = AccessTokens::new(&[leaked.clone(), fresh.clone()], "https://iss", "aud", now, HOUR);
    assert!(unrevoked.is_ok_and(|u| !u.same_key_set(&records, now, HOUR)));
}

/// Ed25519 signatures are deterministic (RFC 8032), so the signer (ed25519-dalek) must give
/// ring's very bytes for the same key and message, and a mismatched key must not load.
#[test]
fn ed25519_signatures_are_rings_bytes() {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    let rng = SystemRandom::new();
    let record = SigningKeyRecord::generate(SigningAlg::EdDSA, SystemClock.now()).unwrap();
    let (loaded, _) = LoadedKey::load(&record, &rng).unwrap();
    let ring_pair = Ed25519KeyPair::from_pkcs8(&record.private_pkcs8).unwrap();
    for message in [&b""[..], b"header.claims", &[0xA5; 1000][..]] {
        let ours = loaded.signer.sign(&rng, message).unwrap();
        assert_eq!(ours.as_ref(), ring_pair.sign(message).as_ref());
    }

    let other = SigningKeyRecord::generate(SigningAlg::EdDSA, SystemClock.now()).unwrap();
    let mismatched = SigningKeyRecord {
        public_key: ring_pair.public_key().as_ref().to_vec(),
        ..other
    };
    assert!(LoadedKey::load(&mismatched, &rng).is_err());
}
