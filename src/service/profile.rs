//! The signed-in user's own account data: reading it fresh, and editing `user_metadata`.
//! (`GET /v1/auth/me` answers from the memory of sessions; these read the account.)

use super::metadata::metadata_text;
use super::views::{AuthContext, UserView};
use super::{AuthError, AuthService};

impl AuthService {
    /// The caller's account as stored now, metadata included.
    pub async fn my_account(&self, ctx: &AuthContext) -> Result<UserView, AuthError> {
        match self.store.find_user_by_id(ctx.user_id()).await? {
            Some(user) => Ok(UserView::from(&user)),
            // Deleted since the token was checked.
            None => Err(AuthError::SessionRevoked),
        }
    }

    /// Replaces the caller's `user_metadata` (a JSON object, size-bounded); answers the
    /// account as it is now.
    pub async fn set_my_metadata(
        &self,
        ctx: &AuthContext,
        user_metadata: &serde_json::Value,
    ) -> Result<UserView, AuthError> {
        let text = metadata_text("user_metadata", user_metadata)?;
        match self.store.update_user_metadata(ctx.user_id(), &text).await? {
            Some(user) => Ok(UserView::from(&user)),
            None => Err(AuthError::SessionRevoked),
        }
    }
}
