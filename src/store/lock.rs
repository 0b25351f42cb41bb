//! One server per database.
//!
//! Two controllers on one database would both raise traffic. SQLite: an
//! exclusive OS lock on `<file>.lock` beside the database (released by the
//! kernel if the process dies). PostgreSQL: a session advisory lock held on a
//! dedicated connection for the server's lifetime (released when the
//! connection closes, including on a crash).
//!
//! A held lock is watched ([`ServerLock::watch`]): if the PostgreSQL
//! connection that holds the advisory lock drops (a network blip, a
//! restarted database, `pg_terminate_backend`), the lock is gone while this
//! process keeps running — another server could take it and act. The
//! watcher then tells the controller to stop sending any write, tries to
//! take the lock again on a fresh connection, and tells it to act again
//! once it holds it.

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
    /// The connection holding the advisory lock, and its backend pid.
    Postgres(sqlx::AnyConnection, i32),
}

impl std::fmt::Debug for ServerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerLock::Sqlite(_) => f.write_str("ServerLock(sqlite file lock)"),
            ServerLock::Postgres(_, pid) => {
                write!(f, "ServerLock(postgres advisory lock, backend {pid})")
            }
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
    /// The PostgreSQL backend pid of the connection holding the lock.
    pub fn pg_backend_pid(&self) -> Option<i32> {
        match self {
            ServerLock::Postgres(_, pid) => Some(*pid),
            ServerLock::Sqlite(_) => None,
        }
    }

    /// Release the lock now (graceful shutdown). Dropping it also releases
    /// it, but PostgreSQL only notices a dropped connection a moment later.
    pub async fn release(self) {
        match self {
            ServerLock::Sqlite(file) => {
                let _ = file.unlock();
            }
            ServerLock::Postgres(mut conn, _) => {
                // Unlock explicitly: the backend frees a closed
                // connection's locks only when it has exited, a moment
                // after the close returns.
                let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut conn)
                    .await;
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
            Backend::Postgres => Self::acquire_pg(store).await.map_err(|e| match e {
                StoreError::Locked(_) => {
                    StoreError::Locked("the PostgreSQL database (advisory lock)".into())
                }
                other => other,
            }),
        }
    }
}

/// What a lock watcher reports: `None` while the lock is held, else why not.
pub type LockReport = std::sync::Arc<dyn Fn(Option<String>) + Send + Sync>;

/// A running lock watcher; [`LockWatcher::release`] stops it and frees the
/// lock.
pub struct LockWatcher {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Option<ServerLock>>,
}

impl LockWatcher {
    pub async fn release(self) {
        let _ = self.stop.send(true);
        if let Ok(Some(lock)) = self.task.await {
            lock.release().await;
        }
    }
}

impl ServerLock {
    /// Watch the lock every `every`; `report` hears of every loss and
    /// recovery. A SQLite file lock cannot be lost while the process lives.
    pub fn watch(
        self,
        store: Store,
        every: std::time::Duration,
        report: LockReport,
    ) -> LockWatcher {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut held = Some(self);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => return held,
                }
                match held.take() {
                    Some(ServerLock::Postgres(mut conn, pid)) => {
                        let alive = tokio::time::timeout(
                            std::time::Duration::from_secs(3),
                            sqlx::query("SELECT 1").execute(&mut conn),
                        )
                        .await;
                        match alive {
                            Ok(Ok(_)) => held = Some(ServerLock::Postgres(conn, pid)),
                            Ok(Err(e)) => report(Some(format!(
                                "lost the PostgreSQL one-server lock (its connection failed: {e}); another server may act — retrying"
                            ))),
                            Err(_) => report(Some(
                                "lost the PostgreSQL one-server lock (its connection did not answer in 3 s); another server may act — retrying"
                                    .into(),
                            )),
                        }
                    }
                    Some(other) => held = Some(other),
                    None => match ServerLock::acquire_pg(&store).await {
                        Ok(lock) => {
                            report(None);
                            held = Some(lock);
                        }
                        Err(e) => report(Some(format!(
                            "the PostgreSQL one-server lock is not held ({e}); no write is sent until it is"
                        ))),
                    },
                }
            }
        });
        LockWatcher { stop, task }
    }

    async fn acquire_pg(store: &Store) -> Result<ServerLock> {
        let mut conn = store.pool().acquire().await?.detach();
        let row = sqlx::query(PG_LOCK_SQL).fetch_one(&mut conn).await?;
        let ok: bool = row.try_get("ok")?;
        if ok {
            let pid: i32 = sqlx::query("SELECT pg_backend_pid() AS pid")
                .fetch_one(&mut conn)
                .await?
                .try_get("pid")?;
            Ok(ServerLock::Postgres(conn, pid))
        } else {
            let _ = conn.close().await;
            Err(StoreError::Locked(
                "the PostgreSQL database (advisory lock held by another server)".into(),
            ))
        }
    }
}
