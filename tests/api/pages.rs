//! The built-in pages: served with their security headers, no inline script, every asset
//! they name served too; `pages = false` removes them all.

use reqwest::header::{HeaderName, CONTENT_TYPE};
use reqwest::Response;

use crate::helpers::*;

const PAGES: [&str; 8] = [
    "/", "/login", "/account", "/docs", "/admin", "/forgot", "/reset", "/verify",
];
const ASSETS: [(&str, &str); 5] = [
    ("/pages/brand.css", "text/css"),
    ("/pages/tessera.js", "text/javascript"),
    ("/pages/tessera.css", "text/css"),
    ("/pages/docs.js", "text/javascript"),
    ("/pages/docs.css", "text/css"),
];

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(HeaderName::from_bytes(name.as_bytes()).expect("header name"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The values of `attr="..."` in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

/// Whether `html` has an attribute like ` onclick=`.
fn has_inline_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(at, _)| {
        let rest = &html[at + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

#[tokio::test]
async fn pages_carry_their_security_headers() {
    let app = spawn_app_with(|c| c.admin_page = true).await;
    for page in PAGES {
        let r = app.get(page).await;
        assert_eq!(r.status(), 200, "{page}");
        assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8", "{page}");
        let csp = header(&r, "content-security-policy");
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        for wanted in [
            "frame-ancestors 'none'",
            "script-src 'self'",
            "default-src 'none'",
        ] {
            assert!(
                directives.contains(&wanted),
                "{page}: {wanted} missing from {csp}"
            );
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header(&r, "referrer-policy"), "no-referrer", "{page}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{page}");
        assert_eq!(header(&r, "x-frame-options"), "DENY", "{page}");
        assert_eq!(header(&r, "cache-control"), "no-store", "{page}");
    }
}

#[tokio::test]
async fn pages_have_no_inline_script_and_their_assets_are_served() {
    let app = spawn_app_with(|c| c.admin_page = true).await;
    for page in PAGES {
        let html = app.get(page).await.text().await.expect("page body");
        let scripts = html.matches("<script").count();
        assert!(scripts > 0, "{page} has no script");
        assert_eq!(
            attribute_values(&html, "src").len(),
            scripts,
            "{page}: every script must be a file (the CSP blocks inline ones)"
        );
        assert!(
            !has_inline_handler(&html),
            "{page}: an inline event handler (blocked by the CSP)"
        );
        for url in attribute_values(&html, "src")
            .into_iter()
            .chain(attribute_values(&html, "href"))
        {
            assert!(url.starts_with('/'), "{page} names an asset elsewhere: {url}");
            assert_eq!(app.get(url).await.status(), 200, "{page} names {url}");
        }
    }
    for (path, content_type) in ASSETS {
        let r = app.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            header(&r, CONTENT_TYPE.as_str()).starts_with(content_type),
            "{path}"
        );
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        assert!(!r.text().await.expect("asset body").is_empty(), "{path}");
    }
}

#[tokio::test]
async fn the_root_says_what_this_server_is_and_links_to_what_works() {
    let app = spawn_app().await;
    let r = app.get("/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    let html = r.text().await.expect("body");
    for wanted in ["/login", "/docs", "/healthz", "/openapi.json"] {
        assert!(
            attribute_values(&html, "href").contains(&wanted),
            "no link to {wanted}"
        );
    }
    for url in attribute_values(&html, "href") {
        assert_eq!(app.get(url).await.status(), 200, "/ links to {url}");
    }

    // Without the pages, `/` is JSON naming the documents (and no HTML anywhere).
    let bare = spawn_app_with(|c| c.pages = false).await;
    let r = bare.get("/").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("application/json"));
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["links"]["openapi"], "/openapi.json");
    assert_eq!(bare.get("/docs").await.status(), 404);
}

#[tokio::test]
async fn the_pages_carry_the_configured_brand_and_return_origins() {
    let plain = spawn_app().await;
    let config: serde_json::Value = plain.get("/pages/config.json").await.json().await.expect("JSON");
    assert_eq!(config["product_name"], "Tessera");
    assert_eq!(config["return_to_origins"], serde_json::json!([]));
    let css = plain.get("/pages/brand.css").await.text().await.expect("css");
    assert!(!css.contains("--accent"), "{css}");

    let app = spawn_app_with(|c| {
        c.product_name = Some("Acme Notes".into());
        c.logo_url = Some("https://cdn.acme.example/logo.svg".into());
        c.accent_color = Some("#0a7d4f".into());
        c.return_to_origins = vec!["https://notes.acme.example".into()];
    })
    .await;
    let config: serde_json::Value = app.get("/pages/config.json").await.json().await.expect("JSON");
    assert_eq!(config["product_name"], "Acme Notes");
    assert_eq!(config["logo_url"], "https://cdn.acme.example/logo.svg");
    assert_eq!(
        config["return_to_origins"],
        serde_json::json!(["https://notes.acme.example"])
    );
    let css = app.get("/pages/brand.css").await.text().await.expect("css");
    assert!(css.contains("--accent: #0a7d4f"), "{css}");
    // The logo's origin, and only it, joins the images the pages may show.
    let csp = header(&app.get("/login").await, "content-security-policy");
    assert!(csp.contains("img-src 'self' https://cdn.acme.example;"), "{csp}");
    assert!(!csp.contains("notes.acme.example"), "{csp}");
}

#[test]
fn inline_handlers_are_recognised() {
    assert!(has_inline_handler("<button onclick=\"x()\">"));
    assert!(!has_inline_handler("<p>sign on=now</p><button type=\"button\">"));
}

#[tokio::test]
async fn the_admin_page_is_off_by_default_and_comes_with_the_pages() {
    let app = spawn_app().await;
    assert_problem(app.get("/admin").await, 404, "not_found").await;
    // It signs in through `/login` and shares its script: with the pages off, it is off too.
    let app = spawn_app_with(|c| {
        c.pages = false;
        c.admin_page = true;
    })
    .await;
    assert_problem(app.get("/admin").await, 404, "not_found").await;
}

#[tokio::test]
async fn pages_can_be_turned_off() {
    let app = spawn_app_with(|c| c.pages = false).await;
    // (`/` answers JSON then: `the_root_says_what_this_server_is_and_links_to_what_works`.)
    let pages = PAGES.into_iter().filter(|p| *p != "/");
    for path in pages
        .chain(ASSETS.map(|(path, _)| path))
        .chain(["/pages/config.json"])
    {
        assert_problem(app.get(path).await, 404, "not_found").await;
    }
    // The API itself is untouched.
    assert_eq!(app.get("/healthz").await.status(), 200);
}
