//! `tessera users import`: accounts from the stacks Tessera replaces, one JSON object per
//! line: `{"email", "password_hash", "created_at"?, "roles"?}`. The hashes are kept as they
//! are (bcrypt or argon2 PHC strings) and upgraded to our argon2id at each user's next login.
//!
//! Idempotent: an account whose email is present (from an earlier run, or earlier in the same
//! file) is left as it is and counted as "already present".

use serde_json::{json, Value};

use super::admin::{normalize_roles, AdminService};
use super::AuthError;
use crate::crypto::{imported, PasswordHashString};
use crate::domain::{AuditKind, Email, Timestamp};
use crate::store::UserRecord;

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub imported: u64,
    pub already_present: u64,
    pub bad: u64,
}

impl std::fmt::Display for ImportCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {}, already present {}, bad {}",
            self.imported, self.already_present, self.bad
        )
    }
}

/// Reads one line of an import file into the account it describes (`now` is its creation
/// time if the line gives none). `Err` says what is wrong in our words (never a parser's
/// internals), never quoting the hash.
pub fn parse_import_line(line: &str, now: Timestamp) -> Result<UserRecord, String> {
    let value: Value = serde_json::from_str(line).map_err(|_| "not a JSON object".to_owned())?;
    let Value::Object(fields) = value else {
        return Err(
            "not an account: one JSON object per line expected, {\"email\", \"password_hash\", ...}"
                .to_owned(),
        );
    };
    // Other fields (an export's `name`, `id`, ...) are left behind: they have no place here.
    let text = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Err(format!("{name} is missing")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{name} must be a string")),
    };
    let email = text("email")?;
    let password_hash = text("password_hash")?;
    let email = Email::parse(&email).map_err(|e| format!("email {}", e.message))?;
    imported::check_importable(&password_hash)?;
    let created_at = match fields.get("created_at") {
        None | Some(Value::Null) => now,
        Some(Value::Number(n)) => Timestamp(
            n.as_i64()
                .ok_or("created_at must be whole milliseconds since the epoch")?,
        ),
        Some(Value::String(text)) => parse_time(text)?,
        Some(_) => return Err("created_at must be an RFC 3339 time or milliseconds".to_owned()),
    };
    let roles = match fields.get("roles") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| r.as_str().map(str::to_owned).ok_or("roles must be strings"))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("roles must be an array of strings".to_owned()),
    };
    let roles = normalize_roles(&roles).map_err(|e| match e {
        AuthError::Validation(errors) => errors
            .first()
            .map_or_else(|| "invalid role".to_owned(), |e| format!("role {}", e.message)),
        other => other.to_string(),
    })?;
    Ok(UserRecord {
        roles,
        ..UserRecord::new(email, PasswordHashString(password_hash), created_at)
    })
}

/// What the start of a file that is not JSON Lines looks like, said before anything is read
/// as an account: a JSON array, or CSV.
pub fn wrong_format(first_line: &str) -> Option<&'static str> {
    let first = first_line.trim_start_matches('\u{feff}').trim();
    if first.starts_with('[') {
        Some("this is a JSON array; JSON Lines expected (one object per line): convert it with `jq -c '.[]' FILE`")
    } else if !first.is_empty() && !first.starts_with('{') && first.contains(',') {
        Some("this looks like CSV; JSON Lines expected (one object per line: {\"email\": ..., \"password_hash\": ...})")
    } else {
        None
    }
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|_| {
            format!("created_at {text:?} is not an RFC 3339 time or milliseconds since the epoch")
        })?;
    let millis = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(millis)
        .map(Timestamp)
        .map_err(|_| format!("created_at {text:?} is out of range"))
}

impl AdminService {
    /// Inserts a batch of parsed accounts in one transaction; returns how many were new.
    pub async fn import_users(&self, users: &[UserRecord]) -> Result<u64, AuthError> {
        Ok(self.store.insert_users_if_absent(users).await?)
    }

    /// Records a finished import in the audit trail (one event, not one per account).
    pub async fn record_import(&self, file: &str, counts: ImportCounts) {
        self.audit(
            AuditKind::AdminUsersImported,
            None,
            None,
            json!({ "file": file, "imported": counts.imported,
                    "already_present": counts.already_present, "bad": counts.bad }),
        )
        .await;
    }

    /// Now, on this service's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_700_000_000_000);

    fn bcrypt_hash() -> String {
        bcrypt::hash("hunter22", 4).unwrap()
    }

    #[test]
    fn good_lines_become_accounts() {
        let hash = bcrypt_hash();
        let line = json!({ "email": " Ann@Example.COM ", "password_hash": hash,
                           "created_at": "2024-03-01T12:00:00.250Z", "roles": ["admin", "admin"] });
        let u = parse_import_line(&line.to_string(), NOW).unwrap();
        assert_eq!(u.email.as_str(), "ann@example.com");
        assert_eq!(u.password_hash.0, hash);
        assert_eq!(u.created_at, Timestamp(1_709_294_400_250));
        assert_eq!(u.roles, vec!["admin".to_string()]);

        let bare = json!({ "email": "b@example.com", "password_hash": hash, "created_at": 1234 });
        let u = parse_import_line(&bare.to_string(), NOW).unwrap();
        assert_eq!((u.created_at, u.roles.len()), (Timestamp(1234), 0));
        let none = json!({ "email": "c@example.com", "password_hash": hash, "extra": true });
        assert_eq!(parse_import_line(&none.to_string(), NOW).unwrap().created_at, NOW);
    }

    #[test]
    fn a_json_array_or_csv_is_named_before_any_line_is_read() {
        assert!(wrong_format("[{\"email\": \"a@example.com\"}]").is_some_and(|w| w.contains("JSON array")));
        assert!(wrong_format("email,password_hash").is_some_and(|w| w.contains("CSV")));
        assert_eq!(
            wrong_format("{\"email\": \"a@example.com\", \"password_hash\": \"x\"}"),
            None
        );
        assert_eq!(wrong_format(""), None);
    }

    #[test]
    fn bad_lines_say_why_without_quoting_the_hash() {
        let hash = bcrypt_hash();
        let cases = [
            ("{not json".to_owned(), "not a JSON object"),
            ("[1, 2]".to_owned(), "not an account"),
            (
                json!({ "email": 1, "password_hash": hash }).to_string(),
                "email must be a string",
            ),
            (json!({ "password_hash": hash }).to_string(), "email"),
            (
                json!({ "email": "nope", "password_hash": hash }).to_string(),
                "email",
            ),
            (json!({ "email": "a@example.com" }).to_string(), "password_hash"),
            (
                json!({ "email": "a@example.com", "password_hash": "plain-secret" }).to_string(),
                "neither bcrypt",
            ),
            (
                json!({ "email": "a@example.com", "password_hash": hash, "created_at": "yesterday" })
                    .to_string(),
                "created_at",
            ),
            (
                json!({ "email": "a@example.com", "password_hash": hash, "roles": ["a b"] }).to_string(),
                "role",
            ),
        ];
        for (line, expected) in cases {
            let err = parse_import_line(&line, NOW).expect_err(&line);
            assert!(err.contains(expected), "{line}: {err}");
            assert!(
                !err.contains(" at line ") && !err.contains("invalid type"),
                "{err}"
            );
            assert!(!err.contains(&hash) && !err.contains("plain-secret"), "{err}");
        }
    }
}
