//! The JOSE rules of Tessera's access tokens, written once for the server (which signs and
//! verifies its own tokens) and for `tessera-verify` (which verifies them in resource
//! servers). API.md, "Access tokens", is what they implement:
//!
//! - `alg`: the exact names of [`Alg`] (case-sensitive), checked before the `kid` is looked up
//!   so that `none`, `HS256` and the like cannot make a verifier fetch keys;
//! - `typ` is exactly [`ACCESS_TOKEN_TYP`];
//! - a header carrying a key or its location (`jwk`, `jku`, `x5u`, `x5c`) or demanding
//!   extensions (`crit`) is refused by that field's mere presence;
//! - a key verifies only under the one algorithm it is pinned to, by exact name (an `EdDSA`
//!   key refuses a header saying `Ed25519`);
//! - segments are canonical unpadded base64url.
//!
//! Only ring, base64 and serde: no database driver, no HTTP stack.
//!
//! # Layout
//! - [`Alg`]: the algorithms and their names.
//! - [`PublicKey`]: a verification key pinned to its algorithm, from raw bytes or a JWK.
//! - [`CompactJws`]: a token split and its header checked, ready for a key and then claims.
//! - [`parse_jwks`]: a JWKS document into usable keys by `kid`.

mod jwk;

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{
    RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm, ECDSA_P256_SHA256_FIXED, ED25519,
    RSA_PKCS1_2048_8192_SHA256,
};
use serde::Deserialize;

pub use jwk::{parse_jwks, BadJwks};

/// The `typ` header of every Tessera access token (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The algorithms Tessera signs access tokens with, by their exact JOSE names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Alg {
    /// EdDSA over Ed25519, under the name RFC 8037 gave it (the widest support).
    #[default]
    EdDSA,
    /// The same signature under its fully-specified name (RFC 9864, which deprecates
    /// `EdDSA`); fewer libraries know it yet.
    Ed25519,
    /// ECDSA over P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys and up.
    RS256,
}

impl Alg {
    pub const ALL: [Alg; 4] = [Alg::EdDSA, Alg::Ed25519, Alg::ES256, Alg::RS256];

    /// The JOSE `alg` name, as it appears in token headers and JWKs.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::Ed25519 => "Ed25519",
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }

    /// The algorithm of an exact JOSE `alg` name: case matters, as in JOSE (`es256` is no
    /// algorithm).
    pub fn from_jose(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.as_str() == name)
    }

    fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Alg::EdDSA | Alg::Ed25519 => &ED25519,
            Alg::ES256 => &ECDSA_P256_SHA256_FIXED,
            Alg::RS256 => &RSA_PKCS1_2048_8192_SHA256,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings are forgiving about case (`es256`); what is signed and published is the exact
/// name.
impl std::str::FromStr for Alg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::ALL
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s:?} is not one of EdDSA, Ed25519, ES256, RS256"))
    }
}

/// Why a token was refused by the wire rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwsError {
    /// Malformed, a header outside the rules, a key of another algorithm, a bad signature, or
    /// claims that do not parse.
    Invalid,
}

impl fmt::Display for JwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid token")
    }
}

impl std::error::Error for JwsError {}

enum Verification {
    /// Ed25519 (raw 32 bytes), P-256 (uncompressed point) and RSA as PKCS#1 DER: ring takes
    /// them as bytes.
    Unparsed(UnparsedPublicKey<Vec<u8>>),
    /// RSA from a JWK's modulus and exponent.
    Rsa(RsaPublicKeyComponents<Vec<u8>>),
}

/// A verification key, pinned to one algorithm.
pub struct PublicKey {
    alg: Alg,
    key: Verification,
}

impl PublicKey {
    /// A key from the bytes ring's `public_key()` gives for its algorithm: the raw Ed25519
    /// key, the uncompressed P-256 point, or the PKCS#1 `RSAPublicKey` DER.
    pub fn from_ring_bytes(alg: Alg, public: Vec<u8>) -> PublicKey {
        PublicKey {
            alg,
            key: Verification::Unparsed(UnparsedPublicKey::new(alg.verification(), public)),
        }
    }

    /// The one algorithm this key verifies under.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// Does `signature` sign `message` under this key?
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            Verification::Unparsed(key) => key.verify(message, signature).is_ok(),
            Verification::Rsa(key) => key
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
}

/// The header fields that matter. Fields that could carry a key or its location are refused
/// by their mere presence, as are extensions (`crit`, RFC 7515 §4.1.11) we would have to
/// understand.
#[derive(Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    jwk: Option<serde::de::IgnoredAny>,
    jku: Option<serde::de::IgnoredAny>,
    x5u: Option<serde::de::IgnoredAny>,
    x5c: Option<serde::de::IgnoredAny>,
    crit: Option<serde::de::IgnoredAny>,
}

/// A base64url (no padding, canonical) JSON segment; anything else is an invalid token.
fn decode_segment<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, JwsError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| JwsError::Invalid)?;
    serde_json::from_slice(&bytes).map_err(|_| JwsError::Invalid)
}

/// A compact JWS whose shape and header passed the rules: an access token's `typ`, no key
/// or key location, no `crit`, a known `alg` and a `kid`. Its signature is checked by
/// [`CompactJws::verify`] against the key its `kid` names; only then are its claims read.
#[derive(Debug)]
pub struct CompactJws<'a> {
    alg: Alg,
    kid: String,
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> CompactJws<'a> {
    pub fn parse(token: &'a str) -> Result<CompactJws<'a>, JwsError> {
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(JwsError::Invalid);
        };
        let parsed: Header = decode_segment(header)?;
        if parsed.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return Err(JwsError::Invalid);
        }
        // Keys or key locations supplied by the token are an attack vector; they are never
        // used, and a token carrying one is refused, as is one demanding extensions.
        if parsed.jwk.is_some()
            || parsed.jku.is_some()
            || parsed.x5u.is_some()
            || parsed.x5c.is_some()
            || parsed.crit.is_some()
        {
            return Err(JwsError::Invalid);
        }
        // Before the kid is looked up: an algorithm never signed with cannot make anyone
        // fetch or reload keys.
        let alg = Alg::from_jose(&parsed.alg).ok_or(JwsError::Invalid)?;
        let kid = parsed.kid.ok_or(JwsError::Invalid)?;
        Ok(CompactJws {
            alg,
            kid,
            signing_input: &token[..header.len() + 1 + payload.len()],
            payload,
            signature,
        })
    }

    /// The `kid` the header names: the key to verify with.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// Checks the signature with `key`, which must be pinned to the header's `alg` by exact
    /// name, and then reads the claims.
    pub fn verify<T: serde::de::DeserializeOwned>(&self, key: &PublicKey) -> Result<T, JwsError> {
        if key.alg != self.alg {
            return Err(JwsError::Invalid);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| JwsError::Invalid)?;
        if !key.verifies(self.signing_input.as_bytes(), &signature) {
            return Err(JwsError::Invalid);
        }
        decode_segment(self.payload)
    }
}

#[cfg(test)]
mod tests;
