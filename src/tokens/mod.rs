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

//!
//! # Layout
//! - `keys`: a signing key as stored ([`SigningKeyRecord`]: generation, stages, which signs
//!   when) and loaded (parsed once, its public JWK).
//! - `key_set`: [`AccessTokens`], the key set that issues and verifies, its JWKS and its cache
//!   of verified tokens.

mod key_set;
mod keys;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::domain::{SessionId, Timestamp, UserId};

pub use key_set::AccessTokens;
pub use keys::{signing_key_at, KeyStage, SigningKeyRecord};

/// The algorithms access tokens can be signed with (`TESSERA_SIGNING_ALG`), by their JOSE
/// names.
pub use tessera_jws::Alg as SigningAlg;
/// The `typ` header of every access token (RFC 9068); the wire rules are `tessera-jws`'s.
pub use tessera_jws::ACCESS_TOKEN_TYP;

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
    /// Whether the user's address was verified when the token was issued (absent from tokens
    /// issued before the claim existed: false).
    #[serde(default)]
    pub email_verified: bool,
    /// How the holder signed in (RFC 8176: `pwd`, `otp`, `mfa`, ...); absent from tokens of
    /// sessions older than the claim.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// When the holder last proved themself (seconds since the epoch; OpenID Connect's
    /// `auth_time`): the sign-in, or a reauthentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// How and when the holder of a session signed in, as its access tokens say.
#[derive(Clone, Copy, Debug)]
pub struct SignedIn<'a> {
    pub amr: &'a [String],
    pub auth_time: Timestamp,
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
