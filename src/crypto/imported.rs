//! Password hashes made by the systems Tessera replaces: bcrypt (`$2a$`, `$2b$`, `$2y$`, any
//! cost) from the Node/Express tutorial stacks, and argon2 PHC strings with other parameters.
//! They verify as they are; a login that verifies one replaces it with our own argon2id.

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Params};

/// The most an imported hash may cost to verify. Beyond these a single login could take
/// hundreds of MiB (argon2 memory) or minutes of CPU (bcrypt cost): `users import` refuses such
/// hashes, and one already stored is never verified (the login fails, with a warning).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 64 * 1024;
pub const MAX_ARGON2_PASSES: u32 = 10;
pub const MAX_ARGON2_LANES: u32 = 4;
pub const MAX_BCRYPT_COST: u32 = 14;

/// Is this a bcrypt hash in one of the variants we verify?
pub fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// Verifies a password against a bcrypt hash (in constant time, by the `bcrypt` crate). As
/// bcrypt always did, only the first 72 bytes of the password count.
pub fn verify_bcrypt(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// Can a hash brought in by `tessera users import` be verified at login? `Err` says why not,
/// without repeating the hash (it is a secret).
pub fn check_importable(hash: &str) -> Result<(), &'static str> {
    if is_bcrypt(hash) {
        let parts: bcrypt::HashParts = hash
            .parse()
            .map_err(|_| "password_hash is not a well-formed bcrypt hash")?;
        if parts.get_cost() < 4 {
            return Err("password_hash has a bcrypt cost under 4");
        }
        return check_cost(hash);
    }
    if hash.starts_with("$argon2") {
        let parsed =
            PasswordHash::new(hash).map_err(|_| "password_hash is not a well-formed argon2 PHC string")?;
        Algorithm::try_from(parsed.algorithm).map_err(|_| "password_hash names an unknown argon2 variant")?;
        Params::try_from(&parsed).map_err(|_| "password_hash has invalid argon2 parameters")?;
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err("password_hash lacks its salt or hash");
        }
        return check_cost(hash);
    }
    Err("password_hash is neither bcrypt ($2a$, $2b$, $2y$) nor an argon2 PHC string")
}

/// Is verifying this hash within the bounds above? Hashes that do not parse are not judged
/// here (they never verify anyway).
pub fn check_cost(hash: &str) -> Result<(), &'static str> {
    if is_bcrypt(hash) {
        return match hash.parse::<bcrypt::HashParts>() {
            Ok(parts) if parts.get_cost() > MAX_BCRYPT_COST => {
                Err("password_hash has a bcrypt cost over 14 (too slow to verify at each login)")
            }
            _ => Ok(()),
        };
    }
    let Some(params) = PasswordHash::new(hash)
        .ok()
        .and_then(|p| Params::try_from(&p).ok())
    else {
        return Ok(());
    };
    if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
        return Err("password_hash uses more than 64 MiB of argon2 memory (m > 65536)");
    }
    if params.t_cost() > MAX_ARGON2_PASSES {
        return Err("password_hash has more than 10 argon2 passes (t > 10)");
    }
    if params.p_cost() > MAX_ARGON2_LANES {
        return Err("password_hash has more than 4 argon2 lanes (p > 4)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bcrypt_variant_verifies_and_only_with_the_right_password() {
        let made = bcrypt::hash_with_result("hunter2", 4).unwrap();
        for version in [
            bcrypt::Version::TwoA,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoY,
        ] {
            let hash = made.format_for_version(version);
            assert!(is_bcrypt(&hash), "{hash}");
            assert_eq!(check_importable(&hash), Ok(()));
            assert!(verify_bcrypt("hunter2", &hash));
            assert!(!verify_bcrypt("hunter3", &hash));
        }
    }

    #[test]
    fn unverifiable_hashes_are_refused_at_import() {
        let bcrypt = bcrypt::hash("hunter2", 4).unwrap();
        for bad in [
            "",
            "plaintext-password",
            "$2x$04$abcdefghijklmnopqrstuu", // $2x$ is the buggy crypt_blowfish variant
            &bcrypt[..40],
            "$argon2id$v=19$m=19456,t=2,p=1",
            "$argon2zz$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "$pbkdf2-sha256$29000$c2FsdA$aGFzaA",
        ] {
            assert!(check_importable(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            check_importable("$argon2i$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g").is_ok()
        );
    }

    #[test]
    fn hashes_too_costly_to_verify_are_refused_at_import() {
        let argon2 = |m: u32, t: u32, p: u32| {
            format!("$argon2id$v=19$m={m},t={t},p={p}$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g")
        };
        assert_eq!(check_importable(&argon2(65536, 10, 4)), Ok(()));
        assert!(check_importable(&argon2(65537, 2, 1))
            .unwrap_err()
            .contains("64 MiB"));
        assert!(check_importable(&argon2(262144, 2, 1))
            .unwrap_err()
            .contains("64 MiB"));
        assert!(check_importable(&argon2(19456, 11, 1))
            .unwrap_err()
            .contains("passes"));
        assert!(check_importable(&argon2(19456, 2, 5))
            .unwrap_err()
            .contains("lanes"));
        // bcrypt's cost is in its text: no need to compute a slow one to test the bound.
        let cheap = bcrypt::hash("hunter2", 4).unwrap();
        assert_eq!(check_importable(&cheap.replacen("$04$", "$14$", 1)), Ok(()));
        assert!(check_importable(&cheap.replacen("$04$", "$15$", 1))
            .unwrap_err()
            .contains("cost over 14"));
        assert!(check_importable(&cheap.replacen("$04$", "$31$", 1)).is_err());
    }
}
