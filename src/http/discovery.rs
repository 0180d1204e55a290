//! Discovery: authorization server metadata (RFC 8414) at
//! `/.well-known/oauth-authorization-server`, and the same document at
//! `/.well-known/openid-configuration`, where many gateways and libraries look for it when
//! they are configured with an issuer URL instead of a JWKS URL.
//!
//! The document claims only what Tessera does. Tessera is not an OAuth 2.0 authorization
//! server: its login and refresh take JSON, not `grant_type` forms, and its logout is not RFC
//! 7009 revocation, so there is no `token_endpoint`, `revocation_endpoint` or
//! `authorization_endpoint`, and `response_types_supported` and `grant_types_supported` are
//! empty (RFC 8414 §2 requires the first; an absent second would mean "authorization_code and
//! implicit"). What resource servers need is there under its standard name, `issuer` and
//! `jwks_uri`; Tessera's own endpoints, the audience of its access tokens and their
//! algorithms, for which no standard field exists, are under `tessera_`-prefixed extension
//! names (a verifier configured with the issuer alone learns the audience from it).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::AppState;

/// The metadata fixed at start (everything but the algorithms, which follow the key set).
pub struct Discovery {
    fixed: Value,
}

impl Discovery {
    /// Endpoint URLs are the issuer followed by the route, so an issuer with a path
    /// (`https://example.com/auth`, behind a proxy that strips it) gets URLs under that path.
    /// The revocation feed is listed only where it is on (`feed_enabled`).
    pub fn new(issuer: &str, audience: &str, feed_enabled: bool) -> Discovery {
        let base = issuer.trim_end_matches('/');
        let url = |path: &str| Value::String(format!("{base}{path}"));
        let fixed = json!({
            "issuer": issuer,
            "jwks_uri": url("/.well-known/jwks.json"),
            "response_types_supported": [],
            "grant_types_supported": [],
            "tessera_endpoints": {
                "register": url("/v1/auth/register"),
                "login": url("/v1/auth/login"),
                "refresh": url("/v1/auth/refresh"),
                "logout": url("/v1/auth/logout"),
                "logout_all": url("/v1/auth/logout-all"),
                "password": url("/v1/auth/password"),
                "sessions": url("/v1/auth/sessions"),
                "me": url("/v1/auth/me"),
            },
            "tessera_access_token_typ": crate::tokens::ACCESS_TOKEN_TYP,
            "tessera_audience": audience,
        });
        let mut fixed = fixed;
        if feed_enabled {
            fixed["tessera_endpoints"]["revocations"] = url("/v1/revocations");
        }
        Discovery { fixed }
    }

    /// The document with the algorithms of the keys published now: a verifier must accept
    /// each of them until the retired ones leave the JWKS.
    fn document(&self, jwks: &Value) -> Value {
        let mut algs: Vec<&str> = jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|key| key["alg"].as_str())
            .collect();
        algs.sort_unstable();
        algs.dedup();
        let mut document = self.fixed.clone();
        if let Some(fields) = document.as_object_mut() {
            fields.insert(
                "tessera_access_token_signing_alg_values_supported".into(),
                json!(algs),
            );
        }
        document
    }
}

/// Authorization server metadata (RFC 8414): what resource servers need under standard names,
/// Tessera's own endpoints and algorithms under `tessera_` ones. No OAuth 2.0 endpoints: login
/// and refresh take JSON, not `grant_type` forms.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON `Discovery::document` builds; never built.
struct Metadata {
    issuer: String,
    jwks_uri: String,
    /// Always empty: Tessera is not an OAuth 2.0 authorization server.
    response_types_supported: Vec<String>,
    /// Always empty, as `response_types_supported`.
    grant_types_supported: Vec<String>,
    /// Tessera's own endpoints by name (`login`, `refresh`, ...), as absolute URLs.
    tessera_endpoints: HashMap<String, String>,
    #[schema(example = "at+jwt")]
    tessera_access_token_typ: String,
    /// The `aud` of every access token (`TESSERA_AUDIENCE`).
    #[schema(example = "tessera")]
    tessera_audience: String,
    /// The `alg` of every key in the JWKS.
    tessera_access_token_signing_alg_values_supported: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "discovery",
    summary = "Authorization server metadata (RFC 8414)",
    responses((status = 200, description = "Authorization server metadata (RFC 8414).", body = Metadata))
)]
pub async fn metadata(State(state): State<AppState>) -> Response {
    let document = state.discovery.document(&state.service.keys().jwks());
    // As short as the JWKS's: the algorithm list changes with a rotation.
    ([(header::CACHE_CONTROL, "public, max-age=60")], Json(document)).into_response()
}

/// The same document where OpenID Connect clients look for it.
#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "discovery",
    summary = "The same metadata, where OpenID Connect clients look",
    responses((status = 200, description = "The same document as `/.well-known/oauth-authorization-server`.", body = Metadata))
)]
pub async fn openid_configuration(state: State<AppState>) -> Response {
    metadata(state).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_issuer_and_algorithms_the_keys() {
        let d = Discovery::new("https://auth.example.com/tenant/", "orders-api", true);
        let jwks = json!({"keys": [{"alg": "ES256"}, {"alg": "EdDSA"}, {"alg": "ES256"}]});
        let doc = d.document(&jwks);
        assert_eq!(doc["issuer"], "https://auth.example.com/tenant/");
        assert_eq!(doc["tessera_audience"], "orders-api");
        assert_eq!(
            doc["jwks_uri"],
            "https://auth.example.com/tenant/.well-known/jwks.json"
        );
        assert_eq!(
            doc["tessera_endpoints"]["refresh"],
            "https://auth.example.com/tenant/v1/auth/refresh"
        );
        assert_eq!(
            doc["tessera_access_token_signing_alg_values_supported"],
            json!(["ES256", "EdDSA"])
        );
        assert_eq!(
            doc["tessera_endpoints"]["revocations"],
            "https://auth.example.com/tenant/v1/revocations"
        );
        let without_feed = Discovery::new("https://auth.example.com/", "tessera", false).document(&jwks);
        assert!(without_feed["tessera_endpoints"].get("revocations").is_none());
        for absent in ["token_endpoint", "revocation_endpoint", "authorization_endpoint"] {
            assert!(doc.get(absent).is_none(), "{absent}");
        }
    }
}
