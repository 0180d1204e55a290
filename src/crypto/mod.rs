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

use crate::domain::SessionId;

pub mod imported;
pub mod master_key;
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
    #[error("a refresh-token generation must not be negative")]
    Generation,
}

const REFRESH_PREFIX: &str = "tsr_";
/// The random part of every refresh token: 256 bits from the CSPRNG.
const SECRET_BYTES: usize = 32;
/// The first byte of a token that names its place in its session's chain.
const CHAINED_FORMAT: u8 = 1;
/// format byte + session id + generation (big-endian) + secret.
const CHAINED_BYTES: usize = 1 + 16 + 8 + SECRET_BYTES;
/// Its length in unpadded base64.
const CHAINED_CHARS: usize = (CHAINED_BYTES * 4).div_ceil(3);

/// An opaque refresh token as the client holds it: `tsr_` + base64url of
/// `[1, session id (16 bytes), generation (8 bytes, big-endian), 32 random bytes]`.
///
/// The token names the session and the generation it was issued for, so the store finds it
/// by primary key, among its session's own rows, rather than by a hash spread at random over
/// an index of every token ever issued (see ARCHITECTURE, "Refresh tokens"). The names are
/// not secret (the session id is in every access token); the 256 random bits are, and the
/// store keeps only a SHA-256 of the whole token. Tokens issued before this format
/// (`tsr_` + 32 random bytes) are still accepted: see [`RefreshTokenKey::Legacy`].
///
/// Its `Debug` shows only a short prefix, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    text: String,
    /// The session and generation a chained token names; `None` for a legacy token.
    position: Option<(SessionId, i64)>,
}

/// SHA-256 of a refresh token: the only form the store ever sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefreshTokenHash(pub [u8; 32]);

/// How the store finds a presented refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshTokenKey {
    /// The token's own session and generation (a primary-key read), and its hash to compare.
    Chained {
        session_id: SessionId,
        generation: i64,
        hash: RefreshTokenHash,
    },
    /// A token from before the chained format: found by its hash alone.
    Legacy(RefreshTokenHash),
}

impl RefreshToken {
    /// A new token for generation `generation` of session `session_id`.
    pub fn issue(
        rng: &SystemRandom,
        session_id: SessionId,
        generation: i64,
    ) -> Result<RefreshToken, CryptoError> {
        let position = Some((session_id, generation));
        let generation = u64::try_from(generation).map_err(|_| CryptoError::Generation)?;
        let mut bytes = [0u8; CHAINED_BYTES];
        bytes[0] = CHAINED_FORMAT;
        bytes[1..17].copy_from_slice(session_id.0.as_bytes());
        bytes[17..25].copy_from_slice(&generation.to_be_bytes());
        rng.fill(&mut bytes[25..]).map_err(|_| CryptoError::Random)?;
        Ok(RefreshToken {
            text: format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)),
            position,
        })
    }

    /// Accepts only the exact shapes we issue (chained, and legacy), so garbage never
    /// reaches the database.
    pub fn parse(s: &str) -> Option<RefreshToken> {
        let body = s.strip_prefix(REFRESH_PREFIX)?;
        // Checked before decoding: an oversized body is refused without work.
        if body.len() > CHAINED_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        let position = match bytes.len() {
            SECRET_BYTES => None,
            CHAINED_BYTES if bytes[0] == CHAINED_FORMAT => Some(chain_position(&bytes)?),
            _ => return None,
        };
        Some(RefreshToken {
            text: s.to_owned(),
            position,
        })
    }

    pub fn hash(&self) -> RefreshTokenHash {
        let d = digest::digest(&digest::SHA256, self.text.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        RefreshTokenHash(out)
    }

    /// Where the store finds this token.
    pub fn key(&self) -> RefreshTokenKey {
        let hash = self.hash();
        match self.position {
            Some((session_id, generation)) => RefreshTokenKey::Chained {
                session_id,
                generation,
                hash,
            },
            None => RefreshTokenKey::Legacy(hash),
        }
    }

    pub fn expose(&self) -> &str {
        &self.text
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
        let mut buf = successor.text.as_bytes().to_vec();
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
        let prk = salt.extract(self.text.as_bytes());
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
        let shown: String = self.text.chars().take(REFRESH_PREFIX.len() + 4).collect();
        write!(f, "RefreshToken({shown}…)")
    }
}

/// The session id and generation of a chained token's decoded bytes (`None`: a generation no
/// session can reach, so not a token we issued).
fn chain_position(bytes: &[u8]) -> Option<(SessionId, i64)> {
    let session = uuid::Uuid::from_slice(bytes.get(1..17)?).ok()?;
    let generation = u64::from_be_bytes(bytes.get(17..25)?.try_into().ok()?);
    Some((SessionId(session), i64::try_from(generation).ok()?))
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

    fn legacy_token(rng: &SystemRandom) -> String {
        let mut bytes = [0u8; SECRET_BYTES];
        rng.fill(&mut bytes).unwrap();
        format!("tsr_{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    #[test]
    fn refresh_tokens_have_the_contract_shape() {
        let rng = SystemRandom::new();
        let session = SessionId::new();
        let t = RefreshToken::issue(&rng, session, 7).unwrap();
        assert!(t.expose().starts_with("tsr_"));
        let body = &t.expose()[4..];
        let bytes = URL_SAFE_NO_PAD.decode(body).unwrap();
        assert_eq!(bytes.len(), CHAINED_BYTES);
        assert_eq!(body.len(), CHAINED_CHARS);
        assert!(body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(RefreshToken::parse(t.expose()), Some(t.clone()));
        // Same session and generation, different secret: a different token.
        assert_ne!(RefreshToken::issue(&rng, session, 7).unwrap(), t);
    }

    #[test]
    fn a_chained_token_names_its_session_and_generation() {
        let rng = SystemRandom::new();
        let session = SessionId::new();
        let t = RefreshToken::issue(&rng, session, 41).unwrap();
        let parsed = RefreshToken::parse(t.expose()).unwrap();
        assert_eq!(
            parsed.key(),
            RefreshTokenKey::Chained {
                session_id: session,
                generation: 41,
                hash: t.hash(),
            }
        );
        assert!(RefreshToken::issue(&rng, session, -1).is_err());
        let big = RefreshToken::issue(&rng, session, i64::MAX).unwrap();
        assert!(matches!(
            RefreshToken::parse(big.expose()).unwrap().key(),
            RefreshTokenKey::Chained {
                generation: i64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn legacy_tokens_are_still_accepted_and_found_by_hash() {
        let rng = SystemRandom::new();
        let text = legacy_token(&rng);
        let t = RefreshToken::parse(&text).expect("a token issued before the chained format");
        assert_eq!(t.key(), RefreshTokenKey::Legacy(t.hash()));
    }

    #[test]
    fn malformed_refresh_tokens_are_rejected() {
        let rng = SystemRandom::new();
        let good = URL_SAFE_NO_PAD
            .decode(&RefreshToken::issue(&rng, SessionId::new(), 3).unwrap().expose()[4..])
            .unwrap();
        let mut wrong_format = good.clone();
        wrong_format[0] = 2;
        let mut unreachable_generation = good.clone();
        unreachable_generation[17] = 0x80;
        let mut too_long = good.clone();
        too_long.push(0);
        let reencoded = |b: &[u8]| format!("tsr_{}", URL_SAFE_NO_PAD.encode(b));
        for bad in [
            "".to_owned(),
            "tsr_".to_owned(),
            "abc".to_owned(),
            "tsr_!!!!".to_owned(),
            "tsx_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
            // right alphabet, wrong length
            "tsr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
            reencoded(&wrong_format),
            reencoded(&unreachable_generation),
            reencoded(&too_long),
            reencoded(&good[..good.len() - 1]),
            format!("tsr_{}", "A".repeat(10_000)),
        ] {
            assert!(RefreshToken::parse(&bad).is_none(), "{bad:?}");
        }
        assert!(RefreshToken::parse(&reencoded(&good)).is_some());
    }

    #[test]
    fn debug_does_not_reveal_the_secret() {
        let t = RefreshToken::issue(&SystemRandom::new(), SessionId::new(), 0).unwrap();
        let shown = format!("{t:?}");
        // The secret is the last 32 bytes: 43 characters of base64.
        assert!(!shown.contains(&t.expose()[t.expose().len() - 40..]));
        assert!(shown.len() < 40, "{shown}");
    }

    #[test]
    fn only_the_predecessor_opens_the_sealed_successor() {
        let rng = SystemRandom::new();
        let session = SessionId::new();
        let a = RefreshToken::issue(&rng, session, 0).unwrap();
        let b = RefreshToken::issue(&rng, session, 1).unwrap();
        let other = RefreshToken::issue(&rng, session, 0).unwrap();
        let sealed = a.seal_successor(&b, &rng).unwrap();
        assert_eq!(a.open_successor(&sealed), Some(b.clone()));
        assert_eq!(other.open_successor(&sealed), None);
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(a.open_successor(&tampered), None);
        assert_eq!(a.open_successor(&[]), None);
        // A legacy predecessor seals a chained successor (the first rotation after upgrade).
        let legacy = RefreshToken::parse(&legacy_token(&rng)).unwrap();
        let sealed = legacy.seal_successor(&b, &rng).unwrap();
        assert_eq!(legacy.open_successor(&sealed), Some(b));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a client sends, parsing answers (never panics), and what it accepts is
        /// exactly the text it was given, found by the key its shape implies.
        #[test]
        fn parsing_any_text_is_total(text in any::<String>()) {
            if let Some(token) = RefreshToken::parse(&text) {
                prop_assert_eq!(token.expose(), text.as_str());
                prop_assert_eq!(token.key(), RefreshToken::parse(&text).unwrap().key());
            }
        }

        /// Bodies of every length: accepted exactly when they have one of the two shapes we
        /// issue, and a chained one names the session and generation in its bytes.
        #[test]
        fn only_the_issued_shapes_are_accepted(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let text = format!("tsr_{}", URL_SAFE_NO_PAD.encode(&bytes));
            let parsed = RefreshToken::parse(&text);
            let generation = bytes.get(17..25).map(|g| u64::from_be_bytes(g.try_into().unwrap()));
            let chained = bytes.len() == CHAINED_BYTES
                && bytes[0] == CHAINED_FORMAT
                && generation.is_some_and(|g| g <= i64::MAX as u64);
            prop_assert_eq!(parsed.is_some(), bytes.len() == SECRET_BYTES || chained);
            if let (Some(token), true) = (parsed, chained) {
                let expected = SessionId(uuid::Uuid::from_slice(&bytes[1..17]).unwrap());
                let named = matches!(
                    token.key(),
                    RefreshTokenKey::Chained { session_id, generation: g, .. }
                        if session_id == expected && g as u64 == generation.unwrap()
                );
                prop_assert!(named);
            }
        }

        #[test]
        fn issued_tokens_round_trip(id in any::<u128>(), generation in 0..=i64::MAX) {
            let session = SessionId(uuid::Uuid::from_u128(id));
            let token = RefreshToken::issue(&SystemRandom::new(), session, generation).unwrap();
            let parsed = RefreshToken::parse(token.expose()).unwrap();
            prop_assert_eq!(
                parsed.key(),
                RefreshTokenKey::Chained { session_id: session, generation, hash: token.hash() }
            );
        }
    }
}
