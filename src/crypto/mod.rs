//! Secrets and the primitives that touch them: password hashing (argon2id), opaque refresh
//! tokens (CSPRNG, stored as SHA-256), and sealing a successor token under its predecessor.
//! Every primitive comes from `argon2` or `ring`; nothing here is home-made cryptography.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::digest;
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

mod password;

pub use password::{PasswordHashString, PasswordHasher};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("password hashing failed: {0}")]
    PasswordHash(String),
    #[error("the system random number generator failed")]
    Random,
    #[error("sealing failed")]
    Seal,
}

const REFRESH_PREFIX: &str = "tsr_";
const REFRESH_BYTES: usize = 32;

/// An opaque refresh token as the client holds it: `tsr_` + 256 random bits, base64url.
/// Its `Debug` shows only a short prefix, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

/// SHA-256 of a refresh token: the only form the store ever sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefreshTokenHash(pub [u8; 32]);

impl RefreshToken {
    pub fn generate(rng: &SystemRandom) -> Result<RefreshToken, CryptoError> {
        let mut bytes = [0u8; REFRESH_BYTES];
        rng.fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        Ok(RefreshToken(format!(
            "{REFRESH_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// Accepts only the exact shape we issue, so garbage never reaches the database.
    pub fn parse(s: &str) -> Option<RefreshToken> {
        let body = s.strip_prefix(REFRESH_PREFIX)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        (bytes.len() == REFRESH_BYTES).then(|| RefreshToken(s.to_owned()))
    }

    pub fn hash(&self) -> RefreshTokenHash {
        let d = digest::digest(&digest::SHA256, self.0.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        RefreshTokenHash(out)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Encrypts `successor` under a key derived from `self`, so that only a holder of this
    /// (predecessor) token can later recover the successor. This is what lets a grace-window
    /// replay answer with the byte-identical successor while the database stores no token in
    /// clear: the stored ciphertext is useless without the predecessor, which the database
    /// only knows as a SHA-256 hash (a different derivation than the sealing key's HKDF).
    pub fn seal_successor(
        &self,
        successor: &RefreshToken,
        rng: &SystemRandom,
    ) -> Result<Vec<u8>, CryptoError> {
        let key = self.sealing_key()?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut buf = successor.0.as_bytes().to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| CryptoError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// The inverse of [`RefreshToken::seal_successor`]; `None` if this token did not seal it.
    pub fn open_successor(&self, sealed: &[u8]) -> Option<RefreshToken> {
        if sealed.len() < NONCE_LEN + aead::MAX_TAG_LEN {
            return None;
        }
        let key = self.sealing_key().ok()?;
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ciphertext.to_vec();
        let plain = key.open_in_place(nonce, Aad::empty(), &mut buf).ok()?;
        let text = std::str::from_utf8(plain).ok()?;
        RefreshToken::parse(text)
    }

    fn sealing_key(&self) -> Result<LessSafeKey, CryptoError> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"tessera/successor-seal/v1");
        let prk = salt.extract(self.0.as_bytes());
        let info: [&[u8]; 1] = [b"chacha20-poly1305 key"];
        let okm = prk
            .expand(&info, &CHACHA20_POLY1305)
            .map_err(|_| CryptoError::Seal)?;
        let mut key = [0u8; 32];
        okm.fill(&mut key).map_err(|_| CryptoError::Seal)?;
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key).map_err(|_| CryptoError::Seal)?;
        Ok(LessSafeKey::new(unbound))
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(REFRESH_PREFIX.len() + 4).collect();
        write!(f, "RefreshToken({shown}…)")
    }
}

/// Compares two secrets without revealing, through timing, where they differ: the
/// comparison runs on SHA-256 digests, whose differences say nothing about the inputs.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    digest::digest(&digest::SHA256, a.as_bytes()).as_ref()
        == digest::digest(&digest::SHA256, b.as_bytes()).as_ref()
}

/// Does `presented` equal the CSRF token bound to a session (`None`: a bearer session, which
/// has none, so nothing matches)?
pub fn csrf_matches(bound: Option<&str>, presented: &str) -> bool {
    bound.is_some_and(|expected| secrets_equal(expected, presented))
}

/// Random URL-safe string of `bytes` random bytes (CSRF tokens, ids that must be unguessable).
pub fn random_token(rng: &SystemRandom, bytes: usize) -> Result<String, CryptoError> {
    let mut buf = vec![0u8; bytes];
    rng.fill(&mut buf).map_err(|_| CryptoError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_have_the_contract_shape() {
        let rng = SystemRandom::new();
        let t = RefreshToken::generate(&rng).unwrap();
        assert!(t.expose().starts_with("tsr_"));
        let body = &t.expose()[4..];
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert!(body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(RefreshToken::parse(t.expose()), Some(t.clone()));
        assert_ne!(RefreshToken::generate(&rng).unwrap(), t);
    }

    #[test]
    fn malformed_refresh_tokens_are_rejected() {
        for bad in [
            "",
            "tsr_",
            "abc",
            "tsr_!!!!",
            "tsx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(RefreshToken::parse(bad).is_none(), "{bad:?}");
        }
        // right alphabet, wrong length
        assert!(RefreshToken::parse("tsr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_none());
    }

    #[test]
    fn debug_does_not_reveal_the_secret() {
        let t = RefreshToken::generate(&SystemRandom::new()).unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.expose()[8..]));
    }

    #[test]
    fn only_the_predecessor_opens_the_sealed_successor() {
        let rng = SystemRandom::new();
        let a = RefreshToken::generate(&rng).unwrap();
        let b = RefreshToken::generate(&rng).unwrap();
        let other = RefreshToken::generate(&rng).unwrap();
        let sealed = a.seal_successor(&b, &rng).unwrap();
        assert_eq!(a.open_successor(&sealed), Some(b));
        assert_eq!(other.open_successor(&sealed), None);
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(a.open_successor(&tampered), None);
        assert_eq!(a.open_successor(&[]), None);
    }
}
