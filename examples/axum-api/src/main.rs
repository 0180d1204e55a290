//! An example resource server that accepts Tessera's access tokens.
//!
//! `GET /orders` and `POST /orders` take any signed-in caller ([`AuthUser`]: a bearer token,
//! or the access cookie, with the CSRF header on `POST`); `GET /admin/report` takes only
//! callers with the `admin` role ([`RequireRole`]).
//!
//! Configuration, from the environment: `TESSERA_ISSUER` (required) and `TESSERA_AUDIENCE`
//! (default `tessera`) as Tessera is configured; `TESSERA_JWKS_URL` (default: found through
//! the issuer's discovery metadata); `LISTEN` (default `127.0.0.1:3000`). Prints
//! `listening on http://ADDR` once the socket is bound.
//!
//! With `TESSERA_REVOCATION_FEED_CREDENTIAL` (one of Tessera's
//! `TESSERA_REVOCATION_FEED_CREDENTIALS`) it follows Tessera's revocation feed, at
//! `TESSERA_REVOCATION_FEED_URL` or under the issuer, and refuses a revoked session's tokens
//! within about a second.

use std::io::Write as _;

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tessera_verify::{AuthUser, RequireRole, RoleName, Verifier};

struct Admin;

impl RoleName for Admin {
    const NAME: &'static str = "admin";
}

async fn list_orders(user: AuthUser) -> Json<Value> {
    Json(json!({ "user_id": user.user_id, "session_id": user.session_id, "orders": [] }))
}

async fn create_order(user: AuthUser) -> (StatusCode, Json<Value>) {
    (StatusCode::CREATED, Json(json!({ "created_by": user.user_id })))
}

async fn admin_report(RequireRole(user, _): RequireRole<Admin>) -> Json<Value> {
    Json(json!({ "report": "all orders", "for": user.user_id, "roles": user.roles }))
}

fn app(verifier: Verifier) -> Router {
    Router::new()
        .route("/orders", get(list_orders).post(create_order))
        .route("/admin/report", get(admin_report))
        .with_state(verifier)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = std::env::var("TESSERA_ISSUER").map_err(|_| "TESSERA_ISSUER is required")?;
    let audience = std::env::var("TESSERA_AUDIENCE").unwrap_or_else(|_| "tessera".into());
    let mut builder = Verifier::builder(issuer, audience);
    if let Ok(url) = std::env::var("TESSERA_JWKS_URL") {
        builder = builder.jwks_url(url);
    }
    if let Ok(credential) = std::env::var("TESSERA_REVOCATION_FEED_CREDENTIAL") {
        builder = builder.revocation_feed(credential);
        if let Ok(url) = std::env::var("TESSERA_REVOCATION_FEED_URL") {
            builder = builder.revocation_feed_url(url);
        }
    }
    let verifier = builder.build()?;
    // A wrong URL shows at start rather than as 503s; an unreachable Tessera is retried later.
    if let Err(e) = verifier.prefetch().await {
        eprintln!("warning: {e}");
    }
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    axum::serve(listener, app(verifier))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
