//! Passkeys (WebAuthn): registering one while signed in, listing, renaming and removing
//! them, and signing in with one alone (a discoverable credential: no address typed).
//!
//! The checks of the ceremonies are webauthn-rs's (attestation "none", user verification
//! required). Between the options a ceremony sends and the answer it checks, its state (the
//! challenge above all) is a store row, not a sealed blob handed to the client: a row is
//! taken (read and deleted) by the answer, so a ceremony is used once even when its answer
//! reaches another instance, and an answer replayed finds nothing. A registration is keyed
//! by the account (one at a time), a sign-in by the SHA-256 of the ceremony id it hands out.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Url, Webauthn, WebauthnBuilder, WebauthnError,
};

use super::email::token_hash;
use super::{AuthContext, AuthError, AuthService, ClientInfo, TokenGrant, Transport};
use crate::crypto;
use crate::domain::{AuditKind, FieldError, PasskeyId, Timestamp, UserId};
use crate::store::{CeremonyRecord, PasskeyRecord, StoreError, UserRecord};

/// How long a ceremony waits for its answer (also the timeout the browser is given).
pub const CEREMONY_TTL: Duration = Duration::from_secs(5 * 60);
/// The longest passkey name, in characters.
const MAX_NAME_CHARS: usize = 64;

const REGISTER: &str = "register";
const AUTHENTICATE: &str = "authenticate";
const SECOND_FACTOR: &str = "second_factor";

/// The relying party, or why passkeys are off.
#[derive(Clone, Debug)]
pub struct PasskeyPolicy {
    webauthn: Result<Arc<Webauthn>, String>,
}

impl PasskeyPolicy {
    /// Passkeys for the relying party `id` (a domain) and these origins; off, with the
    /// reason, when webauthn-rs refuses them.
    pub fn new(id: &str, origins: &[String], name: &str) -> PasskeyPolicy {
        let build = || -> Result<Webauthn, String> {
            let parse = |o: &str| Url::parse(o).map_err(|e| format!("origin {o:?}: {e}"));
            let first = parse(origins.first().ok_or("no origin")?)?;
            let mut builder = WebauthnBuilder::new(id, &first)
                .map_err(|e| format!("relying party {id:?}: {e}"))?
                .rp_name(name)
                .timeout(CEREMONY_TTL);
            for origin in &origins[1..] {
                builder = builder.append_allowed_origin(&parse(origin)?);
            }
            builder.build().map_err(|e| e.to_string())
        };
        PasskeyPolicy {
            webauthn: build().map(Arc::new),
        }
    }

    /// Passkeys off, for `reason`.
    pub fn off(reason: impl Into<String>) -> PasskeyPolicy {
        PasskeyPolicy {
            webauthn: Err(reason.into()),
        }
    }

    /// Why passkeys are off, if they are.
    pub fn off_reason(&self) -> Option<&str> {
        self.webauthn.as_ref().err().map(String::as_str)
    }

    fn webauthn(&self) -> Result<&Webauthn, AuthError> {
        self.webauthn.as_deref().map_err(|_| AuthError::PasskeysDisabled)
    }
}

/// A passkey as the account sees it.
#[derive(Clone, Debug)]
pub struct RegisteredPasskey {
    pub id: PasskeyId,
    pub name: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

impl From<&PasskeyRecord> for RegisteredPasskey {
    fn from(p: &PasskeyRecord) -> Self {
        RegisteredPasskey {
            id: p.id,
            name: p.name.clone(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

/// The options of a sign-in ceremony and the id its answer must name.
#[derive(Debug)]
pub struct PasskeySignInOptions {
    pub ceremony: String,
    /// `PublicKeyCredentialRequestOptions` under `publicKey`, as `navigator.credentials.get`
    /// takes them (binary fields base64url).
    pub options: serde_json::Value,
    pub expires_in: u64,
}

/// What an answer of webauthn-rs's checks means to the client.
fn refused(e: WebauthnError) -> AuthError {
    match e {
        WebauthnError::InvalidRPOrigin | WebauthnError::InvalidRPIDHash => AuthError::PasskeyWrongOrigin,
        WebauthnError::CredentialPossibleCompromise => AuthError::PasskeyCounterRegressed,
        other => AuthError::PasskeyInvalid(other.to_string()),
    }
}

/// `amr` (RFC 8176) of a passkey use: `swk` for a passkey that may be synced (backup
/// eligible), `hwk` for one bound to its device; `user` and `mfa` when the person was verified
/// (biometrics or a PIN: WebAuthn does not say which), as webauthn-rs requires.
pub(super) fn passkey_amr(result: &AuthenticationResult) -> Vec<String> {
    let key = if result.backup_eligible() { "swk" } else { "hwk" };
    let mut amr = vec![key.to_owned()];
    if result.user_verified() {
        amr.extend(["user".to_owned(), "mfa".to_owned()]);
    }
    amr
}

fn credential_id(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The counter a serialised passkey holds (0 when it has none).
fn stored_counter(passkey: &serde_json::Value) -> u32 {
    passkey["cred"]["counter"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(0)
}

fn check_name(name: &str) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AuthError::Validation(vec![FieldError::new(
            "name",
            "must be 1 to 64 characters, no control characters",
        )]));
    }
    Ok(name.to_owned())
}

fn internal(e: impl std::fmt::Display) -> AuthError {
    AuthError::Internal(e.to_string())
}

impl AuthService {
    /// Why passkeys are off on this server, if they are.
    pub fn passkeys_off_reason(&self) -> Option<&str> {
        self.policy.passkeys.off_reason()
    }

    /// Starts registering a passkey for the signed-in account: the options for
    /// `navigator.credentials.create` (resident key required, user verification required,
    /// the account's passkeys excluded). A newer start replaces an unfinished one.
    pub async fn passkey_registration_options(
        &self,
        ctx: &AuthContext,
    ) -> Result<serde_json::Value, AuthError> {
        let webauthn = self.policy.passkeys.webauthn()?;
        let user = &ctx.session.user;
        let existing = self.store.find_passkeys(user.id).await?;
        let exclude = existing
            .iter()
            .filter_map(|p| URL_SAFE_NO_PAD.decode(&p.credential_id).ok())
            .collect::<Vec<_>>();
        let (options, state) = webauthn
            .start_passkey_registration(user.id.0, &user.email, &user.email, Some(exclude))
            .map_err(internal)?;
        let mut options = serde_json::to_value(options).map_err(internal)?;
        // A passkey signs in without an address typed: the credential must be discoverable.
        // (webauthn-rs leaves it to the authenticator; the browser enforces what we ask.)
        if let Some(selection) = options["publicKey"]["authenticatorSelection"].as_object_mut() {
            selection.insert("residentKey".into(), "required".into());
            selection.insert("requireResidentKey".into(), true.into());
        }
        let now = self.clock.now();
        self.store
            .insert_passkey_ceremony(&CeremonyRecord {
                handle: format!("{REGISTER}:{}", user.id),
                kind: REGISTER.into(),
                user_id: Some(user.id),
                state: serde_json::to_string(&state).map_err(internal)?,
                created_at: now,
                expires_at: now.plus(CEREMONY_TTL),
            })
            .await?;
        Ok(options)
    }

    /// Finishes the registration the account started with the browser's answer
    /// (`PublicKeyCredential` as JSON, binary fields base64url).
    pub async fn register_passkey(
        &self,
        ctx: &AuthContext,
        name: Option<&str>,
        credential: &serde_json::Value,
        client: &ClientInfo,
    ) -> Result<RegisteredPasskey, AuthError> {
        let webauthn = self.policy.passkeys.webauthn()?;
        let name = name.map(check_name).transpose()?;
        let credential: RegisterPublicKeyCredential = serde_json::from_value(credential.clone())
            .map_err(|e| AuthError::PasskeyInvalid(format!("credential: {e}")))?;
        let user = ctx.user_id();
        let ceremony = self
            .take_ceremony(&format!("{REGISTER}:{user}"), REGISTER)
            .await?;
        let state: PasskeyRegistration = serde_json::from_str(&ceremony.state).map_err(internal)?;
        let passkey = webauthn
            .finish_passkey_registration(&credential, &state)
            .map_err(refused)?;
        let serialised = serde_json::to_value(&passkey).map_err(internal)?;
        let count = self.store.find_passkeys(user).await?.len();
        let record = PasskeyRecord {
            id: PasskeyId::new(),
            user_id: user,
            credential_id: credential_id(passkey.cred_id().as_ref()),
            name: name.unwrap_or_else(|| format!("Passkey {}", count + 1)),
            counter: stored_counter(&serialised),
            passkey: serialised.to_string(),
            created_at: self.clock.now(),
            last_used_at: None,
        };
        match self.store.insert_passkey(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(AuthError::PasskeyAlreadyRegistered),
            Err(e) => return Err(e.into()),
        }
        self.events
            .security(
                AuditKind::PasskeyAdded,
                Some(user),
                Some(ctx.session_id()),
                client,
                Some(format!("passkey {} ({})", record.id, record.name)),
            )
            .await;
        self.security_notice(
            &ctx.session.user.email,
            &format!("a passkey was added to your account ({})", record.name),
        )
        .await;
        Ok(RegisteredPasskey::from(&record))
    }

    /// The account's passkeys, oldest first.
    pub async fn list_passkeys(&self, ctx: &AuthContext) -> Result<Vec<RegisteredPasskey>, AuthError> {
        self.policy.passkeys.webauthn()?;
        let passkeys = self.store.find_passkeys(ctx.user_id()).await?;
        Ok(passkeys.iter().map(RegisteredPasskey::from).collect())
    }

    /// Renames one of the account's passkeys (another account's is not found).
    pub async fn rename_passkey(
        &self,
        ctx: &AuthContext,
        id: &str,
        name: &str,
    ) -> Result<RegisteredPasskey, AuthError> {
        self.policy.passkeys.webauthn()?;
        let id = PasskeyId::parse(id).ok_or(AuthError::PasskeyNotFound)?;
        let name = check_name(name)?;
        if !self.store.rename_passkey(ctx.user_id(), id, &name).await? {
            return Err(AuthError::PasskeyNotFound);
        }
        let passkeys = self.store.find_passkeys(ctx.user_id()).await?;
        passkeys
            .iter()
            .find(|p| p.id == id)
            .map(RegisteredPasskey::from)
            .ok_or(AuthError::PasskeyNotFound)
    }

    /// Removes one of the account's passkeys (another account's is not found).
    pub async fn delete_passkey(
        &self,
        ctx: &AuthContext,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.policy.passkeys.webauthn()?;
        let id = PasskeyId::parse(id).ok_or(AuthError::PasskeyNotFound)?;
        let removed = self
            .store
            .delete_passkey(ctx.user_id(), id)
            .await?
            .ok_or(AuthError::PasskeyNotFound)?;
        self.events
            .security(
                AuditKind::PasskeyRemoved,
                Some(ctx.user_id()),
                Some(ctx.session_id()),
                client,
                Some(format!("passkey {} ({})", removed.id, removed.name)),
            )
            .await;
        self.security_notice(
            &ctx.session.user.email,
            &format!("a passkey was removed from your account ({})", removed.name),
        )
        .await;
        Ok(())
    }

    /// Starts a sign-in with a passkey alone: options for `navigator.credentials.get` with no
    /// credentials listed (the authenticator offers the ones it holds for this party).
    pub async fn passkey_sign_in_options(&self) -> Result<PasskeySignInOptions, AuthError> {
        let webauthn = self.policy.passkeys.webauthn()?;
        let (mut options, state) = webauthn.start_discoverable_authentication().map_err(internal)?;
        // webauthn-rs asks for conditional mediation (autofill); a button wants the modal
        // prompt, and a page that wants autofill sets `mediation` itself.
        options.mediation = None;
        let ceremony = crypto::random_token(&self.rng, 32)?;
        let now = self.clock.now();
        self.store
            .insert_passkey_ceremony(&CeremonyRecord {
                handle: token_hash(&ceremony),
                kind: AUTHENTICATE.into(),
                user_id: None,
                state: serde_json::to_string(&state).map_err(internal)?,
                created_at: now,
                expires_at: now.plus(CEREMONY_TTL),
            })
            .await?;
        Ok(PasskeySignInOptions {
            ceremony,
            options: serde_json::to_value(options).map_err(internal)?,
            expires_in: CEREMONY_TTL.as_secs(),
        })
    }

    /// Signs in with the browser's answer to the ceremony `ceremony`: a new session, as a
    /// password login opens one.
    pub async fn sign_in_with_passkey(
        &self,
        ceremony: &str,
        credential: &serde_json::Value,
        transport: Transport,
        client: &ClientInfo,
    ) -> Result<TokenGrant, AuthError> {
        let webauthn = self.policy.passkeys.webauthn()?;
        let credential: PublicKeyCredential = serde_json::from_value(credential.clone())
            .map_err(|e| AuthError::PasskeyInvalid(format!("credential: {e}")))?;
        let ceremony = self.take_ceremony(&token_hash(ceremony), AUTHENTICATE).await?;
        let state: DiscoverableAuthentication = serde_json::from_str(&ceremony.state).map_err(internal)?;
        let (handle, raw_id) = webauthn
            .identify_discoverable_authentication(&credential)
            .map_err(refused)?;
        let found = self
            .store
            .find_passkey_by_credential(&credential_id(raw_id))
            .await?;
        // The credential must be registered, to the account its user handle names.
        let (record, user) = match found {
            Some((record, user)) if record.user_id.0 == handle => (record, user),
            _ => {
                self.events
                    .audit(
                        AuditKind::LoginFailed,
                        None,
                        None,
                        client,
                        Some("passkey: unknown credential".into()),
                    )
                    .await;
                return Err(AuthError::PasskeyUnknown);
            }
        };
        let mut passkey: Passkey = serde_json::from_str(&record.passkey).map_err(internal)?;
        let result = match webauthn.finish_discoverable_authentication_v2(&credential, state, &passkey) {
            Ok(result) => result,
            Err(e) => {
                let error = refused(e);
                self.passkey_refused(&error, &record, &user, client).await;
                return Err(error);
            }
        };
        passkey.update_credential(&result);
        let now = self.clock.now();
        let serialised = serde_json::to_string(&passkey).map_err(internal)?;
        // Only while the stored counter is below this one: two answers signed with the same
        // counter (a cloned key racing this check) do not both pass.
        if !self
            .store
            .record_passkey_use(record.id, &serialised, result.counter(), now)
            .await?
        {
            let error = AuthError::PasskeyCounterRegressed;
            self.passkey_refused(&error, &record, &user, client).await;
            return Err(error);
        }
        if self.policy.email.require_verified && user.email_verified_at.is_none() {
            return Err(AuthError::EmailNotVerified);
        }
        // A passkey verified with the person's fingerprint, face or PIN is two factors in
        // itself: no second step follows.
        self.open_session(
            &user,
            user.credential_epoch,
            transport,
            client,
            passkey_amr(&result),
            now,
            Some("passkey".into()),
        )
        .await
    }

    /// Audits a refused sign-in; a counter gone backwards is a security event (a cloned
    /// authenticator is one explanation).
    async fn passkey_refused(
        &self,
        error: &AuthError,
        record: &PasskeyRecord,
        user: &UserRecord,
        client: &ClientInfo,
    ) {
        let detail = format!("passkey {} ({}): {error}", record.id, record.name);
        if matches!(error, AuthError::PasskeyCounterRegressed) {
            self.events
                .security(
                    AuditKind::PasskeyCounterRegressed,
                    Some(user.id),
                    None,
                    client,
                    Some(detail),
                )
                .await;
        } else {
            self.events
                .audit(AuditKind::LoginFailed, Some(user.id), None, client, Some(detail))
                .await;
        }
    }

    /// Takes the ceremony `handle` (a second answer finds nothing); it must be of `kind`
    /// and unexpired.
    async fn take_ceremony(&self, handle: &str, kind: &str) -> Result<CeremonyRecord, AuthError> {
        let ceremony = self
            .store
            .take_passkey_ceremony(handle)
            .await?
            .filter(|c| c.kind == kind)
            .ok_or(AuthError::PasskeyCeremonyInvalid)?;
        if self.clock.now() >= ceremony.expires_at {
            return Err(AuthError::PasskeyCeremonyExpired);
        }
        Ok(ceremony)
    }

    /// Starts a passkey as the second step of the sign-in `challenge` (a first step's
    /// challenge, live): request options listing the account's passkeys. The ceremony is the
    /// account's (`mfa:<user>`), answered through `POST /v1/auth/mfa/verify`.
    pub async fn passkey_factor_options(
        &self,
        challenge: &str,
        browser: Option<&str>,
    ) -> Result<serde_json::Value, AuthError> {
        self.policy.passkeys.webauthn()?;
        let record = self.live_challenge(challenge, browser).await?;
        self.start_factor_ceremony(record.user_id).await
    }

    /// Starts a passkey ceremony for the signed-in holder of `ctx` to reauthenticate with
    /// (`POST /v1/auth/reauthenticate` `{method: "passkey", credential}` answers it).
    pub async fn reauthentication_passkey_options(
        &self,
        ctx: &AuthContext,
    ) -> Result<serde_json::Value, AuthError> {
        self.start_factor_ceremony(ctx.user_id()).await
    }

    /// Options for `navigator.credentials.get` listing `user`'s passkeys, the ceremony kept
    /// (one per account, single use) for [`AuthService::check_passkey_factor`].
    async fn start_factor_ceremony(&self, user: UserId) -> Result<serde_json::Value, AuthError> {
        let webauthn = self.policy.passkeys.webauthn()?;
        let passkeys = self
            .store
            .find_passkeys(user)
            .await?
            .iter()
            .map(|p| serde_json::from_str::<Passkey>(&p.passkey).map_err(internal))
            .collect::<Result<Vec<_>, _>>()?;
        if passkeys.is_empty() {
            return Err(AuthError::PasskeyUnknown);
        }
        let (options, state) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(internal)?;
        let now = self.clock.now();
        self.store
            .insert_passkey_ceremony(&CeremonyRecord {
                handle: format!("{SECOND_FACTOR}:{user}"),
                kind: SECOND_FACTOR.into(),
                user_id: Some(user),
                state: serde_json::to_string(&state).map_err(internal)?,
                created_at: now,
                expires_at: now.plus(CEREMONY_TTL),
            })
            .await?;
        serde_json::to_value(options).map_err(internal)
    }

    /// Checks a passkey's answer to `user`'s second-factor ceremony; the `amr` value of the
    /// key (`hwk` or `swk`).
    pub(super) async fn check_passkey_factor(
        &self,
        user: &UserRecord,
        credential: &serde_json::Value,
        client: &ClientInfo,
    ) -> Result<&'static str, AuthError> {
        let webauthn = self.policy.passkeys.webauthn()?;
        let credential: PublicKeyCredential = serde_json::from_value(credential.clone())
            .map_err(|e| AuthError::PasskeyInvalid(format!("credential: {e}")))?;
        let ceremony = self
            .take_ceremony(&format!("{SECOND_FACTOR}:{}", user.id), SECOND_FACTOR)
            .await?;
        let state: PasskeyAuthentication = serde_json::from_str(&ceremony.state).map_err(internal)?;
        let record = match self
            .store
            .find_passkey_by_credential(&credential_id(&credential.raw_id))
            .await?
        {
            Some((record, _)) if record.user_id == user.id => record,
            _ => return Err(AuthError::PasskeyUnknown),
        };
        let result = match webauthn.finish_passkey_authentication(&credential, &state) {
            Ok(result) => result,
            Err(e) => {
                let error = refused(e);
                self.passkey_refused(&error, &record, user, client).await;
                return Err(error);
            }
        };
        let mut passkey: Passkey = serde_json::from_str(&record.passkey).map_err(internal)?;
        passkey.update_credential(&result);
        let serialised = serde_json::to_string(&passkey).map_err(internal)?;
        if !self
            .store
            .record_passkey_use(record.id, &serialised, result.counter(), self.clock.now())
            .await?
        {
            let error = AuthError::PasskeyCounterRegressed;
            self.passkey_refused(&error, &record, user, client).await;
            return Err(error);
        }
        Ok(if result.backup_eligible() { "swk" } else { "hwk" })
    }
}
