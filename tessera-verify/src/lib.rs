//! Verifies Tessera access tokens in Rust resource servers.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tessera_verify::{AuthUser, RequireRole, RoleName, Verifier};
//!
//! struct Admin;
//! impl RoleName for Admin {
//!     const NAME: &'static str = "admin";
//! }
//!
//! # fn app() -> Result<Router, reqwest::Error> {
//! let verifier = Verifier::builder("https://auth.example.com", "my-api").build()?;
//! let app = Router::new()
//!     .route("/me", get(|user: AuthUser| async move { user.user_id }))
//!     .route("/admin", get(|RequireRole(user, _): RequireRole<Admin>| async move { user.user_id }))
//!     .with_state(verifier);
//! # Ok(app) }
//! ```
//!
//! The checks are Tessera's own (API.md, "Access tokens"): a `kid` from Tessera's JWKS, the
//! exact `alg` that key is for (EdDSA, Ed25519, ES256 or RS256), `typ` `at+jwt`, the
//! configured `iss` and a single-string `aud`, `exp` in the future; keys or key URLs in a
//! token's header are never used, and their presence refuses the token.
//!
//! Verification is local: a revoked session's tokens pass here until they expire (at most
//! Tessera's access-token lifetime, 15 minutes by default), unless the verifier follows
//! Tessera's revocation feed ([`Builder::revocation_feed`]), which refuses them within about
//! a second of the revocation. A follower fails closed by default: while the feed has been out
//! of step for over [`DEFAULT_REVOCATION_FEED_MAX_LAG`] (10 s), or before its first catch-up
//! once that long has passed since the start, every token is refused with `503
//! revocations_unavailable`; [`Builder::revocation_feed_fail_open`] chooses the opposite.
//!
//! # Layout
//! - `token`: the pure checks of one access token against a key set and a time: the JOSE
//!   wire rules are `tessera-jws`'s (the same crate the server verifies its own tokens
//!   with), the claims, issuer, audience and expiry are checked here.
//! - `verifier`: [`Verifier`], the fetched and cached key set (refetch on unknown `kid`,
//!   rate-limited; `Cache-Control: max-age`), discovery from the issuer.
//! - `revocations`: the opt-in follower of Tessera's revocation feed.
//! - `extract`: the axum extractors [`AuthUser`], [`RequireRole`] and [`RequireMfa`] (a
//!   second factor: `amr` has `mfa`; `AuthUser::signed_in_within` for a recent sign-in),
//!   problem+json rejections.

mod extract;
mod revocations;
mod token;
mod verifier;

pub use extract::{
    AuthUser, Rejection, RequireMfa, RequireRole, RoleName, ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER,
};
pub use tessera_jws::Alg;
pub use token::{Claims, ACCESS_TOKEN_TYP, MAX_LEEWAY_SECS};
pub use verifier::{
    Builder, Error, Verifier, DEFAULT_REFETCH_INTERVAL, DEFAULT_REVOCATION_FEED_MAX_LAG,
    DEFAULT_REVOCATION_MEMORY,
};
