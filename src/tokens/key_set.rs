//! The key set that issues and verifies access tokens: the keys loaded from their records,
//! the JWKS they publish, the kids revoked, and the tokens already verified.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use tessera_jws::CompactJws;

use super::keys::{signing_key_at, LoadedKey, SigningKeyRecord};
use super::{AccessClaims, SignedIn, TokenError};
use crate::domain::{SessionId, Timestamp, UserId};

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
    pub(super) verified: VerifiedTokens,
}

/// Tokens whose signature and claims already passed verification, by their exact text.
///
/// An access token is presented on every request for its whole 15 minutes, and an Ed25519
/// verification is about a quarter of the CPU of an authenticated request. A token's text
/// fully determines its claims, so a token seen before needs only its `exp` checked again.
/// The cache belongs to one key set, so a key reload starts it afresh. Bounded: when full it
/// is emptied, which costs only re-verification.
///
/// Keyed with foldhash rather than SipHash (a token is some 600 bytes, hashed on every
/// request): only tokens that passed verification, which we signed, are ever stored, so a
/// client cannot choose keys that collide. The claims are shared, not copied, per request.
pub(super) struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, Arc<AccessClaims>, foldhash::fast::RandomState>>,
}

const VERIFIED_TOKENS_MAX: usize = 10_000;

impl VerifiedTokens {
    pub(super) fn get(&self, token: &str) -> Option<Arc<AccessClaims>> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    fn insert(&self, token: &str, claims: &Arc<AccessClaims>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= VERIFIED_TOKENS_MAX {
            entries.clear();
        }
        entries.insert(token.into(), Arc::clone(claims));
    }
}

/// RFC 7519 §4.1.4: the token must not be accepted on or after `exp`. Times are compared in
/// milliseconds, on the service's clock (never a second one read inside a library).
fn is_expired(exp_seconds: i64, now: Timestamp) -> bool {
    now.millis() >= exp_seconds.saturating_mul(1000)
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
                entries: Mutex::default(),
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
        self.issue_for(user, session, roles, false, now, expires_at, None, None)
    }

    /// As [`Self::issue`], with `extra` claims beside the standard ones (custom claims: their
    /// names were checked against the standard ones at start).
    pub fn issue_with_claims(
        &self,
        user: UserId,
        session: SessionId,
        roles: &[String],
        now: Timestamp,
        expires_at: Timestamp,
        extra: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Result<String, TokenError> {
        self.issue_for(user, session, roles, false, now, expires_at, extra, None)
    }

    /// As [`Self::issue_with_claims`], with the `email_verified` claim and how the holder
    /// signed in (`amr`, `auth_time`).
    #[allow(clippy::too_many_arguments)]
    pub fn issue_for(
        &self,
        user: UserId,
        session: SessionId,
        roles: &[String],
        email_verified: bool,
        now: Timestamp,
        expires_at: Timestamp,
        extra: Option<&serde_json::Map<String, serde_json::Value>>,
        signed_in: Option<SignedIn<'_>>,
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
            email_verified,
            amr: signed_in.map(|s| s.amr.to_vec()).unwrap_or_default(),
            auth_time: signed_in.map(|s| s.auth_time.seconds()),
        };
        // JWS compact serialisation (RFC 7515 §7.1): header.claims.signature, signed by ring.
        let claims = match extra {
            Some(extra) if !extra.is_empty() => {
                #[derive(serde::Serialize)]
                struct WithExtra<'a> {
                    #[serde(flatten)]
                    standard: &'a AccessClaims,
                    #[serde(flatten)]
                    extra: &'a serde_json::Map<String, serde_json::Value>,
                }
                serde_json::to_vec(&WithExtra {
                    standard: &claims,
                    extra,
                })
            }
            _ => serde_json::to_vec(&claims),
        }
        .map_err(|e| TokenError::Signing(e.to_string()))?;
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
    ) -> Result<Arc<AccessClaims>, TokenError> {
        let claims = match self.verified.get(token) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_uncached(token)?);
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
