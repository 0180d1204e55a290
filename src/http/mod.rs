//! The HTTP layer: routes, extractors and the mapping of errors to problem+json. It calls the
//! service and never touches SQL.

mod account;
mod admin;
mod answer;
mod auth;
mod catch_panic;
pub mod cookies;
mod cors;
pub mod discovery;
pub mod email;
pub mod error;
pub mod extract;
mod feed;
pub mod metrics;
mod mfa;
pub mod openapi;
mod pages;
mod passkeys;
pub mod rate_limit;
pub mod request_log;
mod sessions;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use tower::ServiceBuilder;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::service::AuthService;
use error::ApiError;
use metrics::Metrics;
use rate_limit::RateLimiter;

/// What every handler can reach: one pointer, so that handing it to a request is one atomic
/// increment. (axum clones the state into every request's handler service; with a dozen
/// `Arc` fields that clone and its drop were 4 % of a verify's CPU.)
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    pub service: Arc<AuthService>,
    pub trust_proxy_headers: bool,
    /// The `Secure` attribute of our cookies (off only for plain-HTTP development hosts).
    pub cookie_secure: bool,
    pub login_limit: Arc<RateLimiter>,
    /// Registrations hash a password too: limited at the login rate, counted separately.
    pub register_limit: Arc<RateLimiter>,
    pub refresh_limit: Arc<RateLimiter>,
    /// The admin API's own limit.
    pub admin_limit: Arc<RateLimiter>,
    /// The flows by email, per client network (at the login rate).
    pub email_limit: Arc<RateLimiter>,
    /// The flows that mail an address, per address or account.
    pub email_address_limit: Arc<RateLimiter>,
    pub metrics: Arc<Metrics>,
    /// How long a client may take to send a request body.
    pub client_timeout: std::time::Duration,
    /// The authorization server metadata (`/.well-known/oauth-authorization-server`).
    pub discovery: Arc<discovery::Discovery>,
}

/// Every route with its OpenAPI entry, from the handler's `#[utoipa::path]`: one list, so a
/// route cannot be served undocumented, nor documented unserved (`/openapi.json` is built
/// from the same list).
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::logout_all))
        .routes(routes!(account::change_password))
        .routes(routes!(mfa::verify))
        .routes(routes!(mfa::reauthenticate))
        .routes(routes!(mfa::factors))
        .routes(routes!(mfa::start_totp, mfa::disable_totp))
        .routes(routes!(mfa::confirm_totp))
        .routes(routes!(mfa::regenerate_recovery_codes))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::revoke_session))
        .routes(routes!(account::me, account::update_me))
        .routes(routes!(email::verify_email))
        .routes(routes!(email::resend_verification))
        .routes(routes!(email::forgot_password))
        .routes(routes!(email::reset_password))
        .routes(routes!(email::change_email))
        .routes(routes!(email::confirm_email_change))
        .routes(routes!(email::email_link))
        .routes(routes!(email::email_link_verify))
        .routes(routes!(passkeys::register_options))
        .routes(routes!(passkeys::register))
        .routes(routes!(passkeys::list))
        .routes(routes!(passkeys::rename, passkeys::delete))
        .routes(routes!(passkeys::sign_in_options))
        .routes(routes!(passkeys::sign_in))
        .routes(routes!(passkeys::factor_options))
        .routes(routes!(passkeys::reauthentication_options))
        .routes(routes!(feed::revocations))
        .routes(routes!(admin::list_users, admin::create_user))
        .routes(routes!(admin::show_user, admin::update_user, admin::delete_user))
        .routes(routes!(admin::disable_user))
        .routes(routes!(admin::enable_user))
        .routes(routes!(admin::set_password))
        .routes(routes!(admin::list_user_sessions, admin::revoke_user_sessions))
        .routes(routes!(admin::revoke_session))
        .routes(routes!(admin::audit))
        .routes(routes!(admin::keys))
        .routes(routes!(admin::alerts))
        .routes(routes!(jwks))
        .routes(routes!(discovery::metadata))
        .routes(routes!(discovery::openid_configuration))
        .routes(routes!(healthz))
        .routes(routes!(metrics::render))
        .routes(routes!(openapi::serve))
}

pub fn router(state: AppState, config: &Config) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let (mut routes, _) = api_routes().split_for_parts();
    // Built now, so that a document that cannot be built stops the start, not a request.
    openapi::json();
    if config.pages {
        routes = routes.merge(pages::router(pages::PageSettings::new(config), config.admin_page));
    } else {
        routes = routes.merge(pages::without_pages());
    }
    // Every route, the fallbacks included, runs under these, in this order. They are one
    // stack given to `layer` once: each `layer` call wraps every route in another boxed
    // service that is cloned for every request (docs/BENCHMARKS.md, "Changes measured").
    let every_request = ServiceBuilder::new()
        // Outermost, so its line and its metrics have the status a panic, CORS or any inner
        // layer settled on.
        .layer(request_log::RequestLogLayer::new(metrics, config.access_log))
        // Every answer (errors and panics included) carries the CORS headers a listed origin's
        // script needs to read it.
        .layer(cors::CorsLayer::new(&config.cors_origins))
        .layer(catch_panic::CatchPanicLayer)
        .layer(DefaultBodyLimit::max(config.body_limit));
    routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(every_request)
        .with_state(state)
}

/// A public verification key (RFC 7517); the key's own parameters (`crv`, `x`, `y`, `n`,
/// `e`) follow its `kty`.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON of `AuthService::jwks`; never built.
struct Jwk {
    kty: String,
    kid: String,
    #[schema(example = "EdDSA")]
    alg: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    key_use: String,
}

#[derive(ToSchema)]
#[allow(dead_code)] // As `Jwk`.
struct JwkSet {
    keys: Vec<Jwk>,
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "discovery",
    summary = "The public verification keys (JWKS)",
    responses((status = 200, description = "The public keys that verify access tokens; retired keys stay until their tokens have expired.", body = JwkSet))
)]
async fn jwks(State(state): State<AppState>) -> Response {
    let body = Json(state.service.keys().jwks().as_ref().clone());
    // Short, so resource servers notice a key rotation within a minute; `keys rotate`
    // publishes new keys ahead by more than this plus the instances' reload interval.
    let cache = format!("public, max-age={}", crate::service::JWKS_MAX_AGE.as_secs());
    ([(header::CACHE_CONTROL, cache)], body).into_response()
}

#[derive(Serialize, ToSchema)]
struct Health {
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Whether the database answers",
    responses(
        (status = 200, description = "The database answers.", body = Health),
        (status = 503, description = "`service_unavailable`: the database does not answer"),
    )
)]
async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.service.health().await?;
    Ok(Json(Health { status: "ok" }))
}
