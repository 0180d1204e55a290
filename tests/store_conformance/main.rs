//! The storage conformance suite: every case is written once, as a function of a `Store`, and
//! runs against SQLite and PostgreSQL (see the `conformance!` list at the bottom).

#[path = "../support/postgres.rs"]
mod postgres_support;

use std::sync::Arc;

use ring::rand::SystemRandom;
use tessera::crypto::{PasswordHashString, RefreshToken, RefreshTokenHash, RefreshTokenKey};
use tessera::domain::{AuditKind, Email, SessionId, Timestamp, UserId};
use tessera::store::{
    self, AccountFilter, AfterKeyRevocation, AuditEvent, AuditFilter, CurrentRotation, FailureKey,
    KeyRevocation, LoginFailures, NewAlert, NewMail, Rotation, SessionRecord, SessionStore, Store,
    StoreError, UserRecord,
};
use tessera::tokens::SigningKeyRecord;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const DAY: i64 = 86_400_000;

fn hash() -> RefreshTokenHash {
    RefreshToken::issue(&SystemRandom::new(), SessionId::new(), 0)
        .expect("rng")
        .hash()
}

/// How the service would find a token of generation `generation` of `session` hashed `hash`.
fn key(session: SessionId, generation: i64, hash: RefreshTokenHash) -> RefreshTokenKey {
    RefreshTokenKey::Chained {
        session_id: session,
        generation,
        hash,
    }
}

/// The key of the token a rotation made the session's current one.
fn rotated_to(r: &Rotation) -> RefreshTokenKey {
    key(r.session_id, r.expected_generation + 1, r.new_hash)
}

/// The key of the token a one-step rotation issues.
fn successor(step: &CurrentRotation) -> RefreshTokenKey {
    key(step.session_id, step.generation + 1, step.new_hash)
}

fn user(email: &str) -> UserRecord {
    UserRecord {
        roles: vec!["reader".into()],
        ..UserRecord::new(
            Email::parse(email).expect("email"),
            PasswordHashString("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
            T0,
        )
    }
}

fn session(user: &UserRecord, last_used: Timestamp) -> SessionRecord {
    SessionRecord {
        user_agent: Some("conformance/1.0".into()),
        ip: Some("127.0.0.1".into()),
        ..SessionRecord::opened(
            user.id,
            last_used,
            Timestamp(T0.0 + 90 * DAY),
            Timestamp(T0.0 + 30 * DAY),
            vec!["pwd".into()],
            last_used,
        )
    }
}

/// A user with one session; returns both and the key of the session's first token.
async fn seeded(store: &dyn Store) -> (UserRecord, SessionRecord, RefreshTokenKey) {
    let u = user(&format!("{}@example.com", uuid::Uuid::new_v4().simple()));
    store.insert_user(&u).await.expect("insert user");
    let s = session(&u, T0);
    let h = hash();
    store.insert_session(&s, &h, 0).await.expect("insert session");
    let first = key(s.id, 0, h);
    (u, s, first)
}

/// `n` sessions of `user`, last used at `T0`, each with its first token.
async fn insert_sessions(store: &dyn Store, user: &UserRecord, n: usize) -> Vec<SessionRecord> {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let s = session(user, T0);
        store.insert_session(&s, &hash(), 0).await.expect("session");
        sessions.push(s);
    }
    sessions
}

/// The ids of a user's live sessions, in the store's order (most recently used first).
async fn live_ids(store: &dyn Store, user: UserId, now: Timestamp) -> Vec<SessionId> {
    let live = store.find_live_sessions(user, now).await.expect("list");
    live.iter().map(|s| s.id).collect()
}

fn rotation(s: &SessionRecord, expected: i64, now: Timestamp) -> Rotation {
    Rotation {
        session_id: s.id,
        expected_generation: expected,
        new_hash: hash(),
        sealed_new: Some(vec![7; 60]),
        now,
        refresh_expires_at: Timestamp(now.0 + 30 * DAY),
    }
}

fn one_step(presented: RefreshTokenKey, now: Timestamp, csrf: Option<&str>) -> CurrentRotation {
    let RefreshTokenKey::Chained {
        session_id,
        generation,
        hash: presented,
    } = presented
    else {
        panic!("only chained tokens rotate in one step");
    };
    CurrentRotation {
        session_id,
        generation,
        presented,
        new_hash: hash(),
        sealed_new: vec![9; 60],
        now,
        refresh_expires_at: Timestamp(now.0 + 30 * DAY),
        csrf: csrf.map(str::to_owned),
    }
}

mod accounts;
mod alerts;
mod audit;
mod email_tokens;
mod factors;
mod keys;
mod lockout;
mod mail;
mod passkeys;
mod postgres_batches;
mod revocations;
mod rotations;
mod sessions;

async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (store::connect(&url, 8).await.expect("sqlite store"), dir)
}

/// Declares every case once; each becomes a test per backend.
macro_rules! conformance {
    ($($module:ident::$case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, _dir) = super::sqlite_store().await;
                    super::$module::$case(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(db) = super::postgres_support::TestDatabase::create(stringify!($case)).await else {
                        return;
                    };
                    let store = tessera::store::connect(&db.url, 8).await.expect("postgres store");
                    super::$module::$case(store).await;
                    db.drop_database().await;
                }
            )*
        }
    };
}

conformance!(
    accounts::users_are_unique_by_email,
    sessions::sessions_round_trip,
    rotations::rotation_advances_the_chain_once,
    rotations::concurrent_rotations_have_one_winner,
    rotations::the_current_token_rotates_in_one_step,
    rotations::one_step_rotation_leaves_every_other_case_to_the_slow_path,
    rotations::concurrent_one_step_rotations_have_one_winner,
    rotations::a_rotation_racing_a_revocation_never_outlives_it,
    revocations::revocations_are_logged_however_they_are_made,
    rotations::revoked_or_ended_sessions_do_not_rotate,
    rotations::revocation_clears_the_sealed_successor,
    sessions::user_sessions_revoke_all_or_others,
    sessions::live_sessions_are_listed_most_recent_first,
    sessions::sessions_over_the_limit_are_revoked_least_recent_first,
    sessions::ended_sessions_are_deleted_with_their_tokens,
    sessions::idle_sessions_are_deleted_by_walking_every_session,
    keys::one_active_signing_key_even_when_racing,
    keys::rotating_the_signing_key_retires_the_active_one,
    keys::rotating_at_once_over_a_next_key_retires_both_now,
    keys::revoking_a_signing_key_applies_its_follow_up_in_one_go,
    keys::revoking_a_next_key_restores_the_key_it_was_to_replace,
    keys::a_private_key_is_replaced_only_if_unchanged,
    lockout::login_failures_are_counted_atomically,
    accounts::a_password_change_moves_the_epoch_and_ends_the_other_sessions,
    accounts::a_session_insert_racing_a_password_change_never_outlives_it,
    audit::audit_events_are_swept_by_age,
    sessions::sweeping_in_batches_leaves_rotations_alone,
    audit::audit_events_and_ping,
    accounts::accounts_are_found_paged_and_have_their_roles_replaced,
    accounts::accounts_are_listed_by_id_with_filters_and_carry_metadata,
    accounts::a_deleted_user_leaves_no_session_and_pseudonymous_audit_events,
    accounts::a_disabled_user_gets_no_session_until_enabled,
    accounts::a_session_insert_racing_a_disable_never_outlives_it,
    accounts::imported_users_are_inserted_once,
    accounts::a_password_hash_is_upgraded_only_if_unchanged,
    audit::audit_events_are_read_newest_first_by_filter,
    alerts::alerts_are_queued_once_per_dedup_key,
    alerts::claimed_alerts_are_leased_rescheduled_and_delivered,
    alerts::concurrent_claimers_never_get_the_same_alert,
    mail::mails_are_queued_claimed_rescheduled_and_sent,
    mail::a_mail_given_up_is_final_and_finished_mails_are_pruned,
    mail::concurrent_mail_claimers_never_get_the_same_mail,
    mail::released_claims_are_claimable_at_once,
    sessions::known_devices_come_from_sessions_and_successful_logins,
    email_tokens::an_email_token_is_stored_with_its_mail_and_superseded_by_a_newer_one,
    email_tokens::a_sign_in_links_browser_binding_is_kept,
    email_tokens::concurrent_uses_of_an_email_token_have_one_winner,
    email_tokens::an_address_is_verified_and_changed_unless_taken,
    passkeys::passkeys_are_per_account_and_unique_by_credential,
    passkeys::all_of_an_accounts_passkeys_are_deleted_at_once,
    passkeys::a_ceremony_is_taken_once_and_replaced_by_its_handle,
    factors::a_totp_factor_counts_once_confirmed_and_accepts_each_step_once,
    factors::recovery_codes_are_replaced_as_a_set_and_spent_once,
    factors::a_login_challenge_is_used_once_and_dies_after_wrong_codes,
    factors::sessions_keep_how_and_when_their_holder_signed_in,
    factors::totp_secrets_are_listed_in_pages_and_replaced_only_if_unchanged,
);
