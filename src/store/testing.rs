//! Fresh databases for tests: a temporary SQLite file, or a new schema in
//! the PostgreSQL at `MUHURAT_TEST_PG` (default
//! `postgres://root@127.0.0.1:5432/test`). A missing PostgreSQL is an error,
//! never a skipped test.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

use super::{Backend, Store};

static N: AtomicU32 = AtomicU32::new(0);

/// The base URL of the test PostgreSQL.
pub fn pg_base() -> String {
    std::env::var("MUHURAT_TEST_PG")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_string())
}

/// A database URL for one test, and the temp dir that must outlive it.
pub async fn fresh_url(backend: Backend) -> (String, Option<tempfile::TempDir>) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("muhurat.db").display());
            (url, Some(dir))
        }
        Backend::Postgres => {
            sqlx::any::install_default_drivers();
            let schema = format!(
                "t_{}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst),
                rand_suffix()
            );
            let base = pg_base();
            let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap_or_else(|e| {
                panic!("PostgreSQL for tests is not reachable at {base}: {e} — start it (see README, Development) or set MUHURAT_TEST_PG")
            });
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .expect("create schema");
            let _ = conn.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            (
                format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                None,
            )
        }
    }
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// Open a fresh store.
pub async fn fresh(backend: Backend) -> (Store, String, Option<tempfile::TempDir>) {
    let (url, dir) = fresh_url(backend).await;
    let store = Store::open(&url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    (store, url, dir)
}
