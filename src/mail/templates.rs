//! Mail templates: for each message kind a plain-text file (`<kind>.txt`: a `Subject:` line,
//! a blank line, the body) and a simple HTML body (`<kind>.html`), compiled into the binary
//! and replaceable one file at a time from `TESSERA_MAIL_TEMPLATES`.
//!
//! A template says `{{name}}` where a value goes; nothing else is special (no logic, no
//! includes). The names each kind offers are fixed (`product`, `public_url`, `recipient` for
//! all; `link`, `expires_in`, `new_email`, `device`, `ip`, `time` for the kinds that have
//! them), and a template naming any other is refused when it is loaded, at start, so a typo
//! never reaches a mail. Values are HTML-escaped in the HTML body, and stripped of control
//! characters everywhere (a user agent cannot add a header line or forge a paragraph).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use super::{MailError, MailKind};

/// The built-in templates, by kind: (name, text with subject, HTML).
const BUILT_IN: &[(&str, &str, &str)] = &[
    (
        "test",
        include_str!("templates/test.txt"),
        include_str!("templates/test.html"),
    ),
    (
        "verify_email",
        include_str!("templates/verify_email.txt"),
        include_str!("templates/verify_email.html"),
    ),
    (
        "signup_attempt",
        include_str!("templates/signup_attempt.txt"),
        include_str!("templates/signup_attempt.html"),
    ),
    (
        "password_reset",
        include_str!("templates/password_reset.txt"),
        include_str!("templates/password_reset.html"),
    ),
    (
        "password_changed",
        include_str!("templates/password_changed.txt"),
        include_str!("templates/password_changed.html"),
    ),
    (
        "email_change_confirm",
        include_str!("templates/email_change_confirm.txt"),
        include_str!("templates/email_change_confirm.html"),
    ),
    (
        "email_change_notice",
        include_str!("templates/email_change_notice.txt"),
        include_str!("templates/email_change_notice.html"),
    ),
    (
        "sign_in_link",
        include_str!("templates/sign_in_link.txt"),
        include_str!("templates/sign_in_link.html"),
    ),
    (
        "invitation",
        include_str!("templates/invitation.txt"),
        include_str!("templates/invitation.html"),
    ),
    (
        "new_device",
        include_str!("templates/new_device.txt"),
        include_str!("templates/new_device.html"),
    ),
    (
        "security_change",
        include_str!("templates/security_change.txt"),
        include_str!("templates/security_change.html"),
    ),
];

/// The values every template may use.
const COMMON: &[&str] = &["product", "public_url", "recipient"];

/// The values a kind's templates may use besides [`COMMON`].
fn offered(kind: &str) -> &'static [&'static str] {
    match kind {
        "verify_email" | "signup_attempt" | "password_changed" => &["link"],
        "email_change_confirm" | "email_change_notice" => &["link", "new_email"],
        "password_reset" | "invitation" | "sign_in_link" => &["link", "expires_in"],
        "new_device" => &["link", "device", "ip", "time"],
        "security_change" => &["link", "change"],
        _ => &[],
    }
}

/// A mail ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(String),
}

/// A template cut at its `{{name}}`s.
#[derive(Clone, Debug)]
struct Template(Vec<Piece>);

impl Template {
    /// Parses `source`, refusing a `{{` left open and a name `allowed` does not offer.
    fn parse(source: &str, allowed: &[&str]) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or("a `{{` without its `}}`")?;
            let name = after[..end].trim();
            if !allowed.contains(&name) {
                return Err(format!(
                    "{{{{{name}}}}} is not a value of this mail (it has: {})",
                    allowed.join(", ")
                ));
            }
            pieces.push(Piece::Value(name.to_owned()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    fn render(&self, values: &HashMap<&str, String>, html: bool) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Value(name) => {
                    let value = values.get(name.as_str()).map_or("", String::as_str);
                    if html {
                        escape_html(value, &mut out);
                    } else {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

fn escape_html(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Control characters (line breaks included) become spaces: a value never starts a line.
fn clean(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A token as it goes into a link's fragment: unreserved characters kept, the rest escaped.
fn escape_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[derive(Clone, Debug)]
struct KindTemplates {
    subject: Template,
    text: Template,
    html: Template,
}

/// Every kind's templates, loaded and checked once, with the product name and public URL the
/// links are built from.
#[derive(Clone, Debug)]
pub struct Templates {
    product: String,
    public_url: String,
    kinds: HashMap<&'static str, KindTemplates>,
}

impl Templates {
    /// The built-in templates, each replaced by a file of the same name in `dir` if there is
    /// one. A file there that names no template, or a template that does not parse, is an
    /// error: better refuse to start than send broken mail.
    pub fn load(dir: Option<&Path>, product: &str, public_url: &str) -> Result<Templates, MailError> {
        let mut overrides: HashMap<String, String> = HashMap::new();
        if let Some(dir) = dir {
            let dir_error = |message: String| MailError::TemplateDir {
                path: dir.display().to_string(),
                message,
            };
            let entries = std::fs::read_dir(dir).map_err(|e| dir_error(e.to_string()))?;
            for entry in entries {
                let path = entry.map_err(|e| dir_error(e.to_string()))?.path();
                let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                    continue;
                };
                let known = file.rsplit_once('.').is_some_and(|(kind, ext)| {
                    MailKind::NAMES.contains(&kind) && matches!(ext, "txt" | "html")
                });
                if !known {
                    if file.starts_with('.') {
                        continue;
                    }
                    return Err(dir_error(format!(
                        "{file} is not a template (expected <kind>.txt or <kind>.html, kinds: {})",
                        MailKind::NAMES.join(", ")
                    )));
                }
                let text = std::fs::read_to_string(&path).map_err(|e| dir_error(format!("{file}: {e}")))?;
                overrides.insert(file.to_owned(), text);
            }
        }
        let mut kinds = HashMap::new();
        for (name, text, html) in BUILT_IN {
            let allowed: Vec<&str> = COMMON.iter().chain(offered(name)).copied().collect();
            let template_error = |file: &str, message: String| MailError::Template {
                name: file.to_owned(),
                message,
            };
            let text_file = format!("{name}.txt");
            let html_file = format!("{name}.html");
            let text = overrides.get(&text_file).map_or(*text, String::as_str);
            let html = overrides.get(&html_file).map_or(*html, String::as_str);
            let (subject, body) = split_subject(text).map_err(|m| template_error(&text_file, m))?;
            kinds.insert(
                *name,
                KindTemplates {
                    subject: Template::parse(subject, &allowed).map_err(|m| template_error(&text_file, m))?,
                    text: Template::parse(body, &allowed).map_err(|m| template_error(&text_file, m))?,
                    html: Template::parse(html, &allowed).map_err(|m| template_error(&html_file, m))?,
                },
            );
        }
        Ok(Templates {
            product: clean(product),
            public_url: public_url.trim_end_matches('/').to_owned(),
            kinds,
        })
    }

    /// The link a kind carries, if any.
    fn link(&self, kind: &MailKind) -> Option<String> {
        let base = &self.public_url;
        Some(match kind {
            MailKind::Test => return None,
            MailKind::VerifyEmail { token } => format!("{base}/verify#token={}", escape_component(token)),
            MailKind::EmailChangeConfirm { token, .. } => {
                format!("{base}/verify#change={}", escape_component(token))
            }
            MailKind::PasswordReset { token, .. } | MailKind::Invitation { token, .. } => {
                format!("{base}/reset#token={}", escape_component(token))
            }
            MailKind::SignInLink { token, .. } => format!("{base}/login#link={}", escape_component(token)),
            MailKind::SignupAttempt | MailKind::PasswordChanged => format!("{base}/forgot"),
            MailKind::EmailChangeNotice { .. }
            | MailKind::NewDevice { .. }
            | MailKind::SecurityChange { .. } => {
                format!("{base}/account")
            }
        })
    }

    /// The mail `kind` makes for `recipient`.
    pub fn render(&self, recipient: &str, kind: &MailKind) -> Rendered {
        let mut values: HashMap<&str, String> = HashMap::new();
        values.insert("product", self.product.clone());
        values.insert("public_url", self.public_url.clone());
        values.insert("recipient", clean(recipient));
        if let Some(link) = self.link(kind) {
            values.insert("link", link);
        }
        match kind {
            MailKind::PasswordReset {
                expires_in_minutes, ..
            }
            | MailKind::Invitation {
                expires_in_minutes, ..
            }
            | MailKind::SignInLink {
                expires_in_minutes, ..
            } => {
                values.insert("expires_in", minutes(*expires_in_minutes));
            }
            MailKind::EmailChangeConfirm { new_email, .. } | MailKind::EmailChangeNotice { new_email } => {
                values.insert("new_email", clean(new_email));
            }
            MailKind::SecurityChange { change } => {
                values.insert("change", clean(change));
            }
            MailKind::NewDevice { device, ip, at } => {
                values.insert("device", clean(device));
                values.insert("ip", clean(ip));
                let time = at.to_rfc3339();
                // `2026-12-04T22:11:02.123Z` → `2026-12-04 22:11 UTC`.
                let shown = match (time.get(..10), time.get(11..16)) {
                    (Some(day), Some(hm)) => format!("{day} {hm} UTC"),
                    _ => time,
                };
                values.insert("time", shown);
            }
            MailKind::Test
            | MailKind::VerifyEmail { .. }
            | MailKind::SignupAttempt
            | MailKind::PasswordChanged => {}
        }
        let Some(templates) = self.kinds.get(kind.name()) else {
            // Every kind has built-in templates (a unit test checks); never reached.
            return Rendered {
                subject: self.product.clone(),
                text: String::new(),
                html: String::new(),
            };
        };
        Rendered {
            subject: clean(templates.subject.render(&values, false).trim()),
            text: templates.text.render(&values, false),
            html: templates.html.render(&values, true),
        }
    }
}

fn minutes(n: u64) -> String {
    match n {
        1 => "1 minute".to_owned(),
        n if n % 1440 == 0 && n >= 2880 => format!("{} days", n / 1440),
        n if n % 60 == 0 && n >= 120 => format!("{} hours", n / 60),
        60 => "1 hour".to_owned(),
        n => format!("{n} minutes"),
    }
}

/// `Subject: ...`, then a blank line, then the body.
fn split_subject(text: &str) -> Result<(&str, &str), String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let subject = first
        .trim_end_matches('\r')
        .strip_prefix("Subject:")
        .ok_or("the first line must be `Subject: ...`")?;
    let body = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
        .ok_or("a blank line must follow the subject")?;
    Ok((subject.trim(), body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    fn every_kind() -> Vec<MailKind> {
        vec![
            MailKind::Test,
            MailKind::VerifyEmail {
                token: "tok_1".into(),
            },
            MailKind::SignupAttempt,
            MailKind::PasswordReset {
                token: "tok_2".into(),
                expires_in_minutes: 30,
            },
            MailKind::Invitation {
                token: "tok_inv".into(),
                expires_in_minutes: 10_080,
            },
            MailKind::PasswordChanged,
            MailKind::SecurityChange {
                change: "Two-step verification was turned off".into(),
            },
            MailKind::EmailChangeConfirm {
                token: "tok_3".into(),
                new_email: "new@example.com".into(),
            },
            MailKind::EmailChangeNotice {
                new_email: "new@example.com".into(),
            },
            MailKind::SignInLink {
                token: "tok_4".into(),
                expires_in_minutes: 10,
            },
            MailKind::NewDevice {
                device: "Firefox on Linux".into(),
                ip: "192.0.2.1".into(),
                at: Timestamp(1_764_886_262_000),
            },
        ]
    }

    #[test]
    fn every_kind_renders_from_the_built_in_templates_with_its_link() {
        let t = Templates::load(None, "Acme", "https://auth.acme.example/").unwrap();
        assert_eq!(every_kind().len(), BUILT_IN.len());
        for kind in every_kind() {
            let r = t.render("a@example.com", &kind);
            assert!(
                !r.subject.is_empty() && !r.subject.contains('\n'),
                "{kind:?}: {r:?}"
            );
            assert!(
                r.text.contains("Acme") || r.subject.contains("Acme"),
                "{kind:?}: {r:?}"
            );
            assert!(r.html.contains("<"), "{kind:?}: {r:?}");
            assert!(
                !r.text.contains("{{") && !r.html.contains("{{"),
                "{kind:?}: {r:?}"
            );
            if let Some(link) = t.link(&kind) {
                assert!(link.starts_with("https://auth.acme.example/"), "{link}");
                assert!(r.text.contains(&link), "{kind:?}: {}", r.text);
                assert!(r.html.contains(&link), "{kind:?}: {}", r.html);
            }
        }
        let reset = t.render(
            "a@example.com",
            &MailKind::PasswordReset {
                token: "tok_2".into(),
                expires_in_minutes: 30,
            },
        );
        assert!(reset.text.contains("https://auth.acme.example/reset#token=tok_2"));
        assert!(reset.text.contains("30 minutes"));
    }

    #[test]
    fn values_are_escaped_in_html_and_never_break_a_line() {
        let t = Templates::load(None, "A & B", "https://auth.example").unwrap();
        let r = t.render(
            "a@example.com",
            &MailKind::NewDevice {
                device: "<script>x</script>\r\nBcc: evil@example.com".into(),
                ip: "192.0.2.1".into(),
                at: Timestamp(0),
            },
        );
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(r.html.contains("&lt;script&gt;"), "{}", r.html);
        assert!(r.html.contains("A &amp; B"), "{}", r.html);
        assert!(!r.text.contains("\nBcc:"), "{}", r.text);
        assert!(r.text.contains("1970-01-01 00:00 UTC"), "{}", r.text);
        // A token is escaped in its link.
        let r = t.render(
            "a@example.com",
            &MailKind::VerifyEmail {
                token: "a b\"<".into(),
            },
        );
        assert!(r.text.contains("/verify#token=a%20b%22%3C"), "{}", r.text);
    }

    #[test]
    fn a_directory_replaces_templates_one_file_at_a_time_and_typos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("test.txt"),
            "Subject: Hello from {{ product }}\n\nCustom body for {{recipient}}.\n",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path()), "Acme", "https://a.example").unwrap();
        let r = t.render("x@example.com", &MailKind::Test);
        assert_eq!(r.subject, "Hello from Acme");
        assert_eq!(r.text, "Custom body for x@example.com.\n");
        // The HTML of the same kind is still the built-in one.
        assert!(r.html.contains("Acme"));

        std::fs::write(dir.path().join("password_reset.html"), "<p>{{token}}</p>").unwrap();
        let err = Templates::load(Some(dir.path()), "Acme", "https://a.example").unwrap_err();
        assert!(
            err.to_string().contains("password_reset.html") && err.to_string().contains("{{token}}"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("password_reset.html")).unwrap();

        std::fs::write(dir.path().join("pasword_reset.txt"), "Subject: x\n\ny").unwrap();
        let err = Templates::load(Some(dir.path()), "Acme", "https://a.example").unwrap_err();
        assert!(err.to_string().contains("pasword_reset.txt"), "{err}");
        std::fs::remove_file(dir.path().join("pasword_reset.txt")).unwrap();

        std::fs::write(dir.path().join("test.txt"), "Hello\n\nno subject").unwrap();
        assert!(Templates::load(Some(dir.path()), "Acme", "https://a.example").is_err());
        std::fs::write(dir.path().join("test.txt"), "Subject: {{product\n\nopen").unwrap();
        assert!(Templates::load(Some(dir.path()), "Acme", "https://a.example").is_err());

        assert!(Templates::load(Some(&dir.path().join("missing")), "Acme", "https://a.example").is_err());
    }
}
