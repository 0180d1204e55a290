//! What the flows take and give besides errors: who is asking, how a client holds its
//! tokens, and the views of users, sessions and grants (never a store row, so no token
//! hashes and no CSRF token reach a caller by accident).

use std::sync::Arc;

use serde::Serialize;

use super::liveness::SessionSnapshot;
use super::metadata::metadata_value;
use crate::crypto::RefreshToken;
use crate::domain::{SessionId, Timestamp, UserId};
use crate::store::{SessionRecord, UserRecord};
use crate::tokens::AccessClaims;

/// Who is asking, as far as we can tell; recorded on sessions and audit events.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub created_at: Timestamp,
    /// The address was proved by a mailed link.
    pub email_verified: bool,
    /// The user's metadata, where the answer was read from the account (token responses, the
    /// metadata endpoints); `None` in the memory of sessions, which stays small.
    pub metadata: Option<UserMetadata>,
}

/// A user's two metadata objects.
#[derive(Clone, Debug, Serialize)]
pub struct UserMetadata {
    /// The user edits it.
    pub user_metadata: serde_json::Value,
    /// Only administrators set it.
    pub app_metadata: serde_json::Value,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> Self {
        UserView {
            metadata: Some(UserMetadata {
                user_metadata: metadata_value(&u.user_metadata),
                app_metadata: metadata_value(&u.app_metadata),
            }),
            ..UserView::slim(u)
        }
    }
}

impl UserView {
    /// Without the metadata: what the memory of sessions keeps.
    pub fn slim(u: &UserRecord) -> UserView {
        UserView {
            id: u.id,
            email: u.email.as_str().to_owned(),
            created_at: u.created_at,
            email_verified: u.email_verified_at.is_some(),
            metadata: None,
        }
    }
}

/// A session as its owner (or an administrator) sees it: never the store's row, so no token
/// hashes and no CSRF token.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    pub id: SessionId,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    /// When it ends if nothing more happens.
    pub expires_at: Timestamp,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl From<&SessionRecord> for SessionView {
    fn from(s: &SessionRecord) -> Self {
        SessionView {
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at(),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
        }
    }
}

/// How a client holds its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Mobile/API clients: tokens in response bodies, access token as a bearer header.
    Body,
    /// Browsers: tokens in HttpOnly cookies, a CSRF token bound to the session.
    Cookie,
}

/// What a login or refresh hands out. Its `Debug` shows no token.
pub struct TokenGrant {
    pub access_token: String,
    pub access_expires_in: i64,
    pub refresh_token: RefreshToken,
    pub refresh_expires_in: i64,
    pub session_id: SessionId,
    pub user: UserView,
    /// Present for cookie-transport sessions.
    pub csrf_token: Option<String>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("session_id", &self.session_id)
            .field("access_expires_in", &self.access_expires_in)
            .field("refresh_token", &self.refresh_token)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .field("user", &self.user.id)
            .finish_non_exhaustive()
    }
}

/// A verified access token whose session is live.
#[derive(Clone, Debug)]
pub struct AuthContext {
    pub claims: Arc<AccessClaims>,
    pub session: Arc<SessionSnapshot>,
}

impl AuthContext {
    pub fn user_id(&self) -> UserId {
        self.session.user_id()
    }

    pub fn session_id(&self) -> SessionId {
        self.session.id
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoutScope {
    All,
    Others,
}

/// What `logout` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoutOutcome {
    /// A session was ended, or there was nothing to end.
    Done,
    /// The refresh token was a rotated-out one the grace rule does not forgive: the session
    /// was revoked as stolen (the answer is still 204).
    ReuseDetected,
}

/// What a correct first credential (a password, a sign-in link) leads to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// A new session.
    Tokens(TokenGrant),
    /// The account has a second factor: no session yet, a challenge for the second step.
    MfaRequired(MfaChallenge),
}

/// A login's pending second step, as handed to the client. Its `Debug` shows no secret.
pub struct MfaChallenge {
    /// The opaque challenge for `POST /v1/auth/mfa/verify`.
    pub challenge: String,
    pub expires_in: i64,
    /// The methods the account can use (`totp`, `passkey`, `recovery_code`).
    pub methods: Vec<&'static str>,
    /// Cookie transport: the value of the `tessera_mfa` cookie that must come back with the
    /// challenge (so only this browser can finish).
    pub browser_cookie: Option<String>,
}

impl std::fmt::Debug for MfaChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaChallenge")
            .field("expires_in", &self.expires_in)
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}
