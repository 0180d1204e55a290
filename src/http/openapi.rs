//! The OpenAPI 3.1 document, served at `GET /openapi.json`, generated from the handlers'
//! `#[utoipa::path]` annotations and the `ToSchema` types they answer with, so that it changes
//! with the code. The router (`http::router`) registers each handler with its entry
//! (`utoipa_axum::routes!`): a route is served if and only if it is documented.
//!
//! Left out on purpose: the built-in pages (`/login`, `/account` and their script and style
//! sheet). They are HTML for people, not an API, and `pages = false` unmounts them, so
//! listing them would make the document wrong for API-only deployments.
//!
//! What every operation shares is added by `Conventions` rather than repeated on each handler:
//! the security schemes, the problem document as the body of every error response (4xx and
//! 5xx, `application/problem+json`), `X-Request-Id` on every response, and `Retry-After` on
//! every 429 and 503. A handler's annotation states only each error's status and codes.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi, ToSchema};

use super::cookies::{ACCESS_COOKIE, REFRESH_COOKIE};
use super::error::{Problem, ProblemCode};
use super::request_log::REQUEST_ID;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "An authentication token server: access JWTs, rotating refresh tokens with \
                       reuse detection, device sessions. The reference is `docs/API.md` in its repository; errors \
                       are RFC 9457 problem documents whose `code` is the stable part."
    ),
    // Listed so the enum is in the document even where no response names it directly.
    components(schemas(ProblemCode, Problem)),
    tags(
        (name = "auth", description = "Accounts, sign-in, token refresh and sessions."),
        (name = "email", description = "Flows by mail: verifying the address, password reset, address change, sign-in links."),
        (name = "passkeys", description = "Passkeys (WebAuthn): registering, listing, renaming and removing them, and signing in with one alone."),
        (name = "discovery", description = "What resource servers need to verify access tokens."),
        (name = "admin", description = "The admin API: accounts, sessions, the audit trail, keys and alerts, for administrators and back-office credentials."),
        (name = "operations", description = "Health, metrics and this document.")
    )
)]
struct ApiDoc;

/// The security scheme names the handlers' `security(...)` attributes use.
const BEARER: &str = "bearer";
const ACCESS_COOKIE_SCHEME: &str = "access_cookie";
const REFRESH_COOKIE_SCHEME: &str = "refresh_cookie";
const CSRF_HEADER_SCHEME: &str = "csrf_header";
const RESOURCE_SERVER_SCHEME: &str = "resource_server_credential";
const ADMIN_CREDENTIAL_SCHEME: &str = "admin_credential";

/// What every operation shares; see the module documentation.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let schemes = [
            (
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some("`Authorization: Bearer <access JWT>`."))
                        .build(),
                ),
            ),
            (
                ACCESS_COOKIE_SCHEME,
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    ACCESS_COOKIE,
                    "Cookie transport: the access token. Unsafe methods also need `X-CSRF-Token`.",
                ))),
            ),
            (
                REFRESH_COOKIE_SCHEME,
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    REFRESH_COOKIE,
                    "Cookie transport: the refresh token (sent to `/v1/auth` only).",
                ))),
            ),
            (
                CSRF_HEADER_SCHEME,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "X-CSRF-Token",
                    "Cookie transport: equal to the `tessera_csrf` cookie, on every \
                     cookie-authenticated POST, PUT, PATCH or DELETE (else `403 csrf_failed`).",
                ))),
            ),
            (
                RESOURCE_SERVER_SCHEME,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "`Authorization: Bearer <credential>`: one of \
                             `TESSERA_REVOCATION_FEED_CREDENTIALS`, for resource servers.",
                        ))
                        .build(),
                ),
            ),
            (
                ADMIN_CREDENTIAL_SCHEME,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "`Authorization: Bearer <secret>`: the secret of one of \
                             `TESSERA_ADMIN_CREDENTIALS`, for back-office tools; `admin:read` \
                             allows GET only.",
                        ))
                        .build(),
                ),
            ),
        ];
        for (name, scheme) in schemes {
            components.security_schemes.insert(name.to_owned(), scheme);
        }

        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                add_request_id_parameter(operation);
                add_problem_bodies(operation);
                add_common_headers(operation);
            }
        }
    }
}

/// Every error response's body is a problem document (RFC 9457), whatever its status.
fn add_problem_bodies(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        let is_error = status.starts_with('4') || status.starts_with('5');
        if is_error && response.content.is_empty() {
            let problem = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            response
                .content
                .insert("application/problem+json".to_owned(), problem);
        }
    }
}

/// Every request may name its own id (a proxy's, or a caller's that correlates its logs).
fn add_request_id_parameter(operation: &mut Operation) {
    let parameter = ParameterBuilder::new()
        .name("X-Request-Id")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "The id to log this request under and echo back: 1 to 128 letters, digits and \
             `-_.:/+=@`. Anything else is replaced by an id the server makes.",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    operation.parameters.get_or_insert_with(Vec::new).push(parameter);
}

fn add_common_headers(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        let request_id = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "The request's id (the client's own when it sent a plain one), as logged.",
            ))
            .build();
        response
            .headers
            .insert(REQUEST_ID.as_str().to_owned(), request_id);
        if status == "429" || status == "503" {
            let retry_after = HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
                .description(Some("Whole seconds to wait before trying again."))
                .build();
            response
                .headers
                .insert(header::RETRY_AFTER.as_str().to_owned(), retry_after);
        }
    }
}

/// Headers every response of its status carries (utoipa's `Header` cannot say `required`).
const REQUIRED_HEADERS: [&str; 2] = ["x-request-id", "retry-after"];

/// The document's parts that are no route's: title, description, shared schemas, tags. The
/// router adds the paths.
pub(super) fn base() -> Document {
    ApiDoc::openapi()
}

/// The document as served, built once from the router's list of routes: what every
/// operation shares, then the JSON touches utoipa cannot express.
pub fn json() -> &'static Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, mut doc) = super::api_routes().split_for_parts();
        Conventions.modify(&mut doc);
        // Our own static description, never anything a client sent: failing here is a bug
        // that the router's construction (which calls this) reveals at start.
        let mut doc = serde_json::to_value(doc).expect("the OpenAPI document serializes");
        mark_required_headers(&mut doc);
        optional_bodies_are_absent_not_null(&mut doc);
        Bytes::from(serde_json::to_vec(&doc).expect("a JSON value serializes"))
    })
}

/// Sets `required: true` on the headers in `REQUIRED_HEADERS` wherever a response lists them.
fn mark_required_headers(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut) else {
            continue;
        };
        for (name, header) in headers.iter_mut() {
            if REQUIRED_HEADERS.contains(&name.as_str()) {
                if let Some(header) = header.as_object_mut() {
                    header.insert("required".into(), Value::Bool(true));
                }
            }
        }
    }
}

/// An optional body (`request_body = Option<T>`) comes out of utoipa as "`null` or `T`", but
/// what the handlers accept is "no body, or `T`": a JSON `null` is `400 malformed_request`.
/// `required: false` already says the body may be absent, so the schema becomes `T` alone.
fn optional_bodies_are_absent_not_null(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let media_types = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("requestBody"))
        .filter(|body| body.get("required") != Some(&Value::Bool(true)))
        .filter_map(|body| body.get_mut("content").and_then(Value::as_object_mut))
        .flat_map(|content| content.values_mut());
    for media_type in media_types {
        let Some(schema) = media_type.get_mut("schema") else {
            continue;
        };
        let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) else {
            continue;
        };
        let not_null: Vec<&Value> = alternatives
            .iter()
            .filter(|alternative| alternative.get("type") != Some(&Value::from("null")))
            .collect();
        if let [only] = not_null[..] {
            *schema = only.clone();
        }
    }
}

/// An OpenAPI 3.1 document (the JSON Schema of its own is too large to repeat here).
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON `serve` answers with; never built.
struct OpenApiDocument {
    #[schema(example = "3.1.0")]
    openapi: String,
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This document",
    responses((status = 200, description = "This document.", body = OpenApiDocument))
)]
pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json().clone()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_the_conventions_applied() {
        let doc: Value = serde_json::from_slice(json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let login_429 = &doc["paths"]["/v1/auth/login"]["post"]["responses"]["429"];
        assert_eq!(login_429["headers"]["retry-after"]["required"], true);
        assert_eq!(login_429["headers"]["x-request-id"]["required"], true);
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["access_cookie"]["name"], "tessera_at");
        assert_eq!(schemes["csrf_header"]["in"], "header");
    }

    #[test]
    fn an_optional_body_may_be_absent_but_is_never_null() {
        let doc: Value = serde_json::from_slice(json()).unwrap();
        let body = &doc["paths"]["/v1/auth/logout"]["post"]["requestBody"];
        assert_ne!(body["required"], true);
        assert_eq!(
            body["content"]["application/json"]["schema"],
            serde_json::json!({"$ref": "#/components/schemas/LogoutRequest"})
        );
    }
}
