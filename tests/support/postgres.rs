//! Fresh PostgreSQL databases for tests, one per test so tests run in parallel and re-run.
//!
//! The server to use comes from `TESSERA_TEST_POSTGRES_URL` (CI sets it, and then an
//! unreachable server fails the test loudly). Without it, the local default
//! `postgres://postgres@127.0.0.1:5432/test` is tried, and if that is unreachable the test
//! prints that it skipped and passes.

#![allow(dead_code)]

use sqlx::{Connection, Executor, PgConnection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const DATABASE_PREFIX: &str = "tessera_test_";

pub struct TestDatabase {
    pub url: String,
    pub name: String,
    admin_url: String,
}

/// Replaces the database name (the path) of a PostgreSQL URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..host_end], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl TestDatabase {
    /// A new empty database, or `None` (after saying so) when PostgreSQL is not configured
    /// and not reachable locally.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let (admin_url, required) = match std::env::var("TESSERA_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => (url, true),
            _ => (DEFAULT_URL.to_owned(), false),
        };
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) if !required => {
                eprintln!("SKIPPED {test}: PostgreSQL not reachable at {admin_url} ({e}); set TESSERA_TEST_POSTGRES_URL to require it");
                return None;
            }
            Err(e) => panic!("TESSERA_TEST_POSTGRES_URL={admin_url} is unreachable: {e}"),
        };
        let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let _ = admin.close().await;
        Some(TestDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        })
    }

    /// Runs one statement on the admin connection (e.g. to block or allow connections).
    pub async fn admin(&self, sql: &str) {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .expect("admin connection");
        admin.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = admin.close().await;
    }

    /// Runs a query as the administrator; returns how many rows it answered.
    pub async fn admin_count(&self, sql: &str) -> usize {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .expect("admin connection");
        let rows = sqlx::query(sql)
            .fetch_all(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = admin.close().await;
        rows.len()
    }

    /// Runs a query as the administrator that answers one integer column (e.g. backend pids).
    #[allow(dead_code)]
    pub async fn admin_ints(&self, sql: &str) -> Vec<i32> {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .expect("admin connection");
        let ints = sqlx::query_scalar(sql)
            .fetch_all(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = admin.close().await;
        ints
    }

    /// Drops the database, disconnecting whoever is still connected.
    pub async fn drop_database(self) {
        self.admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5432", "x"), "postgres://u@h:5432/x");
    }
}
