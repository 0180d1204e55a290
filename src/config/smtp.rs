//! `TESSERA_SMTP_URL`: where mail goes, parsed once at load into its parts, with the password
//! a [`Secret`] so that no `Debug`, log line or `tessera config` ever shows it.
//!
//! - `smtp://[user:pass@]host[:port]`: STARTTLS, required (the connection fails rather than
//!   send in clear when the server does not offer it); port 587 by default.
//! - `smtps://[user:pass@]host[:port]`: TLS from the first byte (implicit TLS); port 465.
//! - `smtp://host[:port]?tls=none`: no TLS at all, for a development server on this machine
//!   (port 25 by default). Credentials over it are refused unless the host is a loopback one.

use std::fmt;
use std::net::IpAddr;

use super::secret::Secret;
use super::values::REDACTED;

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with `STARTTLS`, which the server must offer.
    StartTls,
    /// TLS from the start (`smtps://`).
    Tls,
    /// No TLS (`?tls=none`): development servers only.
    None,
}

/// A parsed `TESSERA_SMTP_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub security: SmtpSecurity,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl SmtpUrl {
    /// Parses the URL; the message never quotes it (it may hold the password).
    pub fn parse(text: &str) -> Result<SmtpUrl, String> {
        let url = reqwest::Url::parse(text.trim())
            .map_err(|e| format!("not a URL ({e}); expected smtp://[user:pass@]host[:port]"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("no host; expected smtp://[user:pass@]host[:port]")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let mut tls: Option<String> = None;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "tls" => tls = Some(value.to_ascii_lowercase()),
                other => return Err(format!("unknown parameter {other:?} (only tls=none is known)")),
            }
        }
        let security = match (url.scheme(), tls.as_deref()) {
            ("smtp", None | Some("starttls" | "required")) => SmtpSecurity::StartTls,
            ("smtp", Some("none")) => SmtpSecurity::None,
            ("smtps", None) => SmtpSecurity::Tls,
            ("smtp" | "smtps", Some(other)) => {
                return Err(format!(
                    "tls={other:?} is not known: smtp:// is STARTTLS, smtps:// implicit TLS, smtp://...?tls=none no TLS"
                ))
            }
            (scheme, _) => return Err(format!("scheme {scheme:?}: use smtp:// or smtps://")),
        };
        if !matches!(url.path(), "" | "/") {
            return Err("a path is not expected; use smtp://[user:pass@]host[:port]".into());
        }
        let username = Some(percent_decode(url.username())?).filter(|u| !u.is_empty());
        let password = url.password().map(percent_decode).transpose()?.map(Secret::from);
        if password.is_some() && username.is_none() {
            return Err("a password without a user name".into());
        }
        if security == SmtpSecurity::None && username.is_some() && !is_loopback(&host) {
            return Err(
                "credentials over a connection without TLS (tls=none) are refused unless the server is on this machine (a loopback address or localhost)"
                    .into(),
            );
        }
        let port = url.port().unwrap_or(match security {
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        });
        Ok(SmtpUrl {
            security,
            host,
            port,
            username,
            password,
        })
    }

    /// The URL as given, with the password replaced by `<redacted>`; parses back to the same
    /// server (with that placeholder for a password).
    pub fn redacted(&self) -> String {
        let scheme = match self.security {
            SmtpSecurity::Tls => "smtps",
            SmtpSecurity::StartTls | SmtpSecurity::None => "smtp",
        };
        let user = match (&self.username, &self.password) {
            (Some(u), Some(_)) => format!("{}:{REDACTED}@", percent_encode(u)),
            (Some(u), None) => format!("{}@", percent_encode(u)),
            _ => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let query = if self.security == SmtpSecurity::None {
            "?tls=none"
        } else {
            ""
        };
        format!("{scheme}://{user}{host}:{}{query}", self.port)
    }

    /// Whether the server is on this machine.
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.host)
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

fn is_loopback(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// `%XX` escapes of a URL's user part decoded (UTF-8); the error does not quote it.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the user name or password")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the user name or password is not UTF-8".to_owned())
}

/// The reverse, for the user name shown in the redacted URL.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_choose_the_protection_and_the_default_port() {
        let u = SmtpUrl::parse("smtp://mailer:pa%40ss@mail.example.com").unwrap();
        assert_eq!(u.security, SmtpSecurity::StartTls);
        assert_eq!((u.host.as_str(), u.port), ("mail.example.com", 587));
        assert_eq!(u.username.as_deref(), Some("mailer"));
        assert_eq!(u.password.as_deref(), Some("pa@ss"));
        let u = SmtpUrl::parse("smtps://mail.example.com").unwrap();
        assert_eq!((u.security, u.port, u.username), (SmtpSecurity::Tls, 465, None));
        let u = SmtpUrl::parse("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!((u.security, u.port), (SmtpSecurity::None, 2525));
        let u = SmtpUrl::parse("smtp://[::1]:2525?tls=none").unwrap();
        assert_eq!(u.host, "::1");
        assert!(u.is_loopback());
    }

    #[test]
    fn what_could_send_in_clear_or_is_unknown_is_refused() {
        for bad in [
            "smtp://u:p@mail.example.com?tls=none",
            "smtp://mail.example.com?tls=opportunistic",
            "smtps://mail.example.com?tls=none",
            "http://mail.example.com",
            "smtp://mail.example.com/helo",
            "smtp://mail.example.com?helo=x",
            "smtp://:p@mail.example.com",
            "smtp://",
            "mail.example.com",
        ] {
            assert!(SmtpUrl::parse(bad).is_err(), "{bad} must be refused");
        }
        assert!(SmtpUrl::parse("smtp://u:p@localhost:25?tls=none").is_ok());
    }

    #[test]
    fn the_password_shows_nowhere_and_the_redacted_url_reads_back() {
        let u = SmtpUrl::parse("smtp://mail%2Bbox:s3cret@mail.example.com:2587").unwrap();
        let shown = format!("{u:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(u.redacted(), "smtp://mail%2Bbox:<redacted>@mail.example.com:2587");
        let back = SmtpUrl::parse(&u.redacted()).unwrap();
        assert_eq!(back.username.as_deref(), Some("mail+box"));
        assert_eq!(back.password.as_deref(), Some("<redacted>"));
        assert_eq!((back.host, back.port), (u.host, u.port));
        let err = SmtpUrl::parse("smtp://u:s3cret@mail.example.com?tls=none").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
