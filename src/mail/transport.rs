//! Where rendered mail goes: an SMTP server through lettre (rustls, the Mozilla roots plus any
//! certificates the operator adds), or, with none configured, the log.

use std::fmt;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{MailError, Rendered};

/// How long one SMTP command (connecting included) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `STARTTLS`, required: no mail goes in clear to a server that does not offer it.
    StartTls,
    /// TLS from the first byte.
    Tls,
    /// None: a development server on this machine.
    None,
}

/// The SMTP server to send through, as `startup` reads it from the configuration.
#[derive(Clone)]
pub struct SmtpServer {
    pub security: SmtpSecurity,
    pub host: String,
    pub port: u16,
    /// User name and password for `AUTH`.
    pub credentials: Option<(String, String)>,
    /// PEM certificates to trust besides the public roots (a private CA).
    pub extra_roots_pem: Option<Vec<u8>>,
}

impl fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpServer")
            .field("security", &self.security)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

/// Why a mail was not taken.
#[derive(Debug)]
pub struct SendError {
    /// The server refused it for good (a 5xx answer, a recipient it will never accept): trying
    /// again cannot help. Anything else (unreachable, timed out, 4xx) is retried.
    pub permanent: bool,
    pub message: String,
}

/// An SMTP server and the sender it sends as.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

pub enum Transport {
    Smtp(Box<Smtp>),
    /// No SMTP server: each mail is written to the log (development).
    Log,
}

impl Transport {
    pub fn smtp(server: &SmtpServer, from: &str) -> Result<Transport, MailError> {
        let from: Mailbox = from.parse().map_err(|e| MailError::From(format!("{e}")))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host.as_str())
            .port(server.port)
            .timeout(Some(COMMAND_TIMEOUT));
        if server.security != SmtpSecurity::None {
            let mut tls = TlsParameters::builder(server.host.clone());
            if let Some(pem) = &server.extra_roots_pem {
                for cert in pem_certificates(pem)? {
                    tls = tls.add_root_certificate(cert);
                }
            }
            let tls = tls
                .build_rustls()
                .map_err(|e| MailError::Smtp(format!("TLS settings: {e}")))?;
            builder = builder.tls(match server.security {
                SmtpSecurity::Tls => Tls::Wrapper(tls),
                _ => Tls::Required(tls),
            });
        }
        if let Some((user, password)) = &server.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Transport::Smtp(Box::new(Smtp {
            transport: builder.build(),
            from,
        })))
    }

    /// Sends one mail to `to`; `id` (the outbox row's) makes its `Message-ID`, the same on
    /// every attempt, so a receiver can tell a redelivery.
    pub async fn send(&self, id: uuid::Uuid, to: &str, mail: &Rendered) -> Result<(), SendError> {
        match self {
            Transport::Log => {
                tracing::info!(target: "tessera::mail", %id, to, subject = %mail.subject,
                    "mail (no SMTP server configured, so logged instead of sent):\n{}", mail.text);
                Ok(())
            }
            Transport::Smtp(smtp) => {
                let Smtp { transport, from } = smtp.as_ref();
                let to: Mailbox = to.parse().map_err(|e| SendError {
                    permanent: true,
                    message: format!("bad recipient address: {e}"),
                })?;
                let domain = from.email.domain();
                let message = Message::builder()
                    .message_id(Some(format!("<{}@{domain}>", id.simple())))
                    .from(from.clone())
                    .to(to)
                    .subject(mail.subject.clone())
                    .multipart(MultiPart::alternative_plain_html(
                        mail.text.clone(),
                        mail.html.clone(),
                    ))
                    .map_err(|e| SendError {
                        permanent: true,
                        message: format!("cannot build the message: {e}"),
                    })?;
                transport.send(message).await.map(drop).map_err(|e| SendError {
                    permanent: e.is_permanent(),
                    message: describe(&e),
                })
            }
        }
    }

    /// Connects, greets (EHLO, STARTTLS, AUTH as configured) and says NOOP: is the server
    /// there and does it take us? Ok for the log transport.
    pub async fn test_connection(&self) -> Result<(), String> {
        match self {
            Transport::Log => Ok(()),
            Transport::Smtp(smtp) => match smtp.transport.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err("the server did not answer NOOP".into()),
                Err(e) => Err(describe(&e)),
            },
        }
    }

    pub fn is_log(&self) -> bool {
        matches!(self, Transport::Log)
    }
}

/// lettre's error with its causes (the TLS or I/O error behind "Connection error").
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Each certificate of a PEM bundle.
fn pem_certificates(pem: &[u8]) -> Result<Vec<Certificate>, MailError> {
    let text = std::str::from_utf8(pem).map_err(|_| MailError::Smtp("CA file is not PEM text".into()))?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let block = &rest[start..start + len + END.len()];
        certs.push(
            Certificate::from_pem(block.as_bytes()).map_err(|e| MailError::Smtp(format!("CA file: {e}")))?,
        );
        rest = &rest[start + len + END.len()..];
    }
    if certs.is_empty() {
        return Err(MailError::Smtp("CA file holds no PEM certificate".into()));
    }
    Ok(certs)
}
