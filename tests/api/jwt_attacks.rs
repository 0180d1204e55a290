//! Forged and tampered access tokens against `GET /v1/auth/me`: every one is `invalid_token`.
//!
//! Where a forgery needs a valid signature, it is signed with the server's own key (read from
//! its database), so that each token differs from a genuine one in exactly the respect under
//! test; `forged_tokens_that_change_nothing_are_accepted` shows such forgeries are otherwise good.

use std::net::TcpListener;

use ring::signature::Ed25519KeyPair;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::jose::{attacker_key, b64, now_secs, server_signing_key, sign_ed25519, sign_hs256, unb64, Jwt};

/// A server, a genuine access token of a live session, and the server's signing key.
struct Target {
    app: TestApp,
    tokens: Value,
    genuine: Jwt,
    kid: String,
    key: Ed25519KeyPair,
}

impl Target {
    async fn new() -> Target {
        let app = spawn_app().await;
        let tokens = app.signup_and_login(EMAIL).await;
        let genuine = Jwt::parse(&s(&tokens, "access_token"));
        let (kid, key) = server_signing_key(&app).await;
        assert_eq!(kid, app.kid().await);
        Target {
            app,
            tokens,
            genuine,
            kid,
            key,
        }
    }

    fn access_token(&self) -> String {
        s(&self.tokens, "access_token")
    }

    /// The genuine header and claims, edited, then validly signed with the server's key.
    fn forge(&self, edit_header: impl FnOnce(&mut Value), edit_claims: impl FnOnce(&mut Value)) -> String {
        let (mut header, mut claims) = (self.genuine.header.clone(), self.genuine.claims.clone());
        edit_header(&mut header);
        edit_claims(&mut claims);
        sign_ed25519(&self.key, &header, &claims)
    }

    fn forge_header(&self, edit: impl FnOnce(&mut Value)) -> String {
        self.forge(edit, |_| {})
    }

    fn forge_claims(&self, edit: impl FnOnce(&mut Value)) -> String {
        self.forge(|_| {}, edit)
    }

    async fn assert_refused(&self, token: &str) {
        // Captured, so shown only when the assertion below fails.
        eprintln!("presenting {token}");
        let r = self.app.me(token).await;
        assert_problem(r, 401, "invalid_token").await;
    }

    async fn assert_all_refused(&self, tokens: &[String]) {
        for token in tokens {
            self.assert_refused(token).await;
        }
    }
}

fn set(key: &'static str, value: Value) -> impl FnOnce(&mut Value) {
    move |v| v[key] = value
}

fn remove(key: &'static str) -> impl FnOnce(&mut Value) {
    move |v| {
        v.as_object_mut().unwrap().remove(key);
    }
}

#[tokio::test]
async fn forged_tokens_that_change_nothing_are_accepted() {
    let t = Target::new().await;
    let same = t.forge(|_| {}, |_| {});
    assert_eq!(
        json_ok(t.app.me(&same).await).await["session_id"],
        t.tokens["session_id"]
    );
    let reordered = sign_ed25519(
        &t.key,
        &json!({"kid": t.kid, "typ": "at+jwt", "alg": "EdDSA"}),
        &t.genuine.claims,
    );
    json_ok(t.app.me(&reordered).await).await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let t = Target::new().await;
    let mut header = t.genuine.header.clone();
    header["alg"] = json!("none");
    let unsigned = Jwt {
        header,
        claims: t.genuine.claims.clone(),
        signature: String::new(),
    };
    let with_signature = Jwt {
        signature: t.genuine.signature.clone(),
        ..unsigned.clone()
    };
    let mut capitalised = unsigned.clone();
    capitalised.header["alg"] = json!("None");
    t.assert_all_refused(&[unsigned.encode(), with_signature.encode(), capitalised.encode()])
        .await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let t = Target::new().await;
    let jwks = t.app.jwks().await;
    let x = s(&jwks["keys"][0], "x");
    let mut header = t.genuine.header.clone();
    header["alg"] = json!("HS256");
    let claims = &t.genuine.claims;
    t.assert_all_refused(&[
        sign_hs256(&unb64(&x), &header, claims),
        sign_hs256(x.as_bytes(), &header, claims),
        sign_hs256(jwks["keys"][0].to_string().as_bytes(), &header, claims),
    ])
    .await;
}

#[tokio::test]
async fn a_stripped_signature_is_refused() {
    let t = Target::new().await;
    let token = t.access_token();
    let (input, _) = token.rsplit_once('.').unwrap();
    t.assert_all_refused(&[format!("{input}."), input.to_owned()])
        .await;
}

#[tokio::test]
async fn a_signature_spliced_onto_other_claims_is_refused() {
    let t = Target::new().await;
    let other = t.app.signup_and_login("mallory@example.com").await;
    let other = Jwt::parse(&s(&other, "access_token"));
    // Mallory's genuine claims under Alice's genuine signature, and the other way round.
    let spliced = Jwt {
        claims: other.claims.clone(),
        ..t.genuine.clone()
    };
    let reversed = Jwt {
        signature: other.signature.clone(),
        ..t.genuine.clone()
    };
    t.assert_all_refused(&[spliced.encode(), reversed.encode()]).await;
}

#[tokio::test]
async fn a_flipped_signature_byte_is_refused() {
    let t = Target::new().await;
    let sig = unb64(&t.genuine.signature);
    let forged: Vec<String> = [0, 31, 32, 63]
        .into_iter()
        .map(|i| {
            let mut flipped = sig.clone();
            flipped[i] ^= 0x01;
            Jwt {
                signature: b64(&flipped),
                ..t.genuine.clone()
            }
            .encode()
        })
        .collect();
    t.assert_all_refused(&forged).await;
}

#[tokio::test]
async fn tampered_claims_under_the_original_signature_are_refused() {
    let t = Target::new().await;
    let other = t.app.signup_and_login("mallory@example.com").await;
    let edits: Vec<(&str, Value)> = vec![
        ("sub", other["user"]["id"].clone()),
        ("sid", other["session_id"].clone()),
        ("exp", json!(now_secs() + 86_400)),
        ("roles", json!(["admin"])),
    ];
    let forged: Vec<String> = edits
        .into_iter()
        .map(|(key, value)| {
            let mut jwt = t.genuine.clone();
            jwt.claims[key] = value;
            jwt.encode()
        })
        .collect();
    t.assert_all_refused(&forged).await;
}

#[tokio::test]
async fn unknown_or_missing_kid_is_refused() {
    let t = Target::new().await;
    let unknown = uuid::Uuid::now_v7().simple().to_string();
    t.assert_all_refused(&[
        t.forge_header(set("kid", json!(unknown))),
        t.forge_header(set("kid", json!(""))),
        t.forge_header(remove("kid")),
    ])
    .await;
}

#[tokio::test]
async fn typ_other_than_at_jwt_is_refused() {
    let t = Target::new().await;
    t.assert_all_refused(&[
        t.forge_header(set("typ", json!("JWT"))),
        t.forge_header(remove("typ")),
    ])
    .await;
}

#[tokio::test]
async fn an_alg_that_does_not_match_the_key_is_refused() {
    let t = Target::new().await;
    t.assert_all_refused(&[
        t.forge_header(set("alg", json!("ES256"))),
        t.forge_header(set("alg", json!("RS256"))),
        t.forge_header(set("alg", json!("Ed25519"))),
    ])
    .await;
}

#[tokio::test]
async fn an_embedded_jwk_is_never_trusted() {
    let t = Target::new().await;
    let (attacker, jwk) = attacker_key();
    let claims = &t.genuine.claims;
    let with_server_kid = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": t.kid, "jwk": jwk});
    let without_kid = json!({"alg": "EdDSA", "typ": "at+jwt", "jwk": jwk});
    t.assert_all_refused(&[
        sign_ed25519(&attacker, &with_server_kid, claims),
        sign_ed25519(&attacker, &without_kid, claims),
    ])
    .await;
}

#[tokio::test]
async fn jku_and_x5u_headers_are_refused_and_never_fetched() {
    let t = Target::new().await;
    // Anything the server fetched would land in this listener's backlog.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let url = format!("http://{}/jwks.json", trap.local_addr().unwrap());
    let (attacker, _) = attacker_key();
    let claims = &t.genuine.claims;
    let mut forged = Vec::new();
    for member in ["jku", "x5u"] {
        for kid in [json!(t.kid), json!("attacker")] {
            let header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, member: url});
            forged.push(sign_ed25519(&attacker, &header, claims));
        }
    }
    forged.push(sign_ed25519(
        &attacker,
        &json!({"alg": "EdDSA", "typ": "at+jwt", "jku": "http://127.0.0.1:9/"}),
        claims,
    ));
    t.assert_all_refused(&forged).await;
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the server connected to a URL from a token header: {other:?}"),
    }
}

#[tokio::test]
async fn a_10_kib_header_is_refused() {
    let t = Target::new().await;
    t.assert_refused(&t.forge_header(set("pad", json!("x".repeat(10 * 1024)))))
        .await;
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_refused() {
    let t = Target::new().await;
    let aud = t.app.config.audience.clone();
    t.assert_all_refused(&[
        t.forge_claims(set("iss", json!("https://evil.example"))),
        t.forge_claims(remove("iss")),
        t.forge_claims(set("aud", json!("someone-else"))),
        t.forge_claims(remove("aud")),
        // The contract allows only a single string.
        t.forge_claims(set("aud", json!([aud]))),
        t.forge_claims(set("aud", json!([aud, "someone-else"]))),
    ])
    .await;
}

#[tokio::test]
async fn claims_naming_another_user_or_session_are_refused() {
    let t = Target::new().await;
    let other = t.app.signup_and_login("mallory@example.com").await;
    t.assert_all_refused(&[
        // Alice's session, Mallory's id: the session does not belong to the subject.
        t.forge_claims(set("sub", other["user"]["id"].clone())),
        t.forge_claims(set("sid", json!(uuid::Uuid::now_v7().to_string()))),
        t.forge_claims(set("sub", json!("not-a-uuid"))),
    ])
    .await;
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let t = Target::new().await;
    t.assert_refused(&t.forge_claims(remove("exp"))).await;
}

#[tokio::test]
async fn expiry_is_checked_without_leeway() {
    let t = Target::new().await;
    let expired = t.forge_claims(set("exp", json!(now_secs() - 2)));
    assert_problem(t.app.me(&expired).await, 401, "token_expired").await;
}

#[tokio::test]
async fn a_token_from_another_tessera_is_refused() {
    let t = Target::new().await;
    let elsewhere = spawn_app_with(|c| {
        c.issuer = "https://elsewhere.example".into();
        c.audience = "elsewhere".into();
    })
    .await;
    let foreign = elsewhere.signup_and_login(EMAIL).await;
    t.assert_refused(&s(&foreign, "access_token")).await;
    let same_settings = spawn_app().await;
    let foreign = same_settings.signup_and_login(EMAIL).await;
    t.assert_refused(&s(&foreign, "access_token")).await;
}

#[tokio::test]
async fn garbage_is_refused() {
    let t = Target::new().await;
    let random = b64(
        &ring::rand::generate::<[u8; 96]>(&ring::rand::SystemRandom::new())
            .unwrap()
            .expose(),
    );
    let garbage: Vec<String> = [
        "",
        "a.b",
        "a.b.c",
        "...",
        "a..c",
        "e30.e30.e30",
        "null.null.null",
        &random,
        &format!("{random}.{random}.{random}"),
        &format!("{}.{}", t.access_token(), t.genuine.signature),
    ]
    .iter()
    .map(|g| g.to_string())
    .collect();
    t.assert_all_refused(&garbage).await;
}
