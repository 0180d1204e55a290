//! Access tokens: JWTs with `typ: at+jwt`, signed with keys kept in the database and
//! published as a JWKS, by one of the algorithms of [`SigningAlg`] (EdDSA by default).
//! Verification is strict: only our own `kid`, only the algorithm that key is for, never a key
//! or URL taken from the token's header.
//!
//! Signing and verification are ring's for every algorithm. The JOSE wire rules (algorithm
//! names, the compact JWS and its header, pinned verification keys) are the workspace crate
//! `tessera-jws`, which `tessera-verify` uses too; signing, the key set and its schedule are
//! here. (jsonwebtoken parses `alg` into an enum that has no `Ed25519`, RFC 9864.) ring can
//! sign and verify RS256 but not generate an RSA key, for which the `rsa` crate is used, and
//! only for that (its private-key operations are not constant-time; generation runs once per
//! key, signing never goes through it).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde::{Deserialize, Serialize};
use tessera_jws::{CompactJws, PublicKey};

use crate::domain::{SessionId, Timestamp, UserId};

/// The algorithms access tokens can be signed with (`TESSERA_SIGNING_ALG`), by their JOSE
/// names.
pub use tessera_jws::Alg as SigningAlg;
/// The `typ` header of every access token (RFC 9068); the wire rules are `tessera-jws`'s.
pub use tessera_jws::ACCESS_TOKEN_TYP;

/// The size of the RSA keys we generate (RS256): 2048 bits is the floor of RFC 7518 §3.3 and
/// what gateways expect; verification accepts 2048 to 8192.
const RSA_BITS: usize = 2048;

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
    /// Signed by a key an operator revoked (`tessera keys revoke`): refused without a reload.
    #[error("signing key revoked")]
    RevokedKey,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("bad signing key {kid}: {reason}")]
    BadKey { kid: String, reason: String },
}

/// A signing key as the store keeps it. The private part is PKCS#8 DER; the public part is
/// the raw key for Ed25519, the uncompressed point for P-256 and the PKCS#1 `RSAPublicKey`
/// DER for RSA (what ring's `public_key()` gives for each).
#[derive(Clone)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub private_pkcs8: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: Timestamp,
    /// The newest key: the one signing, or the one that will sign from `activates_at` (at
    /// most one row is active, which keeps instances starting together from each creating
    /// a first key). Which key signs at a moment is [`signing_key_at`]'s answer.
    pub active: bool,
    /// When it stops signing (it may lie ahead: the predecessor of a key in the next stage
    /// retires when that key activates); it verifies for a grace period after.
    pub retired_at: Option<Timestamp>,
    /// When it starts signing. Until then it is in the next stage: published in the JWKS, so
    /// verifiers that cache the JWKS know it before they meet a token it signed.
    pub activates_at: Timestamp,
    /// Revoked keys neither sign, verify, nor appear in the JWKS.
    pub revoked_at: Option<Timestamp>,
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("active", &self.active)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

impl SigningKeyRecord {
    /// A fresh Ed25519 key pair (`EdDSA`) from the system CSPRNG.
    pub fn generate_ed25519(now: Timestamp) -> Result<SigningKeyRecord, TokenError> {
        SigningKeyRecord::generate(SigningAlg::EdDSA, now)
    }

    /// A fresh key pair for `alg` from the system CSPRNG.
    pub fn generate(alg: SigningAlg, now: Timestamp) -> Result<SigningKeyRecord, TokenError> {
        let failed = || TokenError::Signing(format!("{alg} key generation failed"));
        let rng = SystemRandom::new();
        let (private_pkcs8, public_key) = match alg {
            SigningAlg::EdDSA | SigningAlg::Ed25519 => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| failed())?;
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| failed())?;
                (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
            }
            SigningAlg::ES256 => {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| failed())?;
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .map_err(|_| failed())?;
                (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
            }
            SigningAlg::RS256 => {
                use rsa::pkcs8::EncodePrivateKey as _;
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS).map_err(|_| failed())?;
                let pkcs8 = key.to_pkcs8_der().map_err(|_| failed())?;
                let pair = RsaKeyPair::from_pkcs8(pkcs8.as_bytes()).map_err(|_| failed())?;
                (pkcs8.as_bytes().to_vec(), pair.public_key().as_ref().to_vec())
            }
        };
        Ok(SigningKeyRecord {
            kid: uuid::Uuid::now_v7().simple().to_string(),
            alg: alg.as_str().into(),
            private_pkcs8,
            public_key,
            created_at: now,
            active: true,
            retired_at: None,
            activates_at: now,
            revoked_at: None,
        })
    }
}

/// A private key, parsed once: re-parsing PKCS#8 per token would, for Ed25519, recompute the
/// public key, a scalar multiplication as costly as the signature itself.
enum Signer {
    Ed25519(Ed25519KeyPair),
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A signature: ring's inline one (Ed25519, ECDSA: no allocation), or RSA's, as long as the
/// modulus.
enum SignatureBytes {
    Inline(ring::signature::Signature),
    Rsa(Vec<u8>),
}

impl AsRef<[u8]> for SignatureBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            SignatureBytes::Inline(s) => s.as_ref(),
            SignatureBytes::Rsa(s) => s,
        }
    }
}

impl Signer {
    fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Result<SignatureBytes, TokenError> {
        let failed = |_| TokenError::Signing("signature failed".into());
        Ok(match self {
            Signer::Ed25519(pair) => SignatureBytes::Inline(pair.sign(message)),
            Signer::Ecdsa(pair) => SignatureBytes::Inline(pair.sign(rng, message).map_err(failed)?),
            Signer::Rsa(pair) => {
                let mut signature = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, rng, message, &mut signature)
                    .map_err(failed)?;
                SignatureBytes::Rsa(signature)
            }
        })
    }
}

/// One usable key, ready to sign and verify.
struct LoadedKey {
    signer: Signer,
    /// The JOSE header of every token this key signs, already base64url-encoded.
    encoded_header: String,
    /// Verifies under the one `alg` a token naming this key may carry.
    verifier: PublicKey,
}

impl LoadedKey {
    /// Parses a record and checks that its private key matches its public key; returns the
    /// key and its public JWK.
    fn load(r: &SigningKeyRecord, rng: &SystemRandom) -> Result<(LoadedKey, serde_json::Value), TokenError> {
        let bad = |reason: String| TokenError::BadKey {
            kid: r.kid.clone(),
            reason,
        };
        let alg =
            SigningAlg::from_jose(&r.alg).ok_or_else(|| bad(format!("unsupported algorithm {}", r.alg)))?;
        let (signer, public, mut jwk) = match alg {
            SigningAlg::EdDSA | SigningAlg::Ed25519 => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&r.private_pkcs8)
                    .map_err(|e| bad(e.to_string()))?;
                let public = pair.public_key().as_ref().to_vec();
                let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&public) });
                (Signer::Ed25519(pair), public, jwk)
            }
            SigningAlg::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &r.private_pkcs8, rng)
                    .map_err(|e| bad(e.to_string()))?;
                let public = pair.public_key().as_ref().to_vec();
                // The uncompressed point: 0x04, then x and y, 32 bytes each.
                let (x, y) = match public.as_slice() {
                    [0x04, xy @ ..] if xy.len() == 64 => xy.split_at(32),
                    _ => return Err(bad("not an uncompressed P-256 point".into())),
                };
                let jwk = serde_json::json!({
                    "kty": "EC", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
                });
                (Signer::Ecdsa(pair), public, jwk)
            }
            SigningAlg::RS256 => {
                use rsa::pkcs1::DecodeRsaPublicKey as _;
                use rsa::traits::PublicKeyParts as _;
                let pair = RsaKeyPair::from_pkcs8(&r.private_pkcs8).map_err(|e| bad(e.to_string()))?;
                if pair.public().modulus_len() * 8 < RSA_BITS {
                    return Err(bad(format!("RSA keys must have at least {RSA_BITS} bits")));
                }
                let public = pair.public_key().as_ref().to_vec();
                let parts = rsa::RsaPublicKey::from_pkcs1_der(&public).map_err(|e| bad(e.to_string()))?;
                let jwk = serde_json::json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(parts.n().to_bytes_be()),
                    "e": URL_SAFE_NO_PAD.encode(parts.e().to_bytes_be()),
                });
                (Signer::Rsa(pair), public, jwk)
            }
        };
        // Refuse a private key that does not match its public half.
        if public != r.public_key {
            return Err(bad("public key does not match private key".into()));
        }
        if let Some(fields) = jwk.as_object_mut() {
            fields.insert("kid".into(), r.kid.clone().into());
            fields.insert("alg".into(), alg.as_str().into());
            fields.insert("use".into(), "sig".into());
        }
        let header = serde_json::json!({ "typ": ACCESS_TOKEN_TYP, "alg": alg.as_str(), "kid": r.kid });
        let encoded_header = serde_json::to_vec(&header)
            .map(|json| URL_SAFE_NO_PAD.encode(json))
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        let key = LoadedKey {
            signer,
            encoded_header,
            verifier: PublicKey::from_ring_bytes(alg, public),
        };
        Ok((key, jwk))
    }
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
    /// The records of the keys loaded (private parts left out): their activation and
    /// retirement times say who signs when.
    schedule: Vec<SigningKeyRecord>,
    /// A reload finding the same fingerprint keeps this key set (and its cache).
    fingerprint: Vec<(String, i64, Option<i64>, bool)>,
    /// Kids revoked by an operator: refused as such, without a reload.
    revoked: HashSet<String>,
    /// Every kid of the records this was built from (expired ones too): a kid missing here
    /// is a key added since.
    all_kids: HashSet<String>,
    keys: HashMap<String, LoadedKey>,
    jwks: Arc<serde_json::Value>,
    issuer: String,
    audience: String,
    /// For ECDSA's per-signature nonce and RSA's blinding.
    rng: SystemRandom,
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

/// Where a signing key stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStage {
    /// Published in the JWKS, not signing yet (until `activates_at`).
    Next,
    /// The key new tokens are signed with.
    Active,
    /// No longer signing; still verifying (and published) until its tokens can have expired.
    Retired,
    /// Retired for longer than any of its tokens can live: neither verifying nor published.
    Expired,
    /// Revoked by an operator: refused at once, gone from the JWKS.
    Revoked,
}

impl KeyStage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStage::Next => "next",
            KeyStage::Active => "active",
            KeyStage::Retired => "retired",
            KeyStage::Expired => "expired",
            KeyStage::Revoked => "revoked",
        }
    }
}

impl fmt::Display for KeyStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SigningKeyRecord {
    /// Does this key sign at `now` (were it the newest such)? Activated, not yet retired,
    /// not revoked.
    fn may_sign_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.activates_at <= now && self.retired_at.is_none_or(|t| now < t)
    }

    /// Does this key belong in a key set at `now` (verifying, published)? Not revoked, and
    /// not retired for longer than `retired_grace`. Keys in the next stage belong too.
    pub fn in_key_set_at(&self, now: Timestamp, retired_grace: std::time::Duration) -> bool {
        self.revoked_at.is_none() && self.retired_at.is_none_or(|t| now < t.plus(retired_grace))
    }

    /// Its stage at `now` among `records` (the whole key table).
    pub fn stage_at(
        &self,
        records: &[SigningKeyRecord],
        now: Timestamp,
        retired_grace: std::time::Duration,
    ) -> KeyStage {
        let retired = || {
            if self.in_key_set_at(now, retired_grace) {
                KeyStage::Retired
            } else {
                KeyStage::Expired
            }
        };
        if self.revoked_at.is_some() {
            KeyStage::Revoked
        } else if self.retired_at.is_some_and(|t| t <= now) {
            // Possibly without ever having signed: a next key overtaken by `rotate --now`.
            retired()
        } else if now < self.activates_at {
            KeyStage::Next
        } else if signing_key_at(records, now).is_some_and(|k| k.kid == self.kid) {
            KeyStage::Active
        } else {
            retired()
        }
    }
}

/// The key that signs at `now`: of the keys activated, not retired and not revoked, the one
/// activated last. Every instance computes it from the key table alone, so a key in the next
/// stage starts signing everywhere at its activation time without any coordination.
pub fn signing_key_at(records: &[SigningKeyRecord], now: Timestamp) -> Option<&SigningKeyRecord> {
    records
        .iter()
        .filter(|r| r.may_sign_at(now))
        .max_by_key(|r| (r.activates_at, r.created_at))
}

/// What identifies a key set: its keys with their schedules, and the revoked kids. Records
/// giving the same fingerprint make the same key set (and keep its cache of verified tokens).
fn fingerprint(
    records: &[SigningKeyRecord],
    now: Timestamp,
    retired_grace: std::time::Duration,
) -> Vec<(String, i64, Option<i64>, bool)> {
    let mut print: Vec<_> = records
        .iter()
        .filter(|r| r.revoked_at.is_some() || r.in_key_set_at(now, retired_grace))
        .map(|r| {
            (
                r.kid.clone(),
                r.activates_at.millis(),
                r.retired_at.map(Timestamp::millis),
                r.revoked_at.is_some(),
            )
        })
        .collect();
    print.sort();
    print
}

impl AccessTokens {
    /// Builds the key set from the key table: keys in the next, active and retired stages
    /// verify and are published; a retired key until `now` is `retired_grace` past its
    /// retirement, which must cover the longest lifetime of the tokens it signed. Which key
    /// signs is decided at each issue ([`signing_key_at`]), so a next key takes over at its
    /// activation time without a reload; one key must sign at `now`. Keys of different
    /// algorithms mix freely: changing the algorithm is a rotation. Private keys must be
    /// plain PKCS#8 here (opened by the caller if they were sealed).
    pub fn new(
        records: &[SigningKeyRecord],
        issuer: &str,
        audience: &str,
        now: Timestamp,
        retired_grace: std::time::Duration,
    ) -> Result<AccessTokens, TokenError> {
        let rng = SystemRandom::new();
        let mut keys = HashMap::new();
        let mut jwks = Vec::new();
        let mut schedule = Vec::new();
        for r in records.iter().filter(|r| r.in_key_set_at(now, retired_grace)) {
            let (key, jwk) = LoadedKey::load(r, &rng)?;
            keys.insert(r.kid.clone(), key);
            jwks.push(jwk);
            // The schedule needs only the times: no private key kept twice.
            schedule.push(SigningKeyRecord {
                private_pkcs8: Vec::new(),
                ..r.clone()
            });
        }
        if signing_key_at(records, now).is_none_or(|k| !keys.contains_key(&k.kid)) {
            return Err(TokenError::Signing("no active signing key".into()));
        }
        let revoked = records
            .iter()
            .filter(|r| r.revoked_at.is_some())
            .map(|r| r.kid.clone())
            .collect();
        Ok(AccessTokens {
            all_kids: records.iter().map(|r| r.kid.clone()).collect(),
            schedule,
            fingerprint: fingerprint(records, now, retired_grace),
            revoked,
            keys,
            jwks: Arc::new(serde_json::json!({ "keys": jwks })),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            rng,
            verified: VerifiedTokens {
                entries: Mutex::new(HashMap::new()),
            },
        })
    }

    /// Would `records` at `now` make exactly this key set (same keys, same schedule, same
    /// revocations)?
    pub fn same_key_set(
        &self,
        records: &[SigningKeyRecord],
        now: Timestamp,
        retired_grace: std::time::Duration,
    ) -> bool {
        fingerprint(records, now, retired_grace) == self.fingerprint
    }

    /// The kid of the key that signs at `now`, if any.
    pub fn signing_kid(&self, now: Timestamp) -> Option<&str> {
        signing_key_at(&self.schedule, now).map(|r| r.kid.as_str())
    }

    /// The kids of this key set that were revoked (for following revocations made elsewhere).
    pub fn revoked_kids(&self) -> &HashSet<String> {
        &self.revoked
    }

    /// Is the key table, as (kid, revoked) pairs, what this key set was built from? A new key
    /// or a new revocation says no.
    pub fn knows_kids(&self, kids: &[(String, bool)]) -> bool {
        kids.iter()
            .all(|(kid, revoked)| self.all_kids.contains(kid) && *revoked == self.revoked.contains(kid))
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
            .signing_kid(now)
            .and_then(|kid| self.keys.get(kid))
            .ok_or_else(|| TokenError::Signing("no active signing key".into()))?;
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
        // Room for the largest signature (RSA 2048: 342 characters) without a reallocation.
        let mut token = String::with_capacity(key.encoded_header.len() + claims.len() * 4 / 3 + 350);
        token.push_str(&key.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = key.signer.sign(&self.rng, token.as_bytes())?;
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

    /// Everything but `exp`, which [`AccessTokens::verify`] compares on the service's clock
    /// (expired from `exp` on, RFC 7519 §4.1.4), cached or not.
    fn verify_uncached(&self, token: &str) -> Result<AccessClaims, TokenError> {
        // The wire rules (shape, `typ`, no key or key location, no `crit`, a known `alg`
        // before the kid is looked up) are tessera-jws's, shared with tessera-verify.
        let jws = CompactJws::parse(token).map_err(|_| TokenError::Invalid)?;
        if self.revoked.contains(jws.kid()) {
            return Err(TokenError::RevokedKey);
        }
        let key = self.keys.get(jws.kid()).ok_or(TokenError::UnknownKey)?;
        // Pinned: the key's own algorithm, by its exact name, then the signature.
        let claims: AccessClaims = jws.verify(&key.verifier).map_err(|_| TokenError::Invalid)?;
        if claims.iss != self.issuer || claims.aud != self.audience {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
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
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap())
                    .unwrap();
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
}
