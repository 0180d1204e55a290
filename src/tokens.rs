//! Access tokens: EdDSA (Ed25519) JWTs with `typ: at+jwt`, signed with keys kept in the
//! database and published as a JWKS. Verification is strict: only our own `kid`, only the
//! algorithm that key is for, never a key or URL taken from the token's header.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::domain::{SessionId, Timestamp, UserId};

/// The `typ` header of every access token (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
const ED25519_ALG: &str = "EdDSA";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid access token")]
    Invalid,
    /// Well-formed, but signed with a `kid` this key set does not know (maybe a key another
    /// instance just started using: reload and try once more).
    #[error("unknown signing key")]
    UnknownKey,
    #[error("access token expired")]
    Expired,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("bad signing key {kid}: {reason}")]
    BadKey { kid: String, reason: String },
}

/// A signing key as the store keeps it. The private part is PKCS#8 DER.
#[derive(Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub private_pkcs8: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: Timestamp,
    /// The one key new tokens are signed with; others only verify until their tokens expire.
    pub active: bool,
    pub retired_at: Option<Timestamp>,
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl SigningKeyRecord {
    /// A fresh Ed25519 key pair from the system CSPRNG.
    pub fn generate_ed25519(now: Timestamp) -> Result<SigningKeyRecord, TokenError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| TokenError::Signing("key generation failed".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| TokenError::Signing("key generation failed".into()))?;
        Ok(SigningKeyRecord {
            kid: uuid::Uuid::now_v7().simple().to_string(),
            alg: ED25519_ALG.into(),
            private_pkcs8: pkcs8.as_ref().to_vec(),
            public_key: pair.public_key().as_ref().to_vec(),
            created_at: now,
            active: true,
            retired_at: None,
        })
    }
}

/// One usable key, ready to sign and verify.
struct LoadedKey {
    /// Parsed once: jsonwebtoken's `encode` re-parses the PKCS#8 document on every call,
    /// which for Ed25519 recomputes the public key, a second scalar multiplication as costly
    /// as the signature itself.
    signer: Ed25519KeyPair,
    /// The JOSE header of every token this key signs, already base64url-encoded.
    encoded_header: String,
    decoding: DecodingKey,
    alg: Algorithm,
}

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// Exactly one string: an array is refused on verification.
    pub aud: String,
    pub sub: UserIdClaim,
    pub sid: SessionIdClaim,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub roles: Vec<String>,
}

/// `sub` as it travels: a UUID string.
pub type UserIdClaim = uuid::Uuid;
/// `sid` as it travels: a UUID string.
pub type SessionIdClaim = uuid::Uuid;

impl AccessClaims {
    pub fn user_id(&self) -> UserId {
        UserId(self.sub)
    }

    pub fn session_id(&self) -> SessionId {
        SessionId(self.sid)
    }
}

/// Issues and verifies access tokens with the server's key set.
pub struct AccessTokens {
    active_kid: String,
    /// The kids loaded, sorted: a reload finding the same set keeps this key set (and its cache).
    kids: Vec<String>,
    keys: HashMap<String, LoadedKey>,
    jwks: Arc<serde_json::Value>,
    issuer: String,
    audience: String,
    validation: Validation,
    verified: VerifiedTokens,
}

/// Tokens whose signature and claims already passed verification, by their exact text.
///
/// An access token is presented on every request for its whole 15 minutes, and an Ed25519
/// verification is about a quarter of the CPU of an authenticated request. A token's text
/// fully determines its claims, so a token seen before needs only its `exp` checked again.
/// The cache belongs to one key set, so a key reload starts it afresh. Bounded: when full it
/// is emptied, which costs only re-verification.
struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, AccessClaims>>,
}

const VERIFIED_TOKENS_MAX: usize = 10_000;

impl VerifiedTokens {
    fn get(&self, token: &str) -> Option<AccessClaims> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    fn insert(&self, token: &str, claims: &AccessClaims) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= VERIFIED_TOKENS_MAX {
            entries.clear();
        }
        entries.insert(token.into(), claims.clone());
    }
}

/// RFC 7519 §4.1.4: the token must not be accepted on or after `exp`. Times are compared in
/// milliseconds, on the service's clock (never a second one read inside a library).
fn is_expired(exp_seconds: i64, now: Timestamp) -> bool {
    now.millis() >= exp_seconds.saturating_mul(1000)
}

/// The records that belong in a key set at `now`: the active ones, and retired ones within
/// `retired_grace` of their retirement.
fn usable_records(
    records: &[SigningKeyRecord],
    now: Timestamp,
    retired_grace: std::time::Duration,
) -> impl Iterator<Item = &SigningKeyRecord> {
    records
        .iter()
        .filter(move |r| r.active || r.retired_at.is_none_or(|t| now < t.plus(retired_grace)))
}

/// The newest active record's kid.
fn active_kid(
    records: &[SigningKeyRecord],
    now: Timestamp,
    retired_grace: std::time::Duration,
) -> Option<&str> {
    usable_records(records, now, retired_grace)
        .filter(|r| r.active)
        .max_by_key(|r| r.created_at)
        .map(|r| r.kid.as_str())
}

fn sorted_kids(
    records: &[SigningKeyRecord],
    now: Timestamp,
    retired_grace: std::time::Duration,
) -> Vec<String> {
    let mut kids: Vec<String> = usable_records(records, now, retired_grace)
        .map(|r| r.kid.clone())
        .collect();
    kids.sort();
    kids
}

impl AccessTokens {
    /// Builds the key set; exactly one record should be active (the newest active wins).
    /// A retired key still verifies (and is published) until `now` is `retired_grace` past its
    /// retirement, which must cover the longest lifetime of the tokens it signed.
    pub fn new(
        records: &[SigningKeyRecord],
        issuer: &str,
        audience: &str,
        now: Timestamp,
        retired_grace: std::time::Duration,
    ) -> Result<AccessTokens, TokenError> {
        let mut keys = HashMap::new();
        let mut jwks = Vec::new();
        let mut active: Option<&SigningKeyRecord> = None;
        for r in usable_records(records, now, retired_grace) {
            if r.alg != ED25519_ALG || r.public_key.len() != 32 {
                return Err(TokenError::BadKey {
                    kid: r.kid.clone(),
                    reason: format!("unsupported algorithm {} or key size", r.alg),
                });
            }
            // Refuse a private key that does not match its public half.
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&r.private_pkcs8).map_err(|e| {
                TokenError::BadKey {
                    kid: r.kid.clone(),
                    reason: e.to_string(),
                }
            })?;
            if pair.public_key().as_ref() != r.public_key.as_slice() {
                return Err(TokenError::BadKey {
                    kid: r.kid.clone(),
                    reason: "public key does not match private key".into(),
                });
            }
            let x = URL_SAFE_NO_PAD.encode(&r.public_key);
            let decoding = DecodingKey::from_ed_components(&x).map_err(|e| TokenError::BadKey {
                kid: r.kid.clone(),
                reason: e.to_string(),
            })?;
            let mut header = Header::new(Algorithm::EdDSA);
            header.typ = Some(ACCESS_TOKEN_TYP.into());
            header.kid = Some(r.kid.clone());
            let encoded_header = serde_json::to_vec(&header)
                .map(|json| URL_SAFE_NO_PAD.encode(json))
                .map_err(|e| TokenError::Signing(e.to_string()))?;
            keys.insert(
                r.kid.clone(),
                LoadedKey {
                    signer: pair,
                    encoded_header,
                    decoding,
                    alg: Algorithm::EdDSA,
                },
            );
            jwks.push(serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": x,
                "kid": r.kid, "alg": ED25519_ALG, "use": "sig",
            }));
            if r.active && active.is_none_or(|a| a.created_at < r.created_at) {
                active = Some(r);
            }
        }
        let active_kid = active
            .map(|r| r.kid.clone())
            .ok_or_else(|| TokenError::Signing("no active signing key".into()))?;

        // `exp` must be present, but is compared by `verify` on the service's clock, with the
        // RFC's rule (expired from `exp` on); jsonwebtoken would accept `exp == now`.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "iat"]);

        Ok(AccessTokens {
            active_kid,
            kids: sorted_kids(records, now, retired_grace),
            keys,
            jwks: Arc::new(serde_json::json!({ "keys": jwks })),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            validation,
            verified: VerifiedTokens {
                entries: Mutex::new(HashMap::new()),
            },
        })
    }

    /// Would `records` at `now` make exactly this key set (same keys, same active one)?
    pub fn same_key_set(
        &self,
        records: &[SigningKeyRecord],
        now: Timestamp,
        retired_grace: std::time::Duration,
    ) -> bool {
        active_kid(records, now, retired_grace) == Some(self.active_kid.as_str())
            && sorted_kids(records, now, retired_grace) == self.kids
    }

    /// The public JWK set (`{"keys": [...]}`), never with a private part.
    pub fn jwks(&self) -> Arc<serde_json::Value> {
        Arc::clone(&self.jwks)
    }

    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        roles: &[String],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<String, TokenError> {
        let key = self
            .keys
            .get(&self.active_kid)
            .ok_or_else(|| TokenError::Signing("active key missing".into()))?;
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.0,
            sid: session.0,
            iat: now.seconds(),
            exp: expires_at.seconds(),
            jti: uuid::Uuid::now_v7().to_string(),
            roles: roles.to_vec(),
        };
        // JWS compact serialisation (RFC 7515 §7.1): header.claims.signature, signed by ring.
        let claims = serde_json::to_vec(&claims).map_err(|e| TokenError::Signing(e.to_string()))?;
        let mut token = String::with_capacity(key.encoded_header.len() + claims.len() * 4 / 3 + 92);
        token.push_str(&key.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = key.signer.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// Strict verification at `now`. `allow_expired` is only for logout, where an expired but
    /// authentic token still identifies the session to end.
    pub fn verify(
        &self,
        token: &str,
        allow_expired: bool,
        now: Timestamp,
    ) -> Result<AccessClaims, TokenError> {
        let claims = match self.verified.get(token) {
            Some(claims) => claims,
            None => {
                let claims = self.verify_uncached(token)?;
                self.verified.insert(token, &claims);
                claims
            }
        };
        if !allow_expired && is_expired(claims.exp, now) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return Err(TokenError::Invalid);
        }
        // Keys or key locations supplied by the token are an attack vector; we never use them
        // and refuse tokens that carry them.
        if header.jwk.is_some() || header.jku.is_some() || header.x5u.is_some() || header.x5c.is_some() {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.as_deref().ok_or(TokenError::Invalid)?;
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKey)?;
        if header.alg != key.alg {
            return Err(TokenError::Invalid);
        }
        match jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Clock, SystemClock};

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
}
