//! Micro-benchmarks of the pure functions on Tessera's request paths: what a verify or a
//! refresh costs in CPU before any I/O. Run with `cargo bench --bench hot_paths` (release
//! profile); `cargo clippy --all-targets` compiles them, `cargo test` does not run them.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ring::rand::SystemRandom;
use tessera::crypto::RefreshToken;
use tessera::domain::{SessionId, Timestamp, UserId};
use tessera::service::rotation::{decide, RefreshDecision};
use tessera::store::SessionRecord;
use tessera::tokens::{AccessTokens, SigningKeyRecord};

const ISSUER: &str = "http://127.0.0.1:8080";
const AUDIENCE: &str = "tessera";
/// The access-token lifetime Tessera issues by default.
const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

fn key_set(keys: &[SigningKeyRecord]) -> AccessTokens {
    AccessTokens::new(keys, ISSUER, AUDIENCE, now(), ACCESS_TTL).expect("a freshly generated key loads")
}

fn access_tokens(c: &mut Criterion) {
    let keys = [SigningKeyRecord::generate_ed25519(now()).expect("Ed25519 key generation")];
    let tokens = key_set(&keys);
    let (user, session, roles) = (UserId::new(), SessionId::new(), Vec::<String>::new());
    let issue = || {
        let at = now();
        tokens.issue(user, session, &roles, at, at.plus(ACCESS_TTL))
    };

    c.bench_function("jwt/sign", |b| b.iter(|| black_box(issue())));

    // The floor under jwt/sign: one Ed25519 signature over a message the size of a token's
    // signing input. jwt/sign adds only the claims' JSON and base64 to it (the key pair is
    // parsed once per key set, not per token).
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&keys[0].private_pkcs8)
        .expect("the key just generated parses");
    let message = vec![b'x'; 300];
    c.bench_function("jwt/ed25519 signature alone (ring, parsed key)", |b| {
        b.iter(|| black_box(pair.sign(black_box(&message))))
    });

    let token = issue().expect("signed");
    // Every request after a token's first is answered from the verified-token cache.
    tokens.verify(&token, false, now()).expect("valid");
    c.bench_function("jwt/verify (cached)", |b| {
        b.iter(|| black_box(tokens.verify(black_box(&token), false, now())))
    });
    // A token's first verification: Ed25519 and the claim checks. A fresh key set (built
    // outside the timing) has an empty cache, so every timed call is a first one.
    c.bench_function("jwt/verify (first time, uncached)", |b| {
        b.iter_batched_ref(
            || key_set(&keys),
            |fresh| black_box(fresh.verify(black_box(&token), false, now())),
            BatchSize::SmallInput,
        )
    });
}

fn refresh_tokens(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let session = SessionId::new();
    let current = RefreshToken::issue(&rng, session, 41).expect("random");
    let successor = RefreshToken::issue(&rng, session, 42).expect("random");
    let presented = current.expose().to_owned();

    c.bench_function("refresh_token/issue", |b| {
        b.iter(|| black_box(RefreshToken::issue(&rng, session, 42)))
    });
    c.bench_function("refresh_token/hash (SHA-256)", |b| {
        b.iter(|| black_box(current.hash()))
    });
    // What a refresh does with the token it is handed before touching the database.
    c.bench_function("refresh_token/parse and key", |b| {
        b.iter(|| black_box(RefreshToken::parse(black_box(&presented)).map(|t| t.key())))
    });
    c.bench_function("refresh_token/seal successor", |b| {
        b.iter(|| black_box(current.seal_successor(black_box(&successor), &rng)))
    });
    let sealed = current.seal_successor(&successor, &rng).expect("sealed");
    c.bench_function("refresh_token/open successor", |b| {
        b.iter(|| black_box(current.open_successor(black_box(&sealed))))
    });
}

fn rotation_decision(c: &mut Criterion) {
    let now = now();
    let grace = Duration::from_secs(10);
    let session = SessionRecord {
        generation: 5,
        rotated_at: Some(now),
        sealed_current: Some(vec![0; 75]),
        ..SessionRecord::opened(
            UserId::new(),
            now,
            now.plus(Duration::from_secs(90 * 24 * 3600)),
            now.plus(Duration::from_secs(30 * 24 * 3600)),
            vec!["pwd".into()],
            now,
        )
    };
    for (name, generation, expected) in [
        ("rotate", 5, RefreshDecision::Rotate),
        ("replay within grace", 4, RefreshDecision::ReplayCurrent),
        ("reuse", 2, RefreshDecision::Reuse),
    ] {
        assert_eq!(decide(&session, generation, now, grace), expected);
        c.bench_function(&format!("rotation::decide/{name}"), |b| {
            b.iter(|| black_box(decide(black_box(&session), black_box(generation), now, grace)))
        });
    }
}

criterion_group!(benches, access_tokens, refresh_tokens, rotation_decision);
criterion_main!(benches);
