//! One server per database.
//!
//! Two controllers on one database would both raise traffic. SQLite: an
//! exclusive OS lock on `<file>.lock` beside the database (released by the
//! kernel if the process dies). PostgreSQL: a session advisory lock held on a
//! dedicated connection for the server's lifetime (released when the
//! connection closes, including on a crash).

use std::fs::{File, OpenOptions, TryLockError};

use sqlx::{Connection, Row};

use super::{Backend, Result, Store, StoreError};

/// The advisory lock key: derived from the schema muhurat's tables live in,
/// so one PostgreSQL database can hold several muhurat installations in
/// separate schemas (and the tests can run in parallel).
const PG_LOCK_SQL: &str =
    "SELECT pg_try_advisory_lock(CAST(hashtext('muhurat:' || current_schema()) AS BIGINT)) AS ok";

/// Held for as long as the server runs.
pub enum ServerLock {
    Sqlite(#[allow(dead_code)] File),
    Postgres(#[allow(dead_code)] sqlx::AnyConnection),
}

impl std::fmt::Debug for ServerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerLock::Sqlite(_) => f.write_str("ServerLock(sqlite file lock)"),
            ServerLock::Postgres(_) => f.write_str("ServerLock(postgres advisory lock)"),
        }
    }
}

/// The database file of a `sqlite:` URL.
pub fn sqlite_path(url: &str) -> &str {
    let rest = url.trim_start_matches("sqlite:");
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    rest.split('?').next().unwrap_or(rest)
}

impl ServerLock {
    /// Release the lock now (graceful shutdown). Dropping it also releases
    /// it, but PostgreSQL only notices a dropped connection a moment later.
    pub async fn release(self) {
        match self {
            ServerLock::Sqlite(file) => {
                let _ = file.unlock();
            }
            ServerLock::Postgres(conn) => {
                let _ = conn.close().await;
            }
        }
    }

    /// Take the lock or explain who holds it.
    pub async fn acquire(store: &Store, url: &str) -> Result<ServerLock> {
        match store.backend() {
            Backend::Sqlite => {
                let path = format!("{}.lock", sqlite_path(url));
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::Io(format!("cannot open lock file {path}: {e}")))?;
                match file.try_lock() {
                    Ok(()) => Ok(ServerLock::Sqlite(file)),
                    Err(TryLockError::WouldBlock) => Err(StoreError::Locked(format!(
                        "the SQLite database (lock file {path})"
                    ))),
                    Err(TryLockError::Error(e)) => {
                        Err(StoreError::Io(format!("cannot lock {path}: {e}")))
                    }
                }
            }
            Backend::Postgres => {
                let mut conn = store.pool().acquire().await?.detach();
                let row = sqlx::query(PG_LOCK_SQL).fetch_one(&mut conn).await?;
                let ok: bool = row.try_get("ok")?;
                if ok {
                    Ok(ServerLock::Postgres(conn))
                } else {
                    let _ = conn.close().await;
                    Err(StoreError::Locked(
                        "the PostgreSQL database (advisory lock)".into(),
                    ))
                }
            }
        }
    }
}
