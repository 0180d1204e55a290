//! `GET /openapi.json`: an OpenAPI 3.1 document that lists every route the router serves (the
//! built-in pages aside, see `src/http/openapi.rs`) and every problem `code` of the contract.
//! `scripts/test-openapi.sh` then checks the live server's answers against it (schemathesis).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

/// The router's source: every route it mounts must go through the one list that documents
/// it (`utoipa_axum::routes!`), so a plain `.route(` there would be a route the document
/// could miss.
const ROUTER_SOURCE: &str = include_str!("../../src/http/mod.rs");

/// Problem codes the server uses beyond those the contract names (the contract leaves timeouts,
/// overload and internal failures to the implementation; the flows by email, second factors
/// and passkeys are its own).
const CODES_BEYOND_THE_CONTRACT: [&str; 26] = [
    "request_timeout",
    "service_unavailable",
    "internal_error",
    "forbidden",
    "invalid_email_token",
    "email_token_expired",
    "email_link_other_browser",
    "email_not_verified",
    "passkeys_disabled",
    "passkey_not_found",
    "passkey_ceremony_invalid",
    "passkey_ceremony_expired",
    "passkey_invalid",
    "passkey_wrong_origin",
    "passkey_unknown",
    "passkey_counter_regressed",
    "passkey_already_registered",
    "mfa_challenge_invalid",
    "mfa_challenge_expired",
    "mfa_challenge_other_browser",
    "invalid_mfa_code",
    "mfa_code_replayed",
    "mfa_already_enabled",
    "mfa_not_enabled",
    "reauthentication_required",
    "second_factor_required",
];

async fn document(app: &TestApp) -> Value {
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        r.headers()
    );
    r.json().await.expect("the document is JSON")
}

/// The problem codes of the contract (`shared/API.md`, "Errors"). A copy, because the tests
/// must run where only the repository is (CI's clean clone); where the contract sits beside
/// the repository, `the_copy_of_the_contracts_codes_is_the_contracts` holds the copy to it.
const CONTRACT_CODES: [&str; 16] = [
    "csrf_failed",
    "email_taken",
    "invalid_credentials",
    "invalid_refresh_token",
    "invalid_token",
    "malformed_request",
    "method_not_allowed",
    "not_found",
    "payload_too_large",
    "rate_limited",
    "refresh_token_expired",
    "refresh_token_reused",
    "session_not_found",
    "session_revoked",
    "token_expired",
    "validation_failed",
];

fn contract_codes() -> BTreeSet<String> {
    CONTRACT_CODES.iter().map(|c| c.to_string()).collect()
}

/// The problem codes `contract` (API.md's text) names in its "Errors" section: the first
/// column of its table, and those the text names as "code `...`".
fn codes_named_in(contract: &str) -> BTreeSet<String> {
    let errors = contract
        .split_once("## Errors")
        .and_then(|(_, after)| after.split_once("\n## "))
        .map(|(section, _)| section)
        .expect("API.md has an Errors section followed by another");
    let mut codes = BTreeSet::new();
    for line in errors.lines() {
        if let Some(cell) = line.strip_prefix("| `") {
            if let Some((code, _)) = cell.split_once('`') {
                codes.insert(code.to_owned());
            }
        }
    }
    // Sentences wrap anywhere, "code" and its name included.
    let text = errors.split_whitespace().collect::<Vec<_>>().join(" ");
    for (at, marker) in text.match_indices("code `") {
        if let Some((code, _)) = text[at + marker.len()..].split_once('`') {
            codes.insert(code.to_owned());
        }
    }
    codes
}

#[test]
fn the_code_reader_finds_what_it_looks_for() {
    let sample = "## Errors\n\n| code | status |\n|---|---|\n| `email_taken` | 409 |\n\
                  Unknown routes answer 404 with code\n`not_found`.\n\n## Endpoints\n| `later` |\n";
    let codes: Vec<String> = codes_named_in(sample).into_iter().collect();
    assert_eq!(codes, ["email_taken", "not_found"]);
}

#[test]
fn the_copy_of_the_contracts_codes_is_the_contracts() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/API.md");
    match std::fs::read_to_string(path) {
        Ok(contract) => assert_eq!(
            codes_named_in(&contract),
            contract_codes(),
            "CONTRACT_CODES differs from {path}"
        ),
        // A clean clone on its own (CI): nothing to compare the copy with.
        Err(e) => eprintln!("note: {path} not readable ({e}); the copy of its codes is not checked"),
    }
}

/// The repository's API reference holds the contract word for word (before its own
/// "Beyond the contract" part), and names every code of it.
#[test]
fn the_api_reference_holds_the_contract() {
    let reference = include_str!("../../docs/API.md");
    let contract_part = reference
        .split("\n# Beyond the contract")
        .next()
        .expect("the reference");
    assert_eq!(codes_named_in(contract_part), contract_codes());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/API.md");
    match std::fs::read_to_string(path) {
        Ok(contract) => {
            // Everything after the contract's title line, as it is.
            let body = contract.split_once('\n').map_or("", |(_, rest)| rest).trim();
            assert!(
                contract_part.contains(body),
                "docs/API.md no longer holds {path} word for word"
            );
        }
        Err(e) => eprintln!("note: {path} not readable ({e}); docs/API.md is not compared with it"),
    }
}

#[tokio::test]
async fn the_document_lists_every_route_the_router_serves() {
    // With the revocation feed on: off, its route answers 404 like an unknown one.
    let app = spawn_app_with(|c| c.revocation_feed_credentials = vec!["c".repeat(32).into()]).await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"].as_object().expect("paths").keys().cloned().collect();
    // Served if and only if documented: the router mounts its API routes only through the
    // list that also builds the document.
    assert!(
        !ROUTER_SOURCE.contains(".route("),
        "src/http/mod.rs mounts a route outside `api_routes()`"
    );
    for path in [
        "/v1/auth/login",
        "/v1/revocations",
        "/.well-known/openid-configuration",
        "/openapi.json",
    ] {
        assert!(documented.contains(path), "{path} missing from {documented:?}");
    }

    // And each documented operation is one the server routes: not a 404 or 405 fallback.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url_path = path.replace("{id}", "01930000-0000-7000-8000-000000000000");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = app
                .client
                .request(method.clone(), app.url(&url_path))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            assert!(
                !body.contains("\"code\":\"not_found\"") && status != 405,
                "{method} {path}: {status} {body}"
            );
        }
    }
}

#[tokio::test]
async fn the_problem_code_enum_is_the_contracts_codes_and_the_documented_extras() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let problem = &doc["components"]["schemas"]["Problem"];
    assert_eq!(
        problem["properties"]["code"]["$ref"],
        "#/components/schemas/ProblemCode"
    );
    let enumerated: BTreeSet<String> = doc["components"]["schemas"]["ProblemCode"]["enum"]
        .as_array()
        .expect("ProblemCode is an enum")
        .iter()
        .map(|c| c.as_str().expect("codes are strings").to_owned())
        .collect();
    let mut expected = contract_codes();
    expected.extend(CODES_BEYOND_THE_CONTRACT.map(str::to_owned));
    assert_eq!(enumerated, expected);
}

#[tokio::test]
async fn problems_headers_and_security_schemes_are_described() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["access_cookie"]["in"], "cookie");
    assert_eq!(schemes["access_cookie"]["name"], "tessera_at");
    assert_eq!(schemes["refresh_cookie"]["name"], "tessera_rt");
    assert_eq!(schemes["csrf_header"]["in"], "header");
    assert_eq!(schemes["csrf_header"]["name"], "X-CSRF-Token");

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let at = format!("{method} {path} {status}");
                let headers = &response["headers"];
                assert_eq!(headers["x-request-id"]["required"], true, "{at}");
                if status == "429" || status == "503" {
                    assert_eq!(headers["retry-after"]["required"], true, "{at}");
                }
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{at}"
                    );
                }
            }
        }
    }
    // The token responses say they may set the cookies, and the rate-limited ones have a 429.
    for path in ["/v1/auth/login", "/v1/auth/refresh", "/v1/auth/password"] {
        let responses = &doc["paths"][path]["post"]["responses"];
        assert!(responses["200"]["headers"]["set-cookie"].is_object(), "{path}");
        assert!(responses["429"].is_object(), "{path}");
    }
    assert!(doc["paths"]["/v1/auth/register"]["post"]["responses"]["429"].is_object());
    let me = &doc["paths"]["/v1/auth/me"]["get"];
    assert_eq!(me["security"][0]["bearer"], serde_json::json!([]));
}

/// The request body schemas describe what the handlers read field by field (they are not the
/// types the handlers deserialize), so this holds them to it: every documented field is read
/// (a number where it wants a string is reported by that name), and every field documented as
/// required is (leaving it out is reported by that name).
#[tokio::test]
async fn request_body_schemas_name_the_fields_the_handlers_read() {
    // The admin API's bodies are read with a back-office credential, on an account of its own.
    let app = spawn_app_with(|c| c.admin_credentials = crate::admin_api::admin_credentials()).await;
    let subject = crate::admin_api::create(&app, "subject@example.com", &[]).await;
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    let mut checked = 0;
    let mut accounts = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(reference) =
                operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
            else {
                continue;
            };
            let name = reference.trim_start_matches("#/components/schemas/");
            let schema = &schemas[name];
            assert!(
                ["post", "patch", "delete"].contains(&method.as_str()),
                "{path}: only POST, PATCH and DELETE bodies are expected"
            );
            let admin = path.starts_with("/v1/admin/");
            let path = path.replace("{id}", &subject);
            // A fresh account per operation: a password change ends the others' sessions.
            let signed_in = operation["security"]
                .as_array()
                .is_some_and(|alternatives| !alternatives.iter().any(|a| a == &serde_json::json!({})));
            let token = if admin {
                Some(crate::admin_api::WRITE_SECRET.to_owned())
            } else if signed_in {
                // Per operation: several may share a body schema.
                accounts += 1;
                let email = format!("{}-{accounts}@example.com", name.to_lowercase());
                Some(s(&app.signup_and_login(&email).await, "access_token"))
            } else {
                None
            };
            let properties = schema["properties"].as_object().expect("an object schema");
            let required: Vec<&str> = schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // Valid strings everywhere (an enum's first value), so only the field under test
            // can be wrong.
            let valid: serde_json::Map<String, Value> = properties
                .iter()
                .map(|(field, property)| {
                    let enumerated = property["$ref"]
                        .as_str()
                        .map(|r| &schemas[r.trim_start_matches("#/components/schemas/")]["enum"][0]);
                    let value = match (enumerated, property["type"].as_str()) {
                        (Some(Value::String(v)), _) => Value::from(v.as_str()),
                        (_, Some("array")) => serde_json::json!([]),
                        (_, Some("boolean")) => Value::Bool(true),
                        (_, Some("object")) => serde_json::json!({}),
                        _ if property["format"] == "email" => Value::from("someone@example.com"),
                        _ => Value::from("a valid-looking string"),
                    };
                    (field.clone(), value)
                })
                .collect();
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let send = |body: Value| {
                let mut request = app.client.request(method.clone(), app.url(&path)).json(&body);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                async move { request.send().await.unwrap() }
            };
            for field in properties.keys() {
                let mut body = valid.clone();
                body.insert(field.clone(), Value::from(12345));
                assert_validation(send(Value::Object(body)).await, &[field]).await;
                checked += 1;
            }
            for field in &required {
                let mut body = valid.clone();
                body.remove(*field);
                assert_validation(send(Value::Object(body)).await, &[field]).await;
            }
        }
    }
    assert!(checked >= 9, "only {checked} documented body fields were found");
}
