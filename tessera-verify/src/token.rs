//! The pure part of verification: a compact JWS checked against a key set, a time and the
//! expected issuer and audience, with exactly the rules Tessera applies to its own tokens
//! (API.md, "Access tokens").

use std::collections::HashMap;

use serde::Deserialize;
use tessera_jws::{CompactJws, PublicKey as Key};

/// The `typ` of every Tessera access token (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = tessera_jws::ACCESS_TOKEN_TYP;

/// Tessera's ceiling on verifier leeway: a longer one would keep tokens alive that the
/// server itself already refuses.
pub const MAX_LEEWAY_SECS: u64 = 30;

/// What a verified access token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: the user's id (a UUID).
    pub user_id: String,
    /// `sid`: the session (device) the token was issued to.
    pub session_id: String,
    /// Roles granted to the user when the token was issued; may be empty.
    pub roles: Vec<String>,
    /// Seconds since the Unix epoch from which the token is refused.
    pub exp: i64,
    /// Seconds since the Unix epoch when it was issued.
    pub iat: i64,
    /// The token's unique id.
    pub jti: String,
    /// `amr` (RFC 8176): how the holder signed in, e.g. `["pwd"]` or `["pwd", "otp", "mfa"]`;
    /// empty in tokens of older sessions.
    pub amr: Vec<String>,
    /// `auth_time`: seconds since the Unix epoch when the holder signed in or last
    /// reauthenticated; `None` in tokens of older sessions.
    pub auth_time: Option<i64>,
}

impl Claims {
    /// How the holder signed in (RFC 8176 values).
    pub fn amr(&self) -> &[String] {
        &self.amr
    }

    /// When the holder signed in or last reauthenticated (seconds since the epoch).
    pub fn auth_time(&self) -> Option<i64> {
        self.auth_time
    }

    /// Did the holder prove a second factor (`amr` has `mfa`)?
    pub fn has_mfa(&self) -> bool {
        self.amr.iter().any(|a| a == "mfa")
    }
}

/// Why a token was refused by the pure checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, bad signature, wrong `alg`/`typ`/`iss`/`aud`, or a header carrying a key.
    Invalid,
    /// Well-formed, naming a `kid` the key set does not hold (yet: the caller may refetch).
    UnknownKey,
    /// Authentic, but at or past `exp` (plus leeway).
    Expired,
}

/// The claims as they travel. `aud` is a single string: an array is refused, as by Tessera.
#[derive(Deserialize)]
struct Payload {
    iss: String,
    aud: String,
    sub: String,
    sid: String,
    iat: i64,
    exp: i64,
    jti: String,
    roles: Vec<String>,
    #[serde(default)]
    amr: Vec<String>,
    #[serde(default)]
    auth_time: Option<i64>,
}

/// The expectations a token is checked against.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Clock skew forgiven on `exp`, at most [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
}

/// Verifies `token` with `keys` at `now_millis` (Unix time in milliseconds, so the comparison
/// with `exp` is as fine as the server's own).
pub fn verify(
    token: &str,
    keys: &HashMap<String, Key>,
    expected: &Expected<'_>,
    now_millis: i64,
) -> Result<Claims, TokenError> {
    let jws = CompactJws::parse(token).map_err(|_| TokenError::Invalid)?;
    let key = keys.get(jws.kid()).ok_or(TokenError::UnknownKey)?;
    let claims: Payload = jws.verify(key).map_err(|_| TokenError::Invalid)?;
    if claims.iss != expected.issuer || claims.aud != expected.audience {
        return Err(TokenError::Invalid);
    }
    let leeway = expected.leeway_secs.min(MAX_LEEWAY_SECS) as i64;
    // RFC 7519 §4.1.4: refused on or after `exp`.
    if now_millis >= claims.exp.saturating_add(leeway).saturating_mul(1000) {
        return Err(TokenError::Expired);
    }
    Ok(Claims {
        user_id: claims.sub,
        session_id: claims.sid,
        roles: claims.roles,
        exp: claims.exp,
        iat: claims.iat,
        jti: claims.jti,
        amr: claims.amr,
        auth_time: claims.auth_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::{json, Value};
    use tessera_jws::parse_jwks;

    const NOW_MS: i64 = 1_800_000_000_000;

    struct Fixture {
        pair: Ed25519KeyPair,
        keys: HashMap<String, Key>,
    }

    fn fixture() -> Fixture {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwks = json!({"keys": [
            {"kid": "k1", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "x": x},
        ]});
        let keys = parse_jwks(&serde_json::to_vec(&jwks).unwrap()).unwrap();
        Fixture { pair, keys }
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn header() -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k1"})
    }

    fn claims() -> Value {
        json!({
            "iss": "https://auth.test", "aud": "api", "sub": "u-1", "sid": "s-1",
            "iat": NOW_MS / 1000 - 10, "exp": NOW_MS / 1000 + 60, "jti": "j", "roles": ["admin"],
        })
    }

    impl Fixture {
        fn sign(&self, header: &Value, claims: &Value) -> String {
            let input = format!("{}.{}", b64(header), b64(claims));
            let signature = self.pair.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
        }

        fn check(&self, token: &str, now_ms: i64) -> Result<Claims, TokenError> {
            let expected = Expected {
                issuer: "https://auth.test",
                audience: "api",
                leeway_secs: 0,
            };
            verify(token, &self.keys, &expected, now_ms)
        }
    }

    #[test]
    fn a_good_token_yields_its_claims() {
        let f = fixture();
        let claims = f.check(&f.sign(&header(), &claims()), NOW_MS).unwrap();
        assert_eq!(claims.user_id, "u-1");
        assert_eq!(claims.session_id, "s-1");
        assert_eq!(claims.roles, vec!["admin".to_string()]);
        assert_eq!(claims.exp, NOW_MS / 1000 + 60);
    }

    #[test]
    fn how_and_when_the_holder_signed_in_is_read_when_present() {
        let f = fixture();
        let plain = f.check(&f.sign(&header(), &claims()), NOW_MS).unwrap();
        assert!(plain.amr().is_empty() && plain.auth_time().is_none() && !plain.has_mfa());
        let mut two_step = claims();
        two_step["amr"] = json!(["pwd", "otp", "mfa"]);
        two_step["auth_time"] = json!(NOW_MS / 1000 - 30);
        let c = f.check(&f.sign(&header(), &two_step), NOW_MS).unwrap();
        assert_eq!(c.amr(), ["pwd", "otp", "mfa"]);
        assert_eq!(c.auth_time(), Some(NOW_MS / 1000 - 30));
        assert!(c.has_mfa());
    }

    #[test]
    fn headers_outside_the_contract_are_refused() {
        let f = fixture();
        let mut cases = Vec::new();
        for (field, value) in [
            ("typ", json!("JWT")),
            ("alg", json!("none")),
            ("alg", json!("HS256")),
            ("alg", json!("Ed25519")),
            ("alg", json!("eddsa")),
            ("jwk", json!({"kty": "OKP"})),
            ("jku", json!("https://evil.test/jwks")),
            ("x5u", json!("https://evil.test/cert")),
            ("x5c", json!(["MII"])),
            ("crit", json!(["exp"])),
        ] {
            let mut h = header();
            h[field] = value;
            cases.push(h);
        }
        let mut no_typ = header();
        no_typ.as_object_mut().unwrap().remove("typ");
        let mut no_kid = header();
        no_kid.as_object_mut().unwrap().remove("kid");
        cases.extend([no_typ, no_kid]);
        for h in cases {
            assert_eq!(
                f.check(&f.sign(&h, &claims()), NOW_MS),
                Err(TokenError::Invalid),
                "{h}"
            );
        }
        // The control: the same route with the honest header passes.
        assert!(f.check(&f.sign(&header(), &claims()), NOW_MS).is_ok());
    }

    #[test]
    fn an_unknown_kid_is_reported_as_such_so_the_keys_can_be_refetched() {
        let f = fixture();
        let mut h = header();
        h["kid"] = json!("k2");
        assert_eq!(
            f.check(&f.sign(&h, &claims()), NOW_MS),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn claims_outside_the_contract_are_refused() {
        let f = fixture();
        for (field, value) in [
            ("iss", json!("https://other.test")),
            ("aud", json!("other")),
            ("aud", json!(["api"])),
            ("sub", json!(42)),
            ("roles", json!("admin")),
        ] {
            let mut c = claims();
            c[field] = value;
            assert_eq!(
                f.check(&f.sign(&header(), &c), NOW_MS),
                Err(TokenError::Invalid),
                "{field}"
            );
        }
    }

    #[test]
    fn tampering_and_malformed_tokens_are_refused() {
        let f = fixture();
        let good = f.sign(&header(), &claims());
        let (signed, _) = good.rsplit_once('.').unwrap();
        let mut forged_claims = claims();
        forged_claims["roles"] = json!(["admin", "root"]);
        let swapped = format!(
            "{}.{}.{}",
            b64(&header()),
            b64(&forged_claims),
            good.rsplit('.').next().unwrap()
        );
        for token in [
            swapped,
            format!("{signed}."),
            format!("{good}.extra"),
            format!("{signed}.!!!"),
            "a.b".to_string(),
            String::new(),
        ] {
            assert_eq!(f.check(&token, NOW_MS), Err(TokenError::Invalid), "{token}");
        }
    }

    #[test]
    fn expiry_is_exclusive_and_leeway_is_capped_at_30_seconds() {
        let f = fixture();
        let token = f.sign(&header(), &claims());
        let exp_ms = (NOW_MS / 1000 + 60) * 1000;
        assert!(f.check(&token, exp_ms - 1).is_ok());
        assert_eq!(f.check(&token, exp_ms), Err(TokenError::Expired));
        let with = |leeway_secs| Expected {
            issuer: "https://auth.test",
            audience: "api",
            leeway_secs,
        };
        assert!(verify(&token, &f.keys, &with(10), exp_ms + 9_999).is_ok());
        assert_eq!(
            verify(&token, &f.keys, &with(3600), exp_ms + 30_000),
            Err(TokenError::Expired)
        );
    }
}
