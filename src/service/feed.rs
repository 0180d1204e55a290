//! The revocation feed for resource servers. APIs that verify access tokens locally accept a
//! revoked session's tokens until they expire (15 minutes by default); reading this feed, they
//! refuse them within a second instead, with no call to Tessera per request.
//!
//! Entries come from the revocation log every instance already follows (`revocations`), in
//! the order of their sequence numbers, so a reader resumes after the last one it saw. A
//! reader that asks with nothing new waits (long-poll) until this instance learns of a
//! revocation, or its wait ends.

use std::fmt;
use std::time::Duration;

use ring::digest::{digest, SHA256};

use super::{AuthError, AuthService, REVOCATION_POLL_EVERY};
use crate::store::FeedRevocation;

/// The longest a reader may wait for news: below common proxy and client idle timeouts.
pub const FEED_MAX_WAIT: Duration = Duration::from_secs(30);
/// The most entries one answer carries; a reader catching up asks again at once.
pub const FEED_MAX_PAGE: u32 = 1000;

/// The bearer credentials resource servers read the feed with. Only their SHA-256 digests
/// are kept and compared: how long a comparison takes then says nothing about the secret.
#[derive(Clone, Default)]
pub struct FeedCredentials(Vec<[u8; 32]>);

impl FeedCredentials {
    pub fn new<S: AsRef<str>>(credentials: &[S]) -> FeedCredentials {
        FeedCredentials(credentials.iter().map(|c| sha256(c.as_ref())).collect())
    }

    /// Without any credential the feed is off.
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    pub fn accepts(&self, presented: &str) -> bool {
        let presented = sha256(presented);
        self.0.contains(&presented)
    }
}

impl fmt::Debug for FeedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeedCredentials(<{} redacted>)", self.0.len())
    }
}

fn sha256(text: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
    out
}

/// One answer of the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationPage {
    pub revocations: Vec<FeedRevocation>,
    /// Where to resume: the last entry's number, or the `after` asked when there was none.
    pub next: i64,
}

/// What a reader asks for.
#[derive(Clone, Copy, Debug)]
pub struct FeedQuery {
    pub after: i64,
    pub limit: u32,
    /// How long to wait when there is nothing after `after` (capped at [`FEED_MAX_WAIT`]).
    pub wait: Duration,
}

impl AuthService {
    /// Revocations numbered after `query.after`, for the resource server presenting
    /// `credential`; waits up to `query.wait` for one when there is none yet.
    pub async fn revocations_after(
        &self,
        credential: Option<&str>,
        query: FeedQuery,
    ) -> Result<RevocationPage, AuthError> {
        let credentials = &self.policy.feed_credentials;
        if !credentials.enabled() {
            return Err(AuthError::FeedDisabled);
        }
        if !credential.is_some_and(|c| credentials.accepts(c)) {
            return Err(AuthError::InvalidToken);
        }
        let limit = query.limit.clamp(1, FEED_MAX_PAGE);
        let deadline = tokio::time::Instant::now() + query.wait.min(FEED_MAX_WAIT);
        loop {
            // Listening before reading: a revocation learnt between the read and the wait
            // still wakes us.
            let learnt = self.revocations.next_learnt();
            tokio::pin!(learnt);
            learnt.as_mut().enable();
            let found = self.store.find_revocations_after(query.after, limit).await?;
            let now = tokio::time::Instant::now();
            if !found.is_empty() || now >= deadline {
                let next = found.last().map_or(query.after, |r| r.seq);
                return Ok(RevocationPage {
                    revocations: found,
                    next,
                });
            }
            // Asked again at least every poll interval: while this instance's own follower
            // is out of step, nobody wakes us.
            let _ = tokio::time::timeout_at(deadline.min(now + REVOCATION_POLL_EVERY), learnt).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_credentials_are_accepted() {
        let credentials = FeedCredentials::new(&["a".repeat(32), "b".repeat(40)]);
        assert!(credentials.enabled());
        assert!(credentials.accepts(&"a".repeat(32)));
        assert!(credentials.accepts(&"b".repeat(40)));
        assert!(!credentials.accepts(&"a".repeat(31)));
        assert!(!credentials.accepts(""));
        assert!(!FeedCredentials::default().enabled());
        assert!(!format!("{credentials:?}").contains("aaaa"));
    }
}
