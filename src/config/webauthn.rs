//! The WebAuthn relying party of passkeys: its id (a domain) and the origins whose ceremonies
//! count. Set by `webauthn_rp_id` and `webauthn_origins`, or derived from the public URL.
//! What is set must be consistent (a start refused otherwise); a derived party that cannot
//! work (the public URL names an IP address, or plain HTTP off `localhost`) turns passkeys
//! off instead, with the reason logged at start and told by the passkey routes.

use super::{Config, ConfigError};

/// Who the passkeys belong to: the relying party's id and the origins allowed to use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelyingParty {
    /// A registrable domain, or `localhost`: never an IP address, never a port.
    pub id: String,
    /// `scheme://host[:port]`, each host the id or under it.
    pub origins: Vec<String>,
}

/// Passkeys on (for this party) or off (and why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Passkeys {
    On(RelyingParty),
    Off(String),
}

impl Config {
    /// The relying party of passkeys. `Err` when what is configured is inconsistent (the
    /// start is refused); `Off` when nothing is configured and the public URL cannot serve.
    pub fn passkeys(&self) -> Result<Passkeys, ConfigError> {
        let invalid = |name, message: String| Err(ConfigError::Invalid { name, message });
        let configured = self.webauthn_rp_id.is_some() || !self.webauthn_origins.is_empty();
        let public = self.public_url();
        let public_origin = origin_of(public);
        // A public URL that is no URL is the issuer check's to report (`tessera check`); here
        // it only leaves nothing to derive from.
        let underivable = |name, what| {
            let why = format!("the public URL {public:?} gives no {what}");
            if configured {
                invalid(name, format!("is required: {why}"))
            } else {
                Ok(Passkeys::Off(why))
            }
        };
        let id = match (&self.webauthn_rp_id, host_of(public)) {
            (Some(id), _) => id.trim().trim_end_matches('.').to_ascii_lowercase(),
            (None, Some(host)) => host,
            (None, None) => return underivable("webauthn_rp_id", "host"),
        };
        let origins = match (&self.webauthn_origins[..], public_origin) {
            ([], Some(origin)) => vec![origin],
            ([], None) => return underivable("webauthn_origins", "origin"),
            (given, _) => given.to_vec(),
        };
        let setting = if self.webauthn_rp_id.is_some() {
            "webauthn_rp_id"
        } else {
            "webauthn_origins"
        };
        if let Err(why) = check_id(&id) {
            let why = format!("the relying party id {id:?} {why}");
            return if configured {
                invalid(setting, why)
            } else {
                Ok(Passkeys::Off(format!(
                    "{why} (derived from the public URL {public}): set TESSERA_PUBLIC_URL to a \
                     domain, or TESSERA_WEBAUTHN_RP_ID and TESSERA_WEBAUTHN_ORIGINS"
                )))
            };
        }
        for origin in &origins {
            if let Err(why) = check_origin(origin, &id) {
                let why = format!("the origin {origin:?} {why}");
                return if configured {
                    invalid("webauthn_origins", why)
                } else {
                    Ok(Passkeys::Off(format!(
                        "{why} (derived from the public URL): set TESSERA_WEBAUTHN_ORIGINS"
                    )))
                };
            }
        }
        Ok(Passkeys::On(RelyingParty { id, origins }))
    }
}

/// The host of an http(s) URL, lower-cased, without brackets or port.
fn host_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    url.host_str().map(|h| h.to_ascii_lowercase())
}

fn origin_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    match url.origin() {
        origin @ url::Origin::Tuple(..) => Some(origin.ascii_serialization()),
        url::Origin::Opaque(_) => None,
    }
}

/// A relying party id is a domain: WebAuthn refuses IP addresses, and it carries no scheme or
/// port.
fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("is empty");
    }
    let url = reqwest::Url::parse(&format!("https://{id}/")).map_err(|_| "is not a domain")?;
    match url.host() {
        Some(url::Host::Domain(domain)) if domain == id => Ok(()),
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
            Err("is an IP address; WebAuthn needs a domain (localhost will do in development)")
        }
        _ => Err("is not a domain (no scheme, port or path)"),
    }
}

/// An origin counts when its host is the id or under it, over HTTPS (plain HTTP only on
/// `localhost`, which browsers treat as secure).
fn check_origin(origin: &str, id: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(origin).map_err(|_| "is not an origin".to_owned())?;
    let host = match url.host() {
        Some(url::Host::Domain(domain)) => domain.to_ascii_lowercase(),
        _ => return Err("does not name a domain (WebAuthn refuses IP addresses)".into()),
    };
    if host != id && !host.ends_with(&format!(".{id}")) {
        return Err(format!(
            "is not on the relying party id {id:?} or a subdomain of it"
        ));
    }
    let local = host == "localhost" || host.ends_with(".localhost");
    match url.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        _ => Err("must be https:// (http:// only on localhost)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(public: Option<&str>, id: Option<&str>, origins: &[&str]) -> Config {
        Config {
            public_url: public.map(str::to_owned),
            webauthn_rp_id: id.map(str::to_owned),
            webauthn_origins: origins.iter().map(|o| o.to_string()).collect(),
            ..Config::default()
        }
    }

    #[test]
    fn the_party_is_derived_from_the_public_url() {
        let c = config(Some("https://auth.example.com"), None, &[]);
        assert_eq!(
            c.passkeys().unwrap(),
            Passkeys::On(RelyingParty {
                id: "auth.example.com".into(),
                origins: vec!["https://auth.example.com".into()],
            })
        );
        let c = config(Some("http://localhost:8080"), None, &[]);
        assert!(
            matches!(c.passkeys().unwrap(), Passkeys::On(rp) if rp.id == "localhost"
            && rp.origins == ["http://localhost:8080"])
        );
    }

    #[test]
    fn an_unusable_derived_party_turns_passkeys_off() {
        // The default issuer, http://127.0.0.1:8080: an IP address.
        let c = config(None, None, &[]);
        assert!(matches!(c.passkeys().unwrap(), Passkeys::Off(why) if why.contains("IP address")));
        let c = config(Some("http://auth.example.com"), None, &[]);
        assert!(matches!(c.passkeys().unwrap(), Passkeys::Off(why) if why.contains("https://")));
        // An issuer that is no URL is reported by its own check, not refused here.
        let c = Config {
            issuer: "auth server".into(),
            ..Config::default()
        };
        assert!(matches!(c.passkeys().unwrap(), Passkeys::Off(why) if why.contains("no host")));
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let refused = |c: Config| c.passkeys().unwrap_err().to_string();
        let why = refused(config(Some("https://auth.example.com"), Some("other.com"), &[]));
        assert!(
            why.contains("webauthn_origins") && why.contains("other.com"),
            "{why}"
        );
        let why = refused(config(None, Some("127.0.0.1"), &["http://127.0.0.1:8080"]));
        assert!(
            why.contains("webauthn_rp_id") && why.contains("IP address"),
            "{why}"
        );
        let why = refused(config(None, Some("example.com"), &["http://app.example.com"]));
        assert!(why.contains("https://"), "{why}");
        let why = refused(config(None, Some("example.com"), &["https://badexample.com"]));
        assert!(why.contains("subdomain"), "{why}");
        let why = refused(config(
            Some("https://x.example.com"),
            Some("https://example.com"),
            &[],
        ));
        assert!(why.contains("webauthn_rp_id"), "{why}");
    }

    #[test]
    fn subdomains_and_localhost_ports_are_accepted() {
        let c = config(
            None,
            Some("example.com"),
            &[
                "https://example.com",
                "https://app.example.com",
                "https://auth.example.com:8443",
            ],
        );
        assert!(matches!(c.passkeys().unwrap(), Passkeys::On(rp) if rp.origins.len() == 3));
        let c = config(None, Some("localhost"), &["http://localhost:3000"]);
        assert!(matches!(c.passkeys().unwrap(), Passkeys::On(_)));
    }
}
