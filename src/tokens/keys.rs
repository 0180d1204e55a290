//! Signing keys: as stored (generation, the stages that say which key signs when) and as
//! loaded for use (the private key parsed once, the public JWK, the encoded header).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::Signer as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde::Serialize;
use tessera_jws::PublicKey;

use super::{SigningAlg, TokenError, ACCESS_TOKEN_TYP};
use crate::domain::Timestamp;

/// The size of the RSA keys we generate (RS256): 2048 bits is the floor of RFC 7518 §3.3 and
/// what gateways expect; verification accepts 2048 to 8192.
pub(super) const RSA_BITS: usize = 2048;

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
/// public key, a scalar multiplication as costly as the signature itself. Ed25519 signs with
/// ed25519-dalek (a signature is 14 µs there against 19.5 µs in ring, measured on the
/// benchmark machine, and it is a third of a refresh's CPU); ring checks the key when it loads.
pub(super) enum Signer {
    Ed25519(ed25519_dalek::SigningKey),
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A signature: Ed25519's and ring's ECDSA one inline (no allocation), or RSA's, as long as the
/// modulus.
pub(super) enum SignatureBytes {
    Ed25519([u8; ed25519_dalek::SIGNATURE_LENGTH]),
    Inline(ring::signature::Signature),
    Rsa(Vec<u8>),
}

impl AsRef<[u8]> for SignatureBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            SignatureBytes::Ed25519(s) => s,
            SignatureBytes::Inline(s) => s.as_ref(),
            SignatureBytes::Rsa(s) => s,
        }
    }
}

impl Signer {
    pub(super) fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Result<SignatureBytes, TokenError> {
        let failed = |_| TokenError::Signing("signature failed".into());
        Ok(match self {
            Signer::Ed25519(key) => SignatureBytes::Ed25519(key.sign(message).to_bytes()),
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
pub(super) struct LoadedKey {
    pub(super) signer: Signer,
    /// The JOSE header of every token this key signs, already base64url-encoded.
    pub(super) encoded_header: String,
    /// Verifies under the one `alg` a token naming this key may carry.
    pub(super) verifier: PublicKey,
}

impl LoadedKey {
    /// Parses a record and checks that its private key matches its public key; returns the
    /// key and its public JWK.
    pub(super) fn load(
        r: &SigningKeyRecord,
        rng: &SystemRandom,
    ) -> Result<(LoadedKey, serde_json::Value), TokenError> {
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
                let key = ed25519_dalek::SigningKey::from_pkcs8_der(&r.private_pkcs8)
                    .map_err(|e| bad(e.to_string()))?;
                // The signer must sign for the very key ring read (and the JWKS publishes).
                if key.verifying_key().as_bytes() != public.as_slice() {
                    return Err(bad("the Ed25519 private key does not give its public key".into()));
                }
                let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&public) });
                (Signer::Ed25519(key), public, jwk)
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
    pub(super) fn may_sign_at(&self, now: Timestamp) -> bool {
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
