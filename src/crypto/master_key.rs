//! Signing keys at rest: private keys sealed with a key derived from `TESSERA_MASTER_KEY`.
//!
//! The master key is 32 random bytes, written in standard base64 (`openssl rand -base64 32`).
//! It never touches a private key directly: HKDF-SHA256 derives the sealing key from it, so
//! the same master key could later serve another purpose under another HKDF `info` without
//! two uses sharing a key. Sealing is ChaCha20-Poly1305 (ring), with a fresh random nonce per
//! seal and the key's `kid` as associated data: a sealed key copied onto another row (say, to
//! make the server sign with a key the attacker chose) does not open.
//!
//! Stored format, version 1: `SEALED_MAGIC` (4 bytes) ‖ nonce (12) ‖ ciphertext ‖ tag (16).
//! A plain PKCS#8 key is DER and starts with `0x30` (SEQUENCE), never with the magic, so the
//! two are told apart without a column of their own, and a database may hold both while
//! `tessera keys encrypt` migrates it.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// The first bytes of a sealed private key: "TSK" and the format version.
const SEALED_MAGIC: &[u8; 4] = b"TSK\x01";
/// The length of a master key, in bytes (before base64).
pub const MASTER_KEY_BYTES: usize = 32;
/// HKDF salt and info: fixed, naming what the derived key is for.
const HKDF_SALT: &[u8] = b"tessera master key v1";
const HKDF_INFO: &[u8] = b"tessera signing-key sealing";
/// Prefixes the kid in the associated data, so the AAD of this use cannot collide with another.
const AAD_PREFIX: &[u8] = b"tessera signing key\0";
/// Prefixes the user id in the associated data of a sealed TOTP secret: a secret sealed for a
/// signing key, or for another account, does not open as this one's.
pub const TOTP_AAD_PREFIX: &[u8] = b"tessera totp secret\0";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    #[error(
        "must be {MASTER_KEY_BYTES} random bytes in standard base64 (e.g. `openssl rand -base64 32`): {0}"
    )]
    Format(String),
    #[error("the system random number generator failed")]
    Random,
    #[error("sealing failed")]
    Seal,
    /// Wrong master key, a key sealed for another kid, or altered bytes: AEAD cannot tell which.
    #[error("cannot be decrypted with the master key (wrong TESSERA_MASTER_KEY, or altered data)")]
    Open,
    #[error("is encrypted but TESSERA_MASTER_KEY is not set")]
    NoMasterKey,
}

/// A master key. No `Debug` or `Display` of its bytes: it prints as `MasterKey(<redacted>)`.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; MASTER_KEY_BYTES],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Parses the base64 text of `TESSERA_MASTER_KEY` (surrounding whitespace ignored). The
    /// error never repeats the text.
    pub fn parse(text: &str) -> Result<MasterKey, MasterKeyError> {
        let decoded = STANDARD
            .decode(text.trim())
            .map_err(|_| MasterKeyError::Format("not valid standard base64".into()))?;
        let bytes: [u8; MASTER_KEY_BYTES] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::Format(format!("got {} bytes", decoded.len())))?;
        Ok(MasterKey { bytes })
    }

    /// A fresh random master key (tests, and `openssl`-less setups through the docs).
    pub fn generate() -> Result<MasterKey, MasterKeyError> {
        let mut bytes = [0u8; MASTER_KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| MasterKeyError::Random)?;
        Ok(MasterKey { bytes })
    }

    /// The base64 text `parse` reads.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    fn sealing_key(&self) -> LessSafeKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&self.bytes);
        // `expand` fails only for an output longer than 255 hash lengths; 32 bytes never is.
        let okm = match prk.expand(&[HKDF_INFO], &CHACHA20_POLY1305) {
            Ok(okm) => okm,
            Err(_) => unreachable!("a 32-byte HKDF output is always possible"),
        };
        LessSafeKey::new(UnboundKey::from(okm))
    }

    /// Seals a private key for `kid`.
    pub fn seal(&self, kid: &str, private: &[u8]) -> Result<Vec<u8>, MasterKeyError> {
        self.seal_for(AAD_PREFIX, kid, private)
    }

    /// Opens what [`MasterKey::seal`] made for `kid`.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, MasterKeyError> {
        self.open_for(AAD_PREFIX, kid, sealed)
    }

    /// Seals `private` for the use named by `purpose` (an AAD prefix such as
    /// [`TOTP_AAD_PREFIX`]) and the object `id`.
    pub fn seal_for(&self, purpose: &[u8], id: &str, private: &[u8]) -> Result<Vec<u8>, MasterKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| MasterKeyError::Random)?;
        let mut in_out = private.to_vec();
        self.sealing_key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(purpose, id)),
                &mut in_out,
            )
            .map_err(|_| MasterKeyError::Seal)?;
        let mut sealed = Vec::with_capacity(SEALED_MAGIC.len() + NONCE_LEN + in_out.len());
        sealed.extend_from_slice(SEALED_MAGIC);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Opens what [`MasterKey::seal_for`] made for `purpose` and `id`.
    pub fn open_for(&self, purpose: &[u8], id: &str, sealed: &[u8]) -> Result<Vec<u8>, MasterKeyError> {
        let body = sealed
            .strip_prefix(SEALED_MAGIC.as_slice())
            .ok_or(MasterKeyError::Open)?;
        if body.len() < NONCE_LEN {
            return Err(MasterKeyError::Open);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| MasterKeyError::Open)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .sealing_key()
            .open_in_place(nonce, Aad::from(aad(purpose, id)), &mut in_out)
            .map_err(|_| MasterKeyError::Open)?;
        Ok(plain.to_vec())
    }
}

fn aad(purpose: &[u8], id: &str) -> Vec<u8> {
    [purpose, id.as_bytes()].concat()
}

/// Is this stored private key sealed (rather than plain PKCS#8)?
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEALED_MAGIC)
}

/// The master keys a process holds: the current one (`TESSERA_MASTER_KEY`), which seals
/// every key written, and optionally the one it replaces (`TESSERA_MASTER_KEY_PREVIOUS`),
/// which only opens, while `tessera keys encrypt` re-seals everything under the current one.
#[derive(Clone, Debug, Default)]
pub struct MasterKeys {
    pub current: Option<MasterKey>,
    pub previous: Option<MasterKey>,
}

/// How a stored private key opens with the keys held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealState {
    /// Stored in clear.
    Plain,
    /// Sealed under the current master key.
    Current,
    /// Sealed under the previous master key: `tessera keys encrypt` re-seals it.
    Previous,
}

impl MasterKeys {
    /// The plain PKCS#8 of a stored private key, and how it was stored.
    pub fn open(&self, kid: &str, stored: &[u8]) -> Result<(Vec<u8>, SealState), MasterKeyError> {
        self.open_for(AAD_PREFIX, kid, stored)
    }

    /// What to store for a new private key: sealed when a master key is set, else in clear.
    pub fn seal_for_storage(&self, kid: &str, private: &[u8]) -> Result<Vec<u8>, MasterKeyError> {
        self.seal_for_storage_as(AAD_PREFIX, kid, private)
    }

    /// [`MasterKeys::open`] for another use (`purpose`, an AAD prefix) of the master key.
    /// What is stored in clear must never start with the sealed format's magic bytes.
    pub fn open_for(
        &self,
        purpose: &[u8],
        id: &str,
        stored: &[u8],
    ) -> Result<(Vec<u8>, SealState), MasterKeyError> {
        if !is_sealed(stored) {
            return Ok((stored.to_vec(), SealState::Plain));
        }
        if self.current.is_none() && self.previous.is_none() {
            return Err(MasterKeyError::NoMasterKey);
        }
        if let Some(current) = &self.current {
            if let Ok(plain) = current.open_for(purpose, id, stored) {
                return Ok((plain, SealState::Current));
            }
        }
        if let Some(previous) = &self.previous {
            if let Ok(plain) = previous.open_for(purpose, id, stored) {
                return Ok((plain, SealState::Previous));
            }
        }
        Err(MasterKeyError::Open)
    }

    /// [`MasterKeys::seal_for_storage`] for another use (`purpose`) of the master key.
    pub fn seal_for_storage_as(
        &self,
        purpose: &[u8],
        id: &str,
        private: &[u8],
    ) -> Result<Vec<u8>, MasterKeyError> {
        match &self.current {
            Some(key) => key.seal_for(purpose, id, private),
            None => Ok(private.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS8_LIKE: &[u8] = &[
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70,
    ];

    #[test]
    fn sealing_round_trips_and_is_told_apart_from_plain_keys() {
        let key = MasterKey::generate().unwrap();
        let sealed = key.seal("kid-1", PKCS8_LIKE).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!is_sealed(PKCS8_LIKE));
        assert_ne!(
            &sealed[SEALED_MAGIC.len() + NONCE_LEN..][..PKCS8_LIKE.len()],
            PKCS8_LIKE
        );
        assert_eq!(key.open("kid-1", &sealed).unwrap(), PKCS8_LIKE);
        // A fresh nonce each time: the same key sealed twice differs.
        assert_ne!(sealed, key.seal("kid-1", PKCS8_LIKE).unwrap());
    }

    #[test]
    fn a_wrong_key_another_kid_or_a_changed_byte_is_refused() {
        let key = MasterKey::generate().unwrap();
        let sealed = key.seal("kid-1", PKCS8_LIKE).unwrap();
        let other = MasterKey::generate().unwrap();
        assert_eq!(other.open("kid-1", &sealed), Err(MasterKeyError::Open));
        assert_eq!(key.open("kid-2", &sealed), Err(MasterKeyError::Open));
        for i in [
            SEALED_MAGIC.len(),
            SEALED_MAGIC.len() + NONCE_LEN,
            sealed.len() - 1,
        ] {
            let mut tampered = sealed.clone();
            tampered[i] ^= 1;
            assert_eq!(
                key.open("kid-1", &tampered),
                Err(MasterKeyError::Open),
                "byte {i}"
            );
        }
        assert_eq!(key.open("kid-1", &sealed[..10]), Err(MasterKeyError::Open));
    }

    #[test]
    fn master_keys_open_plain_current_and_previous_and_say_which() {
        let old = MasterKey::generate().unwrap();
        let new = MasterKey::generate().unwrap();
        let keys = MasterKeys {
            current: Some(new.clone()),
            previous: Some(old.clone()),
        };
        let by_old = old.seal("k", PKCS8_LIKE).unwrap();
        let by_new = new.seal("k", PKCS8_LIKE).unwrap();
        assert_eq!(keys.open("k", PKCS8_LIKE).unwrap().1, SealState::Plain);
        assert_eq!(
            keys.open("k", &by_new).unwrap(),
            (PKCS8_LIKE.to_vec(), SealState::Current)
        );
        assert_eq!(
            keys.open("k", &by_old).unwrap(),
            (PKCS8_LIKE.to_vec(), SealState::Previous)
        );
        assert_eq!(
            MasterKeys::default().open("k", &by_new),
            Err(MasterKeyError::NoMasterKey)
        );
        let only_new = MasterKeys {
            current: Some(new),
            previous: None,
        };
        assert_eq!(only_new.open("k", &by_old), Err(MasterKeyError::Open));
        assert_eq!(
            MasterKeys::default().seal_for_storage("k", PKCS8_LIKE).unwrap(),
            PKCS8_LIKE
        );
    }

    #[test]
    fn master_keys_parse_from_32_bytes_of_base64_only_and_never_print() {
        let key = MasterKey::generate().unwrap();
        let text = key.to_base64();
        assert_eq!(MasterKey::parse(&format!(" {text}\n")).unwrap().bytes, key.bytes);
        let short = STANDARD.encode([7u8; 16]);
        let err = MasterKey::parse(&short).unwrap_err();
        assert!(err.to_string().contains("got 16 bytes"), "{err}");
        assert!(!err.to_string().contains(&short));
        assert!(matches!(
            MasterKey::parse("not base64!"),
            Err(MasterKeyError::Format(_))
        ));
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    }
}
