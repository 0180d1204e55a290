//! `tessera check`: would `tessera serve` start with this configuration, and work? Every
//! finding is one line; problems make the command fail. Nothing is changed: the database is
//! only read (see [`crate::store::inspect`]), no file is created, no key generated.

use std::fmt;

use crate::config::{redact_url, redact_webhook_url, Config};
use crate::crypto::master_key::is_sealed;
use crate::domain::{Clock, SystemClock};
use crate::service::{open_key_set_records, MIN_KEY_PUBLISH_AHEAD};
use crate::store;
use crate::tokens::{signing_key_at, AccessTokens, KeyStage, SigningKeyRecord};

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Checked and fine.
    Ok,
    /// Fine, but worth knowing (`serve` will do something on its own first).
    Note,
    /// `serve` would fail, or run wrongly.
    Problem,
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Ok => "ok",
            Severity::Note => "note",
            Severity::Problem => "problem",
        };
        write!(f, "{label}: {}", self.message)
    }
}

fn finding(severity: Severity, message: impl Into<String>) -> Finding {
    Finding {
        severity,
        message: message.into(),
    }
}

/// Checks the settings `Config::load` cannot judge alone, the database and the signing keys.
pub async fn check(config: &Config) -> Vec<Finding> {
    let mut findings = check_settings(config).await;
    findings.extend(check_mail(config).await);
    let database = redact_url(&config.database_url);
    let inspection = match store::inspect(&config.database_url).await {
        Ok(inspection) => inspection,
        Err(e) => {
            findings.push(finding(Severity::Problem, format!("database {database}: {e}")));
            return findings;
        }
    };
    if !inspection.exists {
        findings.push(finding(
            Severity::Note,
            format!(
                "database {database} does not exist yet; `tessera serve` or `tessera migrate` creates it"
            ),
        ));
        return findings;
    }
    let (applied, latest) = (inspection.schema_version, inspection.latest_schema_version);
    findings.push(if applied > latest {
        finding(
            Severity::Problem,
            format!("database {database} is at schema version {applied}, newer than this release's {latest}: run the release that migrated it"),
        )
    } else if applied < latest {
        finding(
            Severity::Note,
            format!("database {database} reachable; {} of {latest} migrations pending, `tessera serve` or `tessera migrate` applies them", latest - applied),
        )
    } else {
        finding(
            Severity::Ok,
            format!("database {database} reachable, schema up to date (version {applied})"),
        )
    });
    findings.extend(check_keys(config, &inspection.signing_keys));
    findings
}

async fn check_settings(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    match reqwest::Url::parse(&config.issuer) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        _ => findings.push(finding(
            Severity::Problem,
            format!(
                "issuer {:?} is not an http(s) URL: resource servers and discovery use it as the server's address",
                config.issuer
            ),
        )),
    }
    if let Some(url) = &config.alert_webhook_url {
        if let Err(e) = crate::alerts::Webhook::new(url, config.alert_webhook_secret.as_deref()) {
            // Its message may quote the URL, whose path can be the webhook's secret.
            let said = e.replace(url.as_str(), &redact_webhook_url(url));
            findings.push(finding(Severity::Problem, format!("alert webhook: {said}")));
        }
    }
    let listen = config.listen_addr();
    match tokio::net::lookup_host(listen.as_str())
        .await
        .map(|addrs| addrs.count())
    {
        Ok(n) if n > 0 => {}
        Ok(_) => findings.push(finding(
            Severity::Problem,
            format!("listen address {listen:?} resolves to nothing"),
        )),
        Err(e) => findings.push(finding(
            Severity::Problem,
            format!("listen address {listen:?} is not an address: {e}"),
        )),
    }
    if findings.is_empty() {
        findings.push(finding(Severity::Ok, "configuration"));
    }
    findings
}

/// The mail templates load, and the SMTP server answers: connects, greets (with STARTTLS and
/// AUTH as configured) and takes a NOOP.
async fn check_mail(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Err(e) = crate::startup::mail::templates(config) {
        findings.push(finding(Severity::Problem, e.to_string()));
    } else if let Some(dir) = &config.mail_templates {
        findings.push(finding(
            Severity::Ok,
            format!("mail templates from {} load", dir.display()),
        ));
    }
    let Some(url) = &config.smtp_url else {
        findings.push(finding(
            Severity::Note,
            "no SMTP server (TESSERA_SMTP_URL): `tessera serve` writes mails to the log instead of sending them",
        ));
        return findings;
    };
    let server = url.redacted();
    let public = config.public_url();
    let local = reqwest::Url::parse(public)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
        })
        .is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost")
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
        });
    if local {
        findings.push(finding(
            Severity::Note,
            format!("links in mails point at {public}, which only this machine reaches: set TESSERA_PUBLIC_URL (or TESSERA_ISSUER) to the server's public address"),
        ));
    }
    let transport = match crate::startup::mail::transport(config) {
        Ok(transport) => transport,
        Err(e) => {
            findings.push(finding(Severity::Problem, format!("SMTP server {server}: {e}")));
            return findings;
        }
    };
    let answered = tokio::time::timeout(SMTP_CHECK_TIMEOUT, transport.test_connection())
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", SMTP_CHECK_TIMEOUT.as_secs())));
    findings.push(match answered {
        Ok(()) => finding(Severity::Ok, format!("SMTP server {server} answers")),
        Err(e) => finding(
            Severity::Problem,
            format!("SMTP server {server} does not answer as it should: {e}"),
        ),
    });
    findings
}

/// How long `check` waits for the SMTP server's answers in all.
const SMTP_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Builds the key set exactly as `serve` would at this moment: a key it would refuse (a
/// private part that does not match its public one, an unknown algorithm, a sealed one the
/// master key does not open) is a problem. Keys stored in clear are noted.
fn check_keys(config: &Config, keys: &[SigningKeyRecord]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let sealed = keys.iter().filter(|k| is_sealed(&k.private_pkcs8)).count();
    let in_clear = keys
        .iter()
        .filter(|k| k.revoked_at.is_none() && !is_sealed(&k.private_pkcs8))
        .count();
    if config.master_key.is_none() && sealed > 0 {
        // Said once, as the problem the key set below reports: they cannot be opened.
    } else if config.master_key.is_none() {
        findings.push(finding(
            Severity::Note,
            "TESSERA_MASTER_KEY is not set: private signing keys are stored in clear in the database",
        ));
    } else if in_clear > 0 {
        findings.push(finding(
            Severity::Note,
            format!("{in_clear} private signing key(s) stored in clear: `tessera keys encrypt` encrypts them with TESSERA_MASTER_KEY"),
        ));
    } else if sealed > 0 {
        findings.push(finding(Severity::Ok, "private signing keys encrypted at rest"));
    }
    if config.key_publish_ahead < MIN_KEY_PUBLISH_AHEAD {
        findings.push(finding(
            Severity::Note,
            format!(
                "key_publish_ahead {} s is shorter than the JWKS max-age plus the key reload interval ({} s): verifiers caching the JWKS may meet a rotated key before they know it",
                config.key_publish_ahead.as_secs(),
                MIN_KEY_PUBLISH_AHEAD.as_secs()
            ),
        ));
    }
    if keys.is_empty() {
        findings.push(finding(
            Severity::Note,
            "no signing key yet; `tessera serve` creates one at its first start",
        ));
        return findings;
    }
    let now = SystemClock.now();
    let policy = crate::startup::policy(config).keys;
    let grace = policy.retired_grace;
    let built = open_key_set_records(keys, now, &policy)
        .map_err(|e| e.to_string())
        .and_then(|opened| {
            AccessTokens::new(&opened, &config.issuer, &config.audience, now, grace)
                .map_err(|e| e.to_string())
        });
    findings.push(match built {
        Ok(_) => {
            let count = |stage| {
                keys.iter()
                    .filter(|k| k.stage_at(keys, now, grace) == stage)
                    .count()
            };
            let (next, retired) = (count(KeyStage::Next), count(KeyStage::Retired));
            let active = signing_key_at(keys, now);
            let newest = keys.iter().filter(|k| k.active).max_by_key(|k| k.created_at);
            let described = active.map_or_else(String::new, |k| format!("{} ({})", k.kid, k.alg));
            let summary = format!("signing keys: active {described}, {next} next, {retired} retired still verifying");
            match newest {
                Some(k) if k.alg != config.signing_alg.as_str() => finding(
                    Severity::Note,
                    format!(
                        "{summary}; signing_alg is {}, so `tessera serve` will rotate to a new {} key at start",
                        config.signing_alg, config.signing_alg
                    ),
                ),
                _ => finding(Severity::Ok, summary),
            }
        }
        Err(e) => finding(Severity::Problem, format!("signing keys: {e}")),
    });
    findings
}
