//! The mail settings become the mail module's transport, templates and deliverer: the one
//! place they are read (`serve`, `tessera check` and `tessera mail` all come here).

use std::sync::Arc;

use crate::config::{Config, SmtpSecurity as Security};
use crate::domain::Clock;
use crate::mail::{
    Deliverer, DeliverySettings, MailError, Outbox, SmtpSecurity, SmtpServer, Templates, Transport,
};
use crate::store::Store;

/// The SMTP server configured, with its extra CA certificates read; `None`: mail goes to the
/// log.
pub fn smtp_server(config: &Config) -> Result<Option<SmtpServer>, MailError> {
    let Some(url) = &config.smtp_url else {
        return Ok(None);
    };
    let extra_roots_pem = match &config.smtp_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| MailError::Smtp(format!("smtp_ca_file {}: {e}", path.display())))?,
        ),
        None => None,
    };
    Ok(Some(SmtpServer {
        security: match url.security {
            Security::StartTls => SmtpSecurity::StartTls,
            Security::Tls => SmtpSecurity::Tls,
            Security::None => SmtpSecurity::None,
        },
        host: url.host.clone(),
        port: url.port,
        credentials: url.username.as_ref().map(|user| {
            (
                user.clone(),
                url.password.as_deref().unwrap_or_default().to_owned(),
            )
        }),
        extra_roots_pem,
    }))
}

/// Where mail goes: the SMTP server, or the log when none is configured.
pub fn transport(config: &Config) -> Result<Transport, MailError> {
    match smtp_server(config)? {
        Some(server) => Transport::smtp(&server, config.mail_from.as_deref().unwrap_or_default()),
        None => Ok(Transport::Log),
    }
}

/// The templates (the built-in ones, replaced from `mail_templates`), with the product name
/// and the public URL the links start with.
pub fn templates(config: &Config) -> Result<Templates, MailError> {
    Templates::load(
        config.mail_templates.as_deref(),
        &product_name(config),
        config.public_url(),
    )
}

/// `product_name`, else the public URL's host.
pub fn product_name(config: &Config) -> String {
    if let Some(name) = &config.product_name {
        return name.clone();
    }
    reqwest::Url::parse(config.public_url())
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_else(|| "Tessera".to_owned())
}

/// This instance's deliverer, woken by `outbox`. Says at start where mail goes.
pub(super) fn deliverer(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    outbox: &Outbox,
) -> Result<Deliverer, MailError> {
    let transport = transport(config)?;
    match &config.smtp_url {
        Some(url) => tracing::info!(server = %url.redacted(), "mail goes through SMTP"),
        None => tracing::warn!(
            "no SMTP server configured (TESSERA_SMTP_URL): mails are written to the log instead of sent (development only)"
        ),
    }
    Ok(Deliverer::new(
        store,
        clock,
        transport,
        templates(config)?,
        DeliverySettings::new(config.mail_give_up_after),
        outbox,
    ))
}
