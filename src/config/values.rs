//! The values settings take: durations, switches, origins, feed credentials, and the
//! redaction of URLs that may carry a password.

use std::time::Duration;

/// What a secret shows instead of itself.
pub(super) const REDACTED: &str = "<redacted>";

/// A webhook URL fit to show: scheme and host only. Chat and incident services put the
/// webhook's secret in its path (`/services/T…/B…/<secret>`), so the path and query go too.
pub fn redact_webhook_url(url: &str) -> String {
    let redacted = redact_url(url);
    match redacted.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.len() == rest.len() {
                redacted
            } else {
                format!("{scheme}://{authority}/{REDACTED}")
            }
        }
        None => REDACTED.to_owned(),
    }
}

/// A duration in the largest unit that shows it exactly (`15m`, `30d`, `90s`, `250ms`);
/// [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A database URL fit for logs: the password of its user-info part and the value of any
/// `password` query parameter replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        // The last `@` ends the user info (a password may hold unencoded `/` or `@`).
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host_and_path)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}@{host_and_path}"),
                None => head.to_owned(),
            },
            None => head.to_owned(),
        },
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={REDACTED}"),
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// The shortest resource-server credential accepted: guessing one must be out of reach.
pub const MIN_FEED_CREDENTIAL_LEN: usize = 32;

pub(super) fn parse_feed_credentials(text: &str) -> Result<Vec<String>, String> {
    let credentials: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    // Never quote the value: it is a secret.
    for (i, credential) in credentials.iter().enumerate() {
        if credential.len() < MIN_FEED_CREDENTIAL_LEN {
            return Err(format!(
                "credential {} is shorter than {MIN_FEED_CREDENTIAL_LEN} characters",
                i + 1
            ));
        }
        if !credential.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "credential {} has characters other than printable ASCII",
                i + 1
            ));
        }
    }
    Ok(credentials)
}

/// `90`, `90s`, `15m`, `12h`, `30d` (also `500ms`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use e.g. 30, 10s, 15m, 12h, 30d)"))?;
    let secs_per_unit = match unit.trim() {
        "" | "s" => 1,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} has an unknown unit (use s, m, h or d)")),
    };
    n.checked_mul(secs_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Origins separated by commas or whitespace, each exactly `http(s)://host[:port]` as a browser
/// sends it in `Origin` (lower-cased here, as browsers do). A wildcard is refused: credentials
/// may only ever go to origins someone listed by name.
pub fn parse_origins<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for text in texts {
        for raw in text.split(|c: char| c == ',' || c.is_whitespace()) {
            if raw.is_empty() {
                continue;
            }
            let origin = parse_origin(raw)?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
    }
    Ok(origins)
}

fn parse_origin(raw: &str) -> Result<String, String> {
    if raw.contains('*') || raw.eq_ignore_ascii_case("null") {
        return Err(format!(
            "{raw:?}: list each origin by name (no wildcards, no \"null\")"
        ));
    }
    let origin = raw.to_ascii_lowercase();
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("{raw:?} is not an origin: it must start with https:// or http://"))?;
    if host.ends_with('/') {
        return Err(format!("{raw:?}: an origin has no path; drop the trailing \"/\""));
    }
    let well_formed = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !well_formed {
        return Err(format!(
            "{raw:?} is not an origin (scheme://host[:port], nothing more)"
        ));
    }
    // Browsers leave the scheme's default port out of `Origin`; so must we, or it never matches.
    let default_port = if origin.starts_with("https://") {
        ":443"
    } else {
        ":80"
    };
    Ok(match origin.strip_suffix(default_port) {
        Some(without) => without.to_owned(),
        None => origin,
    })
}

pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// `None` for an empty (or blank) value: an empty variable or flag unsets an optional setting.
pub(super) fn non_empty(v: String) -> Option<String> {
    Some(v).filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_print_in_their_largest_exact_unit() {
        for (d, text) in [
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn feed_credentials_are_long_and_never_quoted_in_errors() {
        let long = "feedcredential-0123456789abcdef0123456789";
        let credentials = parse_feed_credentials(&format!(" {long} ,, {long}x ")).unwrap();
        assert_eq!(credentials, [long.to_owned(), format!("{long}x")]);
        let err = parse_feed_credentials(&format!("{long},tooshortsecret")).unwrap_err();
        assert!(err.contains("credential 2") && !err.contains("tooshort"), "{err}");
        let err = parse_feed_credentials(&format!("{long} é{long}")).unwrap_err();
        assert!(
            err.contains("credential 1") && !err.contains("feedcredential"),
            "{err}"
        );
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://tessera:pw@db:5432/t?sslmode=require"),
            "postgres://tessera:<redacted>@db:5432/t?sslmode=require"
        );
        assert_eq!(redact_url("sqlite://tessera.db"), "sqlite://tessera.db");
        assert_eq!(redact_url("postgres://tessera@db/t"), "postgres://tessera@db/t");
        assert_eq!(
            redact_webhook_url("https://hooks.example.com/services/T0/B0/s3cret"),
            "https://hooks.example.com/<redacted>"
        );
        assert_eq!(
            redact_webhook_url("https://hooks.example.com"),
            "https://hooks.example.com"
        );
        assert_eq!(redact_webhook_url("not a url"), "<redacted>");
    }

    #[test]
    fn cors_origins_are_exact_origins() {
        assert_eq!(
            parse_origins(["https://App.example.com, http://localhost:5173"]),
            Ok(vec![
                "https://app.example.com".to_owned(),
                "http://localhost:5173".to_owned()
            ])
        );
        assert_eq!(parse_origins(["", " , "]), Ok(vec![]));
        assert_eq!(
            parse_origins(["https://a.example:443 http://b.example:80 https://c.example:8443"]),
            Ok(vec![
                "https://a.example".to_owned(),
                "http://b.example".to_owned(),
                "https://c.example:8443".to_owned()
            ])
        );
        assert_eq!(
            parse_origins(["http://[::1]:8080 http://[::1]:8080"]),
            Ok(vec!["http://[::1]:8080".to_owned()])
        );
        for bad in [
            "*",
            "https://*.example.com",
            "null",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "https://",
        ] {
            assert!(parse_origins([bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn switches_read_as_operators_write_them() {
        for on in ["true", "1", "yes", "ON "] {
            assert_eq!(parse_bool(on), Ok(true), "{on}");
        }
        for off in ["false", "0", "no", "Off"] {
            assert_eq!(parse_bool(off), Ok(false), "{off}");
        }
        assert_eq!(
            parse_bool("maybe"),
            Err("\"maybe\" is not true or false".to_owned())
        );
    }
}
