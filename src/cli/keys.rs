//! `tessera keys`: the signing keys and their stages (`list`), routine rotation through the
//! next stage (`rotate`), the emergency path for a leaked key (`revoke`), and sealing the
//! private keys at rest with `TESSERA_MASTER_KEY` (`encrypt`). Like the other administrative
//! commands they work on the database directly; running servers follow within half a second
//! (revocations) or a minute (rotations, which give them far longer than that).

use clap::Subcommand;

use super::output::{or_dash, Out, Table};
use super::{actor, CliError};
use crate::config::Config;
use crate::domain::{Clock, SystemClock, Timestamp};
use crate::service::{KeyOps, Revoked, MIN_KEY_PUBLISH_AHEAD};
use crate::store::{self, Store};
use crate::tokens::SigningAlg;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Every signing key: kid, algorithm, stage (next, active, retired, expired, revoked),
    /// times, and whether its private key is encrypted at rest.
    List {
        /// JSON Lines: one object per key.
        #[arg(long)]
        json: bool,
    },
    /// Add a key in the next stage: published in the JWKS at once, signing from
    /// TESSERA_KEY_PUBLISH_AHEAD from now, on every instance by itself. The current key
    /// keeps verifying until its tokens expire.
    Rotate {
        /// The new key's algorithm (default: TESSERA_SIGNING_ALG). Make it the configured one
        /// too, or the next start rotates back.
        #[arg(long, value_name = "ALG")]
        alg: Option<String>,
        /// Sign with the new key at once, skipping the publish-ahead (verifiers that cache the
        /// JWKS meet an unknown kid and must refetch).
        #[arg(long)]
        now: bool,
    },
    /// Emergency, for a leaked key: refused at once by every running server and removed from
    /// the JWKS. If it was signing, a next key (or a fresh one) signs from now.
    Revoke { kid: String },
    /// Encrypt every private key stored in clear (and re-encrypt those under
    /// TESSERA_MASTER_KEY_PREVIOUS) with TESSERA_MASTER_KEY. A second run has nothing to do.
    Encrypt,
}

/// "Now" on the database's clock where it has one (PostgreSQL): the instances compare the
/// times written here with it, so a promotion written "now" is now for them too.
async fn now(store: &dyn Store) -> Result<Timestamp, CliError> {
    Ok(store.database_time().await?.unwrap_or_else(|| SystemClock.now()))
}

/// Runs `tessera keys ...`.
pub async fn keys(config: &Config, command: KeysCommand) -> Result<(), CliError> {
    run(config, command, "keys_command").await
}

/// Runs `tessera rotate-key`: `keys rotate --now`, audited as before (`by: rotate_key_command`).
pub async fn rotate_key(config: &Config) -> Result<(), CliError> {
    let rotate = KeysCommand::Rotate { alg: None, now: true };
    run(config, rotate, "rotate_key_command").await
}

/// Runs a key command; `by` names the command in the audit trail and alerts.
async fn run(config: &Config, command: KeysCommand, by: &str) -> Result<(), CliError> {
    let store = store::connect_existing(&config.database_url, 1).await?;
    // Rotations and revocations are alerted through the outbox; running servers deliver them.
    let alerts = super::alert_sink(config, &store)?;
    let master = config.master_keys();
    let ops = KeyOps {
        store: store.as_ref(),
        alerts: alerts.as_ref(),
        master: &master,
        admin: Some(actor()),
    };
    let now = now(store.as_ref()).await?;
    let mut out = Out::new();
    match command {
        KeysCommand::List { json } => {
            let keys = ops.list(now, &crate::startup::policy(config).keys).await?;
            if json {
                for k in &keys {
                    out.json(k)?;
                }
            } else {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.kid.clone(),
                            k.alg.clone(),
                            k.stage.to_string(),
                            k.created_at.to_rfc3339(),
                            k.activates_at.to_rfc3339(),
                            or_dash(k.retired_at.map(|t| t.to_rfc3339())),
                            or_dash(k.revoked_at.map(|t| t.to_rfc3339())),
                            if k.encrypted { "yes" } else { "no" }.to_owned(),
                        ]
                    })
                    .collect();
                Table::new(&[
                    "KID",
                    "ALG",
                    "STAGE",
                    "CREATED",
                    "ACTIVATES",
                    "RETIRED",
                    "REVOKED",
                    "ENCRYPTED",
                ])
                .print(&mut out, &rows)?;
            }
        }
        KeysCommand::Rotate { alg, now: at_once } => {
            let alg = match alg {
                Some(name) => name
                    .parse::<SigningAlg>()
                    .map_err(|e| CliError::Invalid(format!("--alg: {e}")))?,
                None => config.signing_alg,
            };
            if alg != config.signing_alg {
                eprintln!(
                    "tessera: warning: --alg {alg} differs from TESSERA_SIGNING_ALG ({}): set it to {alg} \
                     before servers restart, or each start rotates back to {}",
                    config.signing_alg, config.signing_alg
                );
            }
            let ahead = if at_once {
                std::time::Duration::ZERO
            } else {
                config.key_publish_ahead
            };
            if !at_once && ahead < MIN_KEY_PUBLISH_AHEAD {
                eprintln!(
                    "tessera: warning: TESSERA_KEY_PUBLISH_AHEAD ({} s) is shorter than the JWKS max-age \
                     plus the key reload interval ({} s): verifiers caching the JWKS may meet the new \
                     key before they know it",
                    ahead.as_secs(),
                    MIN_KEY_PUBLISH_AHEAD.as_secs()
                );
            }
            let key = ops.rotate(alg, now, now.plus(ahead), by).await?;
            if at_once {
                out.line(&format!("new active signing key: {}", key.kid))?;
            } else {
                out.line(&format!(
                    "new signing key {} ({alg}): in the JWKS now, signing from {}",
                    key.kid,
                    key.activates_at.to_rfc3339()
                ))?;
            }
        }
        KeysCommand::Revoke { kid } => {
            let kid = kid.trim();
            match ops.revoke(kid, config.signing_alg, now, by).await? {
                Revoked::Revoked { signing } => {
                    out.line(&format!("revoked signing key {kid}"))?;
                    if let Some(signing) = signing {
                        out.line(&format!("signing with {signing}"))?;
                    }
                }
                Revoked::AlreadyRevoked => out.line(&format!("signing key {kid} was already revoked"))?,
                Revoked::NotFound => return Err(CliError::Invalid(format!("no signing key {kid}"))),
            }
        }
        KeysCommand::Encrypt => {
            if master.current.is_none() {
                return Err(CliError::Invalid(
                    "TESSERA_MASTER_KEY is not set: there is no key to encrypt with \
                     (generate one with `openssl rand -base64 32`)"
                        .into(),
                ));
            }
            let done = ops.encrypt(now, by).await?;
            if done.sealed + done.resealed + done.totp_secrets == 0 {
                out.line(&format!(
                    "nothing to do: all {} signing key(s) and every TOTP secret are encrypted with TESSERA_MASTER_KEY",
                    done.unchanged
                ))?;
            } else {
                out.line(&format!(
                    "encrypted {} signing key(s), re-encrypted {} under the new master key; {} already were; \
                     {} TOTP secret(s) encrypted with TESSERA_MASTER_KEY",
                    done.sealed, done.resealed, done.unchanged, done.totp_secrets
                ))?;
            }
        }
    }
    out.finish()
}
