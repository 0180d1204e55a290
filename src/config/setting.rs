//! How each type of setting is read and shown. A setting's type (or its marker, for the
//! few whose plain type does not say enough) implements [`Setting`]: the raw value a flag, a
//! variable or the file gives, its parsing, and how the value shows in `Debug` and in
//! `tessera config`. Redaction lives here, once per type: [`Secret`], `MasterKey` and the
//! URL markers never show what they hide.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::modes::{AccessLog, LogFormat, SessionCheck};
use super::secret::Secret;
use super::smtp::SmtpUrl;
use super::values::{
    format_duration, non_empty, parse_bool, parse_duration, parse_feed_credentials, parse_origins,
    redact_url, redact_webhook_url, REDACTED,
};
use crate::crypto::master_key::MasterKey;
use crate::tokens::SigningAlg;

pub(super) trait Setting {
    /// What a flag, a variable or the TOML file gives. Flags and variables are text (or a
    /// number clap parses); the file may give a TOML boolean, number or list.
    type Raw;
    /// The resolved value, the type of the field in `Config`.
    type Value;

    /// The value from its raw form; the message names no secret (the caller names the setting).
    fn parse(raw: Self::Raw) -> Result<Self::Value, String>;

    /// How the value shows in `Config`'s `Debug`.
    fn debug(value: &Self::Value, f: &mut fmt::Formatter<'_>) -> fmt::Result;

    /// The setting's line in `tessera config`, which `--config` reads back; `None`: no line.
    fn print(key: &str, value: &Self::Value) -> Option<String>;
}

/// A value shown as its setting type says, for `Debug`.
pub(super) struct Shown<'a, S: Setting>(&'a S::Value, PhantomData<S>);

impl<'a, S: Setting> Shown<'a, S> {
    pub(super) fn new(value: &'a S::Value) -> Self {
        Shown(value, PhantomData)
    }
}

impl<S: Setting> fmt::Debug for Shown<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        S::debug(self.0, f)
    }
}

/// `key = value` with the value as TOML writes it.
fn line(key: &str, value: impl Into<toml::Value>) -> Option<String> {
    Some(format!("{key} = {}", value.into()))
}

fn not_set(key: &str) -> Option<String> {
    Some(format!("# {key} is not set"))
}

impl Setting for String {
    type Raw = String;
    type Value = String;

    fn parse(raw: String) -> Result<String, String> {
        Ok(raw)
    }

    fn debug(value: &String, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &String) -> Option<String> {
        line(key, value.as_str())
    }
}

/// Counts and sizes: clap parses a flag's number, so a bad one is clap's usage error.
macro_rules! number_setting {
    ($($ty:ty),*) => {$(
        impl Setting for $ty {
            type Raw = $ty;
            type Value = $ty;

            fn parse(raw: $ty) -> Result<$ty, String> {
                Ok(raw)
            }

            fn debug(value: &$ty, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(value, f)
            }

            // As text: a usize beyond TOML's i64 still prints.
            fn print(key: &str, value: &$ty) -> Option<String> {
                Some(format!("{key} = {value}"))
            }
        }
    )*};
}

number_setting!(u32, usize);

/// A duration in a TOML file may be a number of seconds or a string like `15m`; a flag or a
/// variable is always text.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl From<String> for DurationValue {
    fn from(text: String) -> Self {
        DurationValue::Text(text)
    }
}

impl Setting for Duration {
    type Raw = DurationValue;
    type Value = Duration;

    fn parse(raw: DurationValue) -> Result<Duration, String> {
        match raw {
            DurationValue::Seconds(n) => parse_duration(&n.to_string()),
            DurationValue::Text(text) => parse_duration(&text),
        }
    }

    fn debug(value: &Duration, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Duration) -> Option<String> {
        line(key, format_duration(*value))
    }
}

/// A switch: a TOML boolean in the file, text (`true`, `yes`, `on`, `1`...) in a flag or a
/// variable.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "bool")]
pub(super) enum SwitchValue {
    Bool(bool),
    Text(String),
}

impl From<bool> for SwitchValue {
    fn from(value: bool) -> Self {
        SwitchValue::Bool(value)
    }
}

impl From<String> for SwitchValue {
    fn from(text: String) -> Self {
        SwitchValue::Text(text)
    }
}

impl Setting for bool {
    type Raw = SwitchValue;
    type Value = bool;

    fn parse(raw: SwitchValue) -> Result<bool, String> {
        match raw {
            SwitchValue::Bool(value) => Ok(value),
            SwitchValue::Text(text) => parse_bool(&text),
        }
    }

    fn debug(value: &bool, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &bool) -> Option<String> {
        line(key, *value)
    }
}

/// One of a few names: parsed by `FromStr` (forgiving about case), printed by `Display`.
macro_rules! choice_setting {
    ($($ty:ty),*) => {$(
        impl Setting for $ty {
            type Raw = String;
            type Value = $ty;

            fn parse(raw: String) -> Result<$ty, String> {
                raw.parse()
            }

            fn debug(value: &$ty, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(value, f)
            }

            fn print(key: &str, value: &$ty) -> Option<String> {
                line(key, value.to_string())
            }
        }
    )*};
}

choice_setting!(SessionCheck, LogFormat, AccessLog, SigningAlg);

/// An optional secret: an empty value unsets it. Printed as the placeholder its `Serialize`
/// gives (a file read back holds a wrong secret, never the real one).
impl Setting for Option<Secret> {
    type Raw = String;
    type Value = Option<Secret>;

    fn parse(raw: String) -> Result<Option<Secret>, String> {
        Ok(non_empty(raw).map(Secret::from))
    }

    fn debug(value: &Option<Secret>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Option<Secret>) -> Option<String> {
        match value {
            Some(secret) => match toml::Value::try_from(secret) {
                Ok(placeholder) => line(key, placeholder),
                Err(_) => line(key, REDACTED),
            },
            None => not_set(key),
        }
    }
}

/// Secrets listed comma-separated (the revocation feed's credentials): each checked, never
/// quoted in an error, and not even printed as a placeholder, which would read back as a (too
/// short) credential.
impl Setting for Vec<Secret> {
    type Raw = String;
    type Value = Vec<Secret>;

    fn parse(raw: String) -> Result<Vec<Secret>, String> {
        match non_empty(raw) {
            Some(text) => Ok(parse_feed_credentials(&text)?
                .into_iter()
                .map(Secret::from)
                .collect()),
            None => Ok(Vec::new()),
        }
    }

    fn debug(value: &Vec<Secret>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} {REDACTED}>", value.len())
    }

    fn print(key: &str, value: &Vec<Secret>) -> Option<String> {
        match value.len() {
            0 => not_set(key),
            n => Some(format!("# {key}: {n} set, redacted")),
        }
    }
}

/// Marker: role names, comma-separated.
pub(super) enum RoleNames {}

impl Setting for RoleNames {
    type Raw = String;
    type Value = Vec<String>;

    fn parse(raw: String) -> Result<Vec<String>, String> {
        crate::domain::parse_role_names(&raw)
    }

    fn debug(value: &Vec<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Vec<String>) -> Option<String> {
        if value.is_empty() {
            not_set(key)
        } else {
            line(key, value.join(","))
        }
    }
}

/// Marker: custom claim names, comma-separated (reserved names refused).
pub(super) enum ClaimNames {}

impl Setting for ClaimNames {
    type Raw = String;
    type Value = Vec<String>;

    fn parse(raw: String) -> Result<Vec<String>, String> {
        crate::domain::parse_claim_names(&raw)
    }

    fn debug(value: &Vec<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Vec<String>) -> Option<String> {
        if value.is_empty() {
            not_set(key)
        } else {
            line(key, value.join(","))
        }
    }
}

/// Marker: back-office credentials, `NAME:SCOPE:SECRET` comma-separated, each checked (the
/// error names the entry by its place and name, never its secret) and shown like the feed's.
pub(super) enum AdminCredentials {}

impl Setting for AdminCredentials {
    type Raw = String;
    type Value = Vec<Secret>;

    fn parse(raw: String) -> Result<Vec<Secret>, String> {
        let mut out: Vec<Secret> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (i, entry) in raw
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (name, _, _) = crate::domain::parse_admin_credential(entry)
                .map_err(|e| format!("credential {} {e}", i + 1))?;
            if names.iter().any(|n| n == name) {
                return Err(format!("credential {} repeats the name {name:?}", i + 1));
            }
            names.push(name.to_owned());
            out.push(Secret::from(entry.to_owned()));
        }
        Ok(out)
    }

    fn debug(value: &Vec<Secret>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        <Vec<Secret> as Setting>::debug(value, f)
    }

    fn print(key: &str, value: &Vec<Secret>) -> Option<String> {
        <Vec<Secret> as Setting>::print(key, value)
    }
}

/// A master key: base64 of 32 bytes, empty meaning unset; the error never quotes it. Printed
/// as whether it is set only: a placeholder would read back as a (wrong) key.
impl Setting for Option<MasterKey> {
    type Raw = String;
    type Value = Option<MasterKey>;

    fn parse(raw: String) -> Result<Option<MasterKey>, String> {
        non_empty(raw)
            .map(|text| MasterKey::parse(&text))
            .transpose()
            .map_err(|e| e.to_string())
    }

    fn debug(value: &Option<MasterKey>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Option<MasterKey>) -> Option<String> {
        match value {
            Some(_) => Some(format!(
                "# {key} is set ({REDACTED}; give it as TESSERA_{})",
                key.to_uppercase()
            )),
            None => not_set(key),
        }
    }
}

/// Marker: a database URL, shown with its password (and any `password=` parameter) redacted.
pub(super) enum DatabaseUrl {}

impl Setting for DatabaseUrl {
    type Raw = String;
    type Value = String;

    fn parse(raw: String) -> Result<String, String> {
        Ok(raw)
    }

    fn debug(value: &String, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url(value), f)
    }

    fn print(key: &str, value: &String) -> Option<String> {
        line(key, redact_url(value))
    }
}

/// Marker: an optional webhook URL (empty: unset), shown as its scheme and host only: chat
/// services put the webhook's secret in its path.
pub(super) enum WebhookUrl {}

impl Setting for WebhookUrl {
    type Raw = String;
    type Value = Option<String>;

    fn parse(raw: String) -> Result<Option<String>, String> {
        Ok(non_empty(raw))
    }

    fn debug(value: &Option<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&value.as_deref().map(redact_webhook_url), f)
    }

    fn print(key: &str, value: &Option<String>) -> Option<String> {
        match value {
            Some(url) => line(key, redact_webhook_url(url)),
            None => not_set(key),
        }
    }
}

/// CORS origins in a TOML file: a list of strings, or one comma-separated string as in the
/// environment.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OriginsValue {
    List(Vec<String>),
    Text(String),
}

impl From<String> for OriginsValue {
    fn from(text: String) -> Self {
        OriginsValue::Text(text)
    }
}

/// Marker: browser origins allowed to call the API (CORS), printed as a TOML list.
pub(super) enum Origins {}

impl Setting for Origins {
    type Raw = OriginsValue;
    type Value = Vec<String>;

    fn parse(raw: OriginsValue) -> Result<Vec<String>, String> {
        match raw {
            OriginsValue::List(list) => parse_origins(list.iter().map(String::as_str)),
            OriginsValue::Text(text) => parse_origins([text.as_str()]),
        }
    }

    fn debug(value: &Vec<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Vec<String>) -> Option<String> {
        line(key, value.clone())
    }
}

/// Marker: security event names, comma-separated (`all` or none: every one). Printed only
/// when some are chosen.
pub(super) enum Events {}

impl Setting for Events {
    type Raw = String;
    type Value = Vec<String>;

    fn parse(raw: String) -> Result<Vec<String>, String> {
        crate::domain::parse_security_events(&raw)
    }

    fn debug(value: &Vec<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Vec<String>) -> Option<String> {
        if value.is_empty() {
            None
        } else {
            line(key, value.join(","))
        }
    }
}

/// An optional text (empty: unset).
impl Setting for Option<String> {
    type Raw = String;
    type Value = Option<String>;

    fn parse(raw: String) -> Result<Option<String>, String> {
        Ok(non_empty(raw).map(|text| text.trim().to_owned()))
    }

    fn debug(value: &Option<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Option<String>) -> Option<String> {
        match value {
            Some(text) => line(key, text.as_str()),
            None => not_set(key),
        }
    }
}

/// An optional path (empty: unset).
impl Setting for Option<PathBuf> {
    type Raw = String;
    type Value = Option<PathBuf>;

    fn parse(raw: String) -> Result<Option<PathBuf>, String> {
        Ok(non_empty(raw).map(PathBuf::from))
    }

    fn debug(value: &Option<PathBuf>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Option<PathBuf>) -> Option<String> {
        match value {
            Some(path) => line(key, path.display().to_string()),
            None => not_set(key),
        }
    }
}

/// Marker: an optional `http(s)://` base URL (empty: unset), kept without a trailing `/`.
pub(super) enum BaseUrl {}

impl Setting for BaseUrl {
    type Raw = String;
    type Value = Option<String>;

    fn parse(raw: String) -> Result<Option<String>, String> {
        let Some(text) = non_empty(raw) else {
            return Ok(None);
        };
        let text = text.trim().trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                if url.query().is_some() || url.fragment().is_some() {
                    return Err("a base URL has no query or fragment".into());
                }
                Ok(Some(text))
            }
            _ => Err(format!("{text:?} is not an http(s) URL")),
        }
    }

    fn debug(value: &Option<String>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Option<String>) -> Option<String> {
        match value {
            Some(url) => line(key, url.as_str()),
            None => not_set(key),
        }
    }
}

/// The SMTP server, its password a secret: shown (and printed) with the password redacted.
impl Setting for Option<SmtpUrl> {
    type Raw = String;
    type Value = Option<SmtpUrl>;

    fn parse(raw: String) -> Result<Option<SmtpUrl>, String> {
        non_empty(raw).map(|text| SmtpUrl::parse(&text)).transpose()
    }

    fn debug(value: &Option<SmtpUrl>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(value, f)
    }

    fn print(key: &str, value: &Option<SmtpUrl>) -> Option<String> {
        match value {
            Some(url) => line(key, url.redacted()),
            None => not_set(key),
        }
    }
}
