//! `GET /metrics`: the Prometheus exposition, parsed sample by sample.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::helpers::*;
use crate::rate_limits::assert_rate_limited;

const LOGIN_ROUTE: &str = "/v1/auth/login";
const HISTOGRAM: &str = "tessera_http_request_duration_seconds";

/// One sample line: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses one sample line (no comment, no blank line).
fn parse_sample(line: &str) -> Sample {
    let bad = |why: &str| -> ! { panic!("bad sample line ({why}): {line:?}") };
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad("no value"));
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut inside) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inside.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after_key) = inside.split_once("=\"").unwrap_or_else(|| bad("label"));
            let mut value = String::new();
            let mut chars = after_key.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => bad("escape"),
                    },
                    Some((_, c)) => value.push(c),
                    None => bad("unterminated label value"),
                }
            };
            labels.insert(key.to_owned(), value);
            inside = &after_key[end + 1..];
            inside = inside.strip_prefix(',').unwrap_or(inside);
        }
    }
    let value = rest
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| bad("value"));
    Sample { name, labels, value }
}

/// A scrape of `/metrics`.
struct Scrape(Vec<Sample>);

impl Scrape {
    async fn of(app: &TestApp) -> Scrape {
        let r = app.get("/metrics").await;
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.contains("text"), "content-type {ct}");
        let text = r.text().await.expect("body");
        let samples = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(parse_sample)
            .collect();
        Scrape(samples)
    }

    /// The samples named `name` whose labels include `labels`.
    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> {
        self.0.iter().filter(move |sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample named `name` with `labels` (panics unless there is one).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self.matching(name, labels).collect();
        match found.as_slice() {
            [one] => one.value,
            _ => panic!("{} samples {name} {labels:?}: {found:?}", found.len()),
        }
    }

    /// The sum over the samples named `name` with `labels` (0 if none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|sample| sample.value).sum()
    }
}

#[test]
fn the_sample_parser_reads_names_labels_and_values() {
    let sample = parse_sample(r#"a_total{route="/x",q="say \"hi\"\\"} 3 1700000000"#);
    assert_eq!(sample.name, "a_total");
    assert_eq!(sample.labels["route"], "/x");
    assert_eq!(sample.labels["q"], r#"say "hi"\"#);
    assert_eq!(sample.value, 3.0);
    let sample = parse_sample("b 0.5");
    assert!(sample.labels.is_empty());
    assert_eq!(sample.value, 0.5);
}

#[tokio::test]
async fn metrics_count_logins_refreshes_reuse_and_requests() {
    let app = spawn_app_with(|c| c.reuse_grace = Duration::ZERO).await;
    let t = app.signup_and_login(EMAIL).await;
    let r = app.login_with(EMAIL, "not the password").await;
    assert_problem(r, 401, "invalid_credentials").await;
    app.reuse_refresh_token(&s(&t, "refresh_token")).await;

    let m = Scrape::of(&app).await;
    assert_eq!(m.value("tessera_logins_total", &[("outcome", "success")]), 1.0);
    assert_eq!(m.value("tessera_logins_total", &[("outcome", "failure")]), 1.0);
    assert_eq!(m.value("tessera_refreshes_total", &[("outcome", "success")]), 1.0);
    assert_eq!(m.sum("tessera_refreshes_total", &[]), 2.0);
    assert_eq!(m.value("tessera_refresh_token_reuse_detections_total", &[]), 1.0);
    assert_eq!(m.sum("tessera_rate_limited_total", &[]), 0.0);

    let requests = |route, status| {
        m.value(
            "tessera_http_requests_total",
            &[("route", route), ("method", "POST"), ("status", status)],
        )
    };
    assert_eq!(requests(LOGIN_ROUTE, "200"), 1.0);
    assert_eq!(requests(LOGIN_ROUTE, "401"), 1.0);
    assert_eq!(requests("/v1/auth/register", "201"), 1.0);
    assert_eq!(requests("/v1/auth/refresh", "200"), 1.0);
    assert_eq!(requests("/v1/auth/refresh", "401"), 1.0);

    // The login latency histogram: cumulative buckets ending at +Inf = count = 2 requests.
    let route = [("route", LOGIN_ROUTE), ("method", "POST")];
    let count = m.value(&format!("{HISTOGRAM}_count"), &route);
    assert_eq!(count, 2.0);
    assert!(m.value(&format!("{HISTOGRAM}_sum"), &route) > 0.0);
    let bucket_name = format!("{HISTOGRAM}_bucket");
    let mut buckets: Vec<(f64, f64)> = m
        .matching(&bucket_name, &route)
        .map(|b| (b.labels["le"].parse().expect("le"), b.value))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 1, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)), "{buckets:?}");
}

#[tokio::test]
async fn repeated_requests_add_to_their_series() {
    // A route's counter and histogram are looked up once and then reused per request; every
    // later request must still count, in both.
    let app = spawn_app().await;
    let t = app.signup_and_login(EMAIL).await;
    for _ in 0..3 {
        assert_status(app.me(&s(&t, "access_token")).await, 200).await;
    }
    assert_status(app.me("not-a-token").await, 401).await;
    let m = Scrape::of(&app).await;
    let requests = |status| {
        m.value(
            "tessera_http_requests_total",
            &[("route", "/v1/auth/me"), ("method", "GET"), ("status", status)],
        )
    };
    assert_eq!(requests("200"), 3.0);
    assert_eq!(requests("401"), 1.0);
    let route = [("route", "/v1/auth/me"), ("method", "GET")];
    assert_eq!(m.value(&format!("{HISTOGRAM}_count"), &route), 4.0);
}

#[tokio::test]
async fn metrics_count_rate_limited_requests_by_endpoint() {
    let app = spawn_app_with(|c| c.login_rate = 1).await;
    let r = app.login(EMAIL).await;
    assert_problem(r, 401, "invalid_credentials").await;
    assert_rate_limited(app.login(EMAIL).await).await;
    let m = Scrape::of(&app).await;
    assert_eq!(
        m.value("tessera_rate_limited_total", &[("endpoint", "login")]),
        1.0
    );
    assert_eq!(
        m.sum("tessera_rate_limited_total", &[("endpoint", "refresh")]),
        0.0
    );
}

#[tokio::test]
async fn unknown_methods_share_one_label() {
    // Each made-up method used to become a new, never-forgotten series.
    let app = spawn_app().await;
    for method in ["FOOBAR", "QUUXQUUX"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method token");
        let r = app
            .client
            .request(method, app.url("/nowhere"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404);
    }
    let m = Scrape::of(&app).await;
    assert_eq!(
        m.value(
            "tessera_http_requests_total",
            &[("route", "unmatched"), ("method", "OTHER"), ("status", "404")]
        ),
        2.0
    );
    assert_eq!(m.sum("tessera_http_requests_total", &[("method", "FOOBAR")]), 0.0);
}

#[tokio::test]
async fn reuse_detected_at_logout_is_counted() {
    let app = spawn_app_with(|c| c.reuse_grace = Duration::ZERO).await;
    let t = app.signup_and_login(EMAIL).await;
    app.refresh_ok(&s(&t, "refresh_token")).await;
    // The rotated-out token presented at logout: a stolen copy, reported as reuse.
    assert_status(app.logout_with_refresh_token(&s(&t, "refresh_token")).await, 204).await;
    let m = Scrape::of(&app).await;
    assert_eq!(m.value("tessera_refresh_token_reuse_detections_total", &[]), 1.0);
}
