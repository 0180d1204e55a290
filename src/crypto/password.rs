//! Password hashing with argon2id, on working memory that is allocated once and reused.
//!
//! Each argon2id hash needs 19 MiB. Allocating that per hash made the process keep about
//! 1 GiB of freed heap after a burst of logins (glibc keeps such blocks in its per-thread
//! arenas). A small pool of buffers, one per hash that may run at once, keeps the footprint
//! at `concurrency × 19 MiB` and skips zeroing fresh pages on every login.

use std::fmt;
use std::sync::Mutex;

use argon2::password_hash::{rand_core::OsRng, Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::CryptoError;
use crate::domain::Password;

/// A PHC-format argon2id hash of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashString(pub String);

impl fmt::Debug for PasswordHashString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHashString(<redacted>)")
    }
}

/// Hashes and verifies passwords; safe to share between threads.
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// Spare working memory; a hash takes one buffer and gives it back.
    memory: Mutex<Vec<Vec<Block>>>,
    /// At most this many spare buffers are kept; more are freed on return. The caller bounds
    /// how many hashes run at once, and sets this to that bound.
    pool_limit: usize,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordHasher {
    /// argon2id with OWASP's recommended minimum: 19 MiB, 2 passes, 1 lane; keeps up to
    /// [`DEFAULT_POOL_LIMIT`] spare buffers.
    pub fn new() -> PasswordHasher {
        Self::with_pool_limit(DEFAULT_POOL_LIMIT)
    }

    /// Keeps at most `pool_limit` spare 19 MiB buffers (set it to the number of hashes that
    /// may run at once).
    pub fn with_pool_limit(pool_limit: usize) -> PasswordHasher {
        // The parameters are constants known to be valid, so the default is never used.
        let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
        PasswordHasher {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            memory: Mutex::new(Vec::new()),
            pool_limit,
        }
    }

    pub fn hash(&self, password: &Password) -> Result<PasswordHashString, CryptoError> {
        self.hash_str(password.expose())
    }

    /// Hashes a password that has just verified against a stored hash of another kind
    /// (imported): it met the rules of the system that set it, whatever ours say now.
    pub fn rehash_verified(&self, password: &str) -> Result<PasswordHashString, CryptoError> {
        self.hash_str(password)
    }

    /// Is `stored` anything but our own argon2id with our parameters (an imported bcrypt or
    /// argon2 hash)? Then a login that verifies it replaces it.
    pub fn needs_upgrade(&self, stored: &PasswordHashString) -> bool {
        let Ok(parsed) = PasswordHash::new(&stored.0) else {
            return true;
        };
        parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13.into())
            || !Params::try_from(&parsed).is_ok_and(|p| {
                let ours = self.argon2.params();
                (p.m_cost(), p.t_cost(), p.p_cost()) == (ours.m_cost(), ours.t_cost(), ours.p_cost())
            })
    }

    fn hash_str(&self, password: &str) -> Result<PasswordHashString, CryptoError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes).map_err(hash_error)?;
        let output_len = self
            .argon2
            .params()
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let output = self.compute(&self.argon2, password.as_bytes(), salt_bytes, output_len)?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: self.argon2.params().try_into().map_err(hash_error)?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(PasswordHashString(phc.to_string()))
    }

    /// Recomputes the hash with the stored algorithm, parameters and salt and compares in
    /// constant time (`Output`'s equality). Anything unparsable simply does not match.
    /// A stored hash costlier than the import bounds allow ([`super::imported::check_cost`],
    /// e.g. imported by an older version) is not verified: it does not match, and a warning
    /// says which bound it broke, so an operator can reset that password.
    pub fn verify(&self, password: &str, stored: &PasswordHashString) -> bool {
        if let Err(why) = super::imported::check_cost(&stored.0) {
            tracing::warn!(
                reason = why,
                "a stored password hash is too costly to verify; reset that password"
            );
            return false;
        }
        if super::imported::is_bcrypt(&stored.0) {
            return super::imported::verify_bcrypt(password, &stored.0);
        }
        self.try_verify(password, stored).unwrap_or(false)
    }

    fn try_verify(&self, password: &str, stored: &PasswordHashString) -> Result<bool, CryptoError> {
        let parsed = PasswordHash::new(&stored.0).map_err(hash_error)?;
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(hash_error)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(hash_error)?
            .unwrap_or_default();
        let params = Params::try_from(&parsed).map_err(hash_error)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(hash_error)?;
        let argon2 = Argon2::new(algorithm, version, params);
        let computed = self.compute(&argon2, password.as_bytes(), salt_bytes, expected.len())?;
        Ok(computed == expected)
    }

    /// How many of the hashing budget's units (one unit: the memory of one of our own hashes,
    /// 19 MiB) verifying `stored` takes: an imported argon2 hash with more memory takes more.
    pub fn memory_units(&self, stored: &PasswordHashString) -> u32 {
        let ours = self.argon2.params().m_cost();
        PasswordHash::new(&stored.0)
            .ok()
            .and_then(|p| Params::try_from(&p).ok())
            .map_or(1, |p| p.m_cost().div_ceil(ours).max(1))
    }

    /// A hash with the same parameters as real ones, checked when the email is unknown so
    /// that "no such user" costs as much as "wrong password".
    pub fn dummy_hash(&self) -> Result<PasswordHashString, CryptoError> {
        self.hash(
            &Password::parse("tessera dummy password for timing")
                .map_err(|e| CryptoError::PasswordHash(e.message))?,
        )
    }

    fn compute(
        &self,
        argon2: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        len: usize,
    ) -> Result<Output, CryptoError> {
        let blocks = argon2.params().block_count();
        let mut memory = self.take_memory(blocks);
        let result = Output::init_with(len, |out| {
            argon2
                .hash_password_into_with_memory(password, salt, out, &mut memory[..])
                .map_err(|_| argon2::password_hash::Error::Crypto)
        });
        self.give_back(memory);
        result.map_err(hash_error)
    }

    fn take_memory(&self, blocks: usize) -> Vec<Block> {
        let spare = self.memory.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match spare {
            Some(memory) if memory.len() >= blocks => memory,
            // None spare, or a stored hash with larger parameters than ours: allocate.
            _ => vec![Block::default(); blocks],
        }
    }

    fn give_back(&self, memory: Vec<Block>) {
        // Buffers for our own parameters are kept, up to the limit; others are let go.
        if memory.len() == self.argon2.params().block_count() {
            let mut spare = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            if spare.len() < self.pool_limit {
                spare.push(memory);
            }
        }
    }
}

/// Spare buffers kept by [`PasswordHasher::new`].
pub const DEFAULT_POOL_LIMIT: usize = 4;

fn hash_error(e: impl fmt::Display) -> CryptoError {
    CryptoError::PasswordHash(e.to_string())
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    #[test]
    fn passwords_verify_only_when_right() {
        let hasher = PasswordHasher::new();
        let p = Password::parse("correct horse").unwrap();
        let h = hasher.hash(&p).unwrap();
        assert!(h.0.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(hasher.verify("correct horse", &h));
        assert!(!hasher.verify("wrong horse!", &h));
        assert!(!hasher.verify("correct horse", &PasswordHashString("garbage".into())));
        assert!(!hasher.verify(
            "correct horse",
            &PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1".into())
        ));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher() {
        let hasher = PasswordHasher::new();
        let ours = hasher.hash(&Password::parse("correct horse").unwrap()).unwrap();
        let parsed = PasswordHash::new(&ours.0).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());

        // A hash made elsewhere, with other (weaker) parameters, still verifies here.
        let salt = SaltString::generate(&mut OsRng);
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(hasher.verify("correct horse", &PasswordHashString(theirs.clone())));
        assert!(!hasher.verify("correct horsf", &PasswordHashString(theirs)));
    }

    #[test]
    fn only_our_own_argon2id_needs_no_upgrade() {
        let hasher = PasswordHasher::new();
        let ours = hasher.hash(&Password::parse("correct horse").unwrap()).unwrap();
        assert!(!hasher.needs_upgrade(&ours));
        let bcrypt = PasswordHashString(bcrypt::hash("short", 4).unwrap());
        assert!(hasher.verify("short", &bcrypt));
        assert!(hasher.needs_upgrade(&bcrypt));
        let weaker = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"short", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(hasher.needs_upgrade(&PasswordHashString(weaker)));
        // A password shorter than today's minimum still gets its upgrade.
        let upgraded = hasher.rehash_verified("short").unwrap();
        assert!(!hasher.needs_upgrade(&upgraded));
        assert!(hasher.verify("short", &upgraded));
    }

    #[test]
    fn working_memory_is_reused() {
        let hasher = PasswordHasher::new();
        let h = hasher.hash(&Password::parse("correct horse").unwrap()).unwrap();
        for _ in 0..3 {
            assert!(hasher.verify("correct horse", &h));
        }
        assert_eq!(hasher.memory.lock().unwrap().len(), 1);
    }

    #[test]
    fn the_buffer_pool_never_grows_past_its_limit() {
        let hasher = std::sync::Arc::new(PasswordHasher::with_pool_limit(2));
        let h = hasher.hash(&Password::parse("correct horse").unwrap()).unwrap();
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (hasher, h) = (std::sync::Arc::clone(&hasher), h.clone());
                std::thread::spawn(move || assert!(hasher.verify("correct horse", &h)))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(hasher.memory.lock().unwrap().len() <= 2);
    }

    #[test]
    fn an_imported_hash_takes_budget_units_by_its_memory() {
        let hasher = PasswordHasher::new();
        let ours = hasher.hash(&Password::parse("correct horse").unwrap()).unwrap();
        assert_eq!(hasher.memory_units(&ours), 1);
        let argon2 = |m: u32| {
            PasswordHashString(format!(
                "$argon2id$v=19$m={m},t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g"
            ))
        };
        assert_eq!(hasher.memory_units(&argon2(4096)), 1);
        assert_eq!(hasher.memory_units(&argon2(19457)), 2);
        assert_eq!(hasher.memory_units(&argon2(65536)), 4);
        let bcrypt = PasswordHashString(bcrypt::hash("hunter2", 4).unwrap());
        assert_eq!(hasher.memory_units(&bcrypt), 1);
    }

    #[test]
    fn a_stored_hash_beyond_the_import_bounds_is_never_verified() {
        let hasher = PasswordHasher::new();
        // 256 MiB: computing it would take that much memory. It is refused before.
        let huge = PasswordHashString(
            "$argon2id$v=19$m=262144,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g".into(),
        );
        let started = std::time::Instant::now();
        assert!(!hasher.verify("anything", &huge));
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        let slow = bcrypt::hash("hunter2", 4).unwrap().replacen("$04$", "$20$", 1);
        assert!(!hasher.verify("hunter2", &PasswordHashString(slow)));
    }
}
