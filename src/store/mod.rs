//! Durable state: rollouts, the append-only audit log, tokens, check results,
//! pool state per target, the freeze switch and the notification outbox.
//!
//! One implementation over `sqlx::Any` serves SQLite (default, WAL) and
//! PostgreSQL: the schema is kept deliberately plain (TEXT, BIGINT, DOUBLE;
//! times as Unix milliseconds, JSON as TEXT) so the same SQL runs on both,
//! written with `$N` placeholders (rewritten to SQLite's `?N`). Each backend
//! keeps its own `migrations/` folder with the same migration names. The same
//! test suite runs against both.
//!
//! Every state change of a rollout goes through [`Store::transition`]: one
//! transaction that locks the row (`SELECT … FOR UPDATE` on PostgreSQL,
//! `BEGIN IMMEDIATE` on SQLite), hands it to a pure function, appends the
//! events, writes the new state and bumps `version`. One server per database:
//! SQLite takes an exclusive lock on `<file>.lock`, PostgreSQL an advisory lock.

mod lock;
pub mod testing;

use std::borrow::Cow;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

pub use lock::{ServerLock, sqlite_path};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL `{0}` is not sqlite://PATH or postgres://…")]
    BadUrl(String),
    #[error("another muhurat server holds {0}; stop it first (one server per database)")]
    Locked(String),
    #[error("rollout {0} not found")]
    NotFound(String),
    #[error("target {target} is busy: rollout {rollout} is active on it")]
    TargetBusy { target: String, rollout: String },
    #[error("rollout {id} changed underneath (version {expected} expected, {found} found)")]
    Stale {
        id: String,
        expected: i64,
        found: i64,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Io(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A rollout row: identity columns, plus `data`, the engine's state as JSON
/// (a cache of the last event's snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRecord {
    pub id: String,
    pub name: String,
    pub target: String,
    pub revision: String,
    pub initiator: String,
    pub principal: String,
    pub spec_yaml: String,
    pub spec_hash: String,
    pub state: String,
    pub active: bool,
    pub version: i64,
    pub data: String,
    pub next_wake: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An audit-log entry to append.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewEvent {
    pub rollout_id: Option<String>,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub principal: Option<String>,
    pub why: String,
    /// The input (command or trigger) as JSON.
    pub input: String,
    /// The resulting state name.
    pub state: String,
    /// The rollout version this event produced.
    pub version: i64,
    /// The resulting rollout as JSON (for replay and the dashboard).
    pub snapshot: Option<String>,
    pub calendar: Option<String>,
    pub calendar_version: Option<String>,
    pub policy_version: Option<String>,
    pub clock_skew_ms: Option<i64>,
}

/// A stored audit-log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub seq: i64,
    pub event: NewEvent,
}

/// A notification to deliver once its transition has committed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewOutbox {
    pub channel: String,
    pub payload: String,
    /// Inside a transition: the index (in [`Update::events`]) of the event
    /// this notification belongs to. Each notification must name its own
    /// event: the outbox is de-duplicated by (event, channel).
    pub event: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    pub id: i64,
    pub event_seq: i64,
    pub channel: String,
    pub payload: String,
    pub attempts: i64,
}

/// What a transition writes: the new row values and what to append.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub state: String,
    pub active: bool,
    pub data: String,
    pub next_wake: Option<DateTime<Utc>>,
    pub events: Vec<NewEvent>,
    /// Notifications, each tied to its event ([`NewOutbox::event`]).
    pub outbox: Vec<NewOutbox>,
    /// The pools of the rollout's target change in the same transaction as
    /// the event that causes it (a success swaps them: invariant P).
    pub pools: Option<PoolRecord>,
}

/// The outcome of a committed transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub record: RolloutRecord,
    pub first_seq: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub name: String,
    pub hash: String,
    pub role: String,
    pub principal: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckResultRecord {
    pub rollout_id: String,
    pub check_name: String,
    pub at: DateTime<Utc>,
    pub query: String,
    pub value: Option<f64>,
    pub verdict: String,
    pub reason: String,
    pub in_session: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolRecord {
    pub target: String,
    pub live: String,
    pub idle: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FreezeRecord {
    pub on: bool,
    pub reason: String,
    pub by: String,
    pub since: DateTime<Utc>,
}

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.backend)
    }
}

const ROLLOUT_COLS: &str = "id, name, target, revision, initiator, principal, spec_yaml, spec_hash, state, active, version, data, next_wake, created_at, updated_at";
const EVENT_COLS: &str = "seq, rollout_id, at, kind, principal, why, input, state, version, snapshot, calendar, calendar_version, policy_version, clock_skew_ms";

fn rollout_from(row: &sqlx::any::AnyRow) -> Result<RolloutRecord> {
    Ok(RolloutRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        target: row.try_get("target")?,
        revision: row.try_get("revision")?,
        initiator: row.try_get("initiator")?,
        principal: row.try_get("principal")?,
        spec_yaml: row.try_get("spec_yaml")?,
        spec_hash: row.try_get("spec_hash")?,
        state: row.try_get("state")?,
        active: row.try_get::<i64, _>("active")? != 0,
        version: row.try_get("version")?,
        data: row.try_get("data")?,
        next_wake: row.try_get::<Option<i64>, _>("next_wake")?.map(from_ms),
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
    })
}

fn event_from(row: &sqlx::any::AnyRow) -> Result<EventRecord> {
    Ok(EventRecord {
        seq: row.try_get("seq")?,
        event: NewEvent {
            rollout_id: row.try_get("rollout_id")?,
            at: from_ms(row.try_get("at")?),
            kind: row.try_get("kind")?,
            principal: row.try_get("principal")?,
            why: row.try_get("why")?,
            input: row.try_get("input")?,
            state: row.try_get("state")?,
            version: row.try_get("version")?,
            snapshot: row.try_get("snapshot")?,
            calendar: row.try_get("calendar")?,
            calendar_version: row.try_get("calendar_version")?,
            policy_version: row.try_get("policy_version")?,
            clock_skew_ms: row.try_get("clock_skew_ms")?,
        },
    })
}

fn token_from(row: &sqlx::any::AnyRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        name: row.try_get("name")?,
        hash: row.try_get("hash")?,
        role: row.try_get("role")?,
        principal: row.try_get("principal")?,
        created_at: from_ms(row.try_get("created_at")?),
        created_by: row.try_get("created_by")?,
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(from_ms),
        revoked_by: row.try_get("revoked_by")?,
    })
}

impl Store {
    /// Parse `sqlite://path` (created if missing) or `postgres://…`.
    pub fn backend_of(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::BadUrl(url.to_string()))
        }
    }

    /// Connect and apply migrations. Does not take the one-server lock; the
    /// server does that with [`ServerLock::acquire`].
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Self::backend_of(url)?;
        let url = match backend {
            // Create the file if missing; WAL so readers never block the writer.
            Backend::Sqlite => {
                let mut u = url.to_string();
                if !u.contains('?') {
                    u.push_str("?mode=rwc");
                }
                u
            }
            Backend::Postgres => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(std::time::Duration::from_secs(3))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            // FULL: a committed decision survives a power
                            // failure before its effect runs (persist
                            // before acting); NORMAL could lose it.
                            conn.execute("PRAGMA synchronous = FULL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    // A database that is down must fail a pass quickly, so
                    // the controller can act on what it knows (docs/design.md §8).
                    .acquire_timeout(std::time::Duration::from_secs(3))
                    .connect_with(opts)
                    .await?
            }
        };
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `$N` placeholders as the backend wants them.
    fn q<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        match self.backend {
            Backend::Postgres => Cow::Borrowed(sql),
            Backend::Sqlite => Cow::Owned(sql.replace('$', "?")),
        }
    }

    /// Is the database reachable?
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The database server's clock (PostgreSQL), for the clock-skew check.
    /// SQLite runs on this host, so it has no clock of its own to compare.
    pub async fn db_now(&self) -> Result<Option<DateTime<Utc>>> {
        match self.backend {
            Backend::Sqlite => Ok(None),
            Backend::Postgres => {
                let row = sqlx::query("SELECT CAST(FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000) AS BIGINT) AS ms")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(Some(from_ms(row.try_get("ms")?)))
            }
        }
    }

    // ---- rollouts ---------------------------------------------------------

    /// Insert a new rollout with its first event. Fails with `TargetBusy`
    /// when another rollout is active on the same target.
    pub async fn insert_rollout(&self, r: &RolloutRecord, first: &NewEvent) -> Result<i64> {
        let mut tx = self.begin().await?;
        let busy = sqlx::query(&self.q("SELECT id FROM rollouts WHERE target = $1 AND active = 1"))
            .bind(&r.target)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = busy {
            return Err(StoreError::TargetBusy {
                target: r.target.clone(),
                rollout: row.try_get("id")?,
            });
        }
        sqlx::query(&self.q(&format!(
            "INSERT INTO rollouts ({ROLLOUT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        )))
        .bind(&r.id)
        .bind(&r.name)
        .bind(&r.target)
        .bind(&r.revision)
        .bind(&r.initiator)
        .bind(&r.principal)
        .bind(&r.spec_yaml)
        .bind(&r.spec_hash)
        .bind(&r.state)
        .bind(i64::from(r.active))
        .bind(r.version)
        .bind(&r.data)
        .bind(r.next_wake.map(ms))
        .bind(ms(r.created_at))
        .bind(ms(r.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::TargetBusy { target: r.target.clone(), rollout: "another".into() },
            _ => StoreError::Db(e),
        })?;
        let seq = self.append_in(&mut tx, first).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            // IMMEDIATE takes the write lock at BEGIN, so two writers never
            // both read a row and then race to update it.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    async fn append_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        e: &NewEvent,
    ) -> Result<i64> {
        let row = sqlx::query(&self.q(
            "INSERT INTO events (rollout_id, at, kind, principal, why, input, state, version, snapshot, calendar, calendar_version, policy_version, clock_skew_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING seq",
        ))
        .bind(&e.rollout_id)
        .bind(ms(e.at))
        .bind(&e.kind)
        .bind(&e.principal)
        .bind(&e.why)
        .bind(&e.input)
        .bind(&e.state)
        .bind(e.version)
        .bind(&e.snapshot)
        .bind(&e.calendar)
        .bind(&e.calendar_version)
        .bind(&e.policy_version)
        .bind(e.clock_skew_ms)
        .fetch_one(&mut **tx)
        .await?;
        Ok(row.try_get("seq")?)
    }

    /// Append a server-wide event (freeze, calendar reload, token changes).
    pub async fn append_event(&self, e: &NewEvent) -> Result<i64> {
        let mut tx = self.begin().await?;
        let seq = self.append_in(&mut tx, e).await?;
        tx.commit().await?;
        Ok(seq)
    }

    pub async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>> {
        let row = sqlx::query(&self.q(&format!(
            "SELECT {ROLLOUT_COLS} FROM rollouts WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rollout_from).transpose()
    }

    /// Rollouts, newest first; `active_only` for the non-terminal ones.
    pub async fn rollouts(&self, active_only: bool, limit: i64) -> Result<Vec<RolloutRecord>> {
        let filter = if active_only { "WHERE active = 1" } else { "" };
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {ROLLOUT_COLS} FROM rollouts {filter} ORDER BY created_at DESC, id DESC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rollout_from).collect()
    }

    /// Active rollouts for a controller pass: every column but the spec
    /// YAML (`spec_yaml` is empty), which the controller keeps parsed in a
    /// cache and loads with [`Store::rollout`] on a miss.
    pub async fn active_for_pass(&self) -> Result<Vec<RolloutRecord>> {
        let cols = ROLLOUT_COLS.replace("spec_yaml", "'' AS spec_yaml");
        let rows = sqlx::query(&format!(
            "SELECT {cols} FROM rollouts WHERE active = 1 ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rollout_from).collect()
    }

    /// The active rollout of spec `name`, if any.
    pub async fn active_by_name(&self, name: &str) -> Result<Option<RolloutRecord>> {
        let row = sqlx::query(&self.q(&format!(
            "SELECT {ROLLOUT_COLS} FROM rollouts WHERE name = $1 AND active = 1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rollout_from).transpose()
    }

    /// Every rollout's id and state (no data column): the controller's
    /// `/metrics` gauges are loaded from it once, at start.
    pub async fn rollout_states(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT id, state FROM rollouts")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("id")?,
                    r.try_get::<String, _>("state")?,
                ))
            })
            .collect()
    }

    /// Every active rollout of spec `name` (one per target; a name used on
    /// two targets has two).
    pub async fn active_all_by_name(&self, name: &str) -> Result<Vec<RolloutRecord>> {
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {ROLLOUT_COLS} FROM rollouts WHERE name = $1 AND active = 1 ORDER BY id"
        )))
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rollout_from).collect()
    }

    /// The newest rollout of `target`, active or not.
    pub async fn latest_on_target(&self, target: &str) -> Result<Option<RolloutRecord>> {
        let row = sqlx::query(&self.q(&format!("SELECT {ROLLOUT_COLS} FROM rollouts WHERE target = $1 ORDER BY created_at DESC, id DESC LIMIT 1")))
            .bind(target)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rollout_from).transpose()
    }

    /// The active rollout on `target`, if any.
    pub async fn active_on_target(&self, target: &str) -> Result<Option<RolloutRecord>> {
        let row = sqlx::query(&self.q(&format!(
            "SELECT {ROLLOUT_COLS} FROM rollouts WHERE target = $1 AND active = 1"
        )))
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rollout_from).transpose()
    }

    /// Active rollouts due at or before `until` (or with no wake time).
    pub async fn due(&self, until: DateTime<Utc>) -> Result<Vec<RolloutRecord>> {
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {ROLLOUT_COLS} FROM rollouts WHERE active = 1 AND (next_wake IS NULL OR next_wake <= $1) ORDER BY next_wake"
        )))
        .bind(ms(until))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rollout_from).collect()
    }

    /// Move a rollout's wake time without a transition (no decision, no
    /// version change).
    pub async fn set_next_wake(&self, id: &str, at: Option<DateTime<Utc>>) -> Result<()> {
        sqlx::query(&self.q("UPDATE rollouts SET next_wake = $1 WHERE id = $2"))
            .bind(at.map(ms))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The earliest wake time of any active rollout.
    pub async fn next_wake(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query("SELECT MIN(next_wake) AS w FROM rollouts WHERE active = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("w")?.map(from_ms))
    }

    /// Run one transition: lock the row, call `f` with it (pure), and — if
    /// it returns an update — append its events, write the row with
    /// `version + 1`, queue its notifications, and commit, all or nothing.
    /// `f` returning `Ok(None)` changes nothing; `Err` aborts and is returned.
    pub async fn transition<E>(
        &self,
        id: &str,
        f: impl FnOnce(&RolloutRecord) -> std::result::Result<Option<Update>, E>,
    ) -> Result<std::result::Result<Option<Committed>, E>> {
        let mut tx = self.begin().await?;
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let row = sqlx::query(&self.q(&format!(
            "SELECT {ROLLOUT_COLS} FROM rollouts WHERE id = $1{lock}"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        let current = rollout_from(&row)?;
        let update = match f(&current) {
            Ok(Some(u)) => u,
            Ok(None) => {
                tx.rollback().await?;
                return Ok(Ok(None));
            }
            Err(e) => {
                tx.rollback().await?;
                return Ok(Err(e));
            }
        };
        let now = update
            .events
            .first()
            .map(|e| e.at)
            .unwrap_or(current.updated_at);
        // An update without events only refreshes live fields (observed
        // shares, the wake time): no decision, so no new version.
        let version = if update.events.is_empty() {
            current.version
        } else {
            current.version + 1
        };
        let res = sqlx::query(&self.q(
            "UPDATE rollouts SET state = $1, active = $2, data = $3, next_wake = $4, updated_at = $5, version = $6 WHERE id = $7 AND version = $8",
        ))
        .bind(&update.state)
        .bind(i64::from(update.active))
        .bind(&update.data)
        .bind(update.next_wake.map(ms))
        .bind(ms(now))
        .bind(version)
        .bind(id)
        .bind(current.version)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() != 1 {
            return Err(StoreError::Stale {
                id: id.to_string(),
                expected: current.version,
                found: -1,
            });
        }
        let mut seqs = Vec::with_capacity(update.events.len());
        for e in &update.events {
            let mut e = e.clone();
            e.version = version;
            seqs.push(self.append_in(&mut tx, &e).await?);
        }
        let first_seq = seqs.first().copied();
        for o in &update.outbox {
            let seq = seqs.get(o.event).or(seqs.last());
            if let Some(seq) = seq {
                self.enqueue_in(&mut tx, *seq, o, now).await?;
            }
        }
        if let Some(p) = &update.pools {
            self.set_pool_state_in(&mut tx, p).await?;
        }
        tx.commit().await?;
        let record = RolloutRecord {
            state: update.state,
            active: update.active,
            data: update.data,
            next_wake: update.next_wake,
            updated_at: now,
            version,
            ..current
        };
        Ok(Ok(Some(Committed { record, first_seq })))
    }

    /// Audit log: events of one rollout (or all, with `None`) after `after`.
    pub async fn events(
        &self,
        rollout_id: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>> {
        let rows = match rollout_id {
            Some(id) => {
                sqlx::query(&self.q(&format!("SELECT {EVENT_COLS} FROM events WHERE rollout_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")))
                    .bind(id)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&self.q(&format!("SELECT {EVENT_COLS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(event_from).collect()
    }

    // ---- pools, freeze ----------------------------------------------------

    pub async fn pool_state(&self, target: &str) -> Result<Option<PoolRecord>> {
        let row = sqlx::query(
            &self.q("SELECT target, live, idle, updated_at FROM pools WHERE target = $1"),
        )
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PoolRecord {
                target: r.try_get("target")?,
                live: r.try_get("live")?,
                idle: r.try_get("idle")?,
                updated_at: from_ms(r.try_get("updated_at")?),
            })
        })
        .transpose()
    }

    /// Every target muhurat knows, for drift checks when no rollout is active.
    pub async fn pool_states(&self) -> Result<Vec<PoolRecord>> {
        let rows = sqlx::query("SELECT target, live, idle, updated_at FROM pools ORDER BY target")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PoolRecord {
                    target: r.try_get("target")?,
                    live: r.try_get("live")?,
                    idle: r.try_get("idle")?,
                    updated_at: from_ms(r.try_get("updated_at")?),
                })
            })
            .collect()
    }

    pub async fn set_pool_state(&self, p: &PoolRecord) -> Result<()> {
        let mut tx = self.begin().await?;
        self.set_pool_state_in(&mut tx, p).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record the pools together with the event that decides them (adopt).
    pub async fn set_pool_state_with_event(&self, p: &PoolRecord, e: &NewEvent) -> Result<i64> {
        let mut tx = self.begin().await?;
        self.set_pool_state_in(&mut tx, p).await?;
        let seq = self.append_in(&mut tx, e).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn set_pool_state_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        p: &PoolRecord,
    ) -> Result<()> {
        sqlx::query(&self.q(
            "INSERT INTO pools (target, live, idle, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (target) DO UPDATE SET live = excluded.live, idle = excluded.idle, updated_at = excluded.updated_at",
        ))
        .bind(&p.target)
        .bind(&p.live)
        .bind(&p.idle)
        .bind(ms(p.updated_at))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn freeze(&self) -> Result<FreezeRecord> {
        let row =
            sqlx::query("SELECT is_on, reason, by_whom, since FROM freeze_switch WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            None => FreezeRecord {
                on: false,
                reason: String::new(),
                by: String::new(),
                since: from_ms(0),
            },
            Some(r) => FreezeRecord {
                on: r.try_get::<i64, _>("is_on")? != 0,
                reason: r.try_get("reason")?,
                by: r.try_get("by_whom")?,
                since: from_ms(r.try_get("since")?),
            },
        })
    }

    /// Switch the global freeze, with its audit event, in one transaction.
    pub async fn set_freeze(&self, f: &FreezeRecord, event: &NewEvent) -> Result<i64> {
        let mut tx = self.begin().await?;
        sqlx::query(&self.q(
            "INSERT INTO freeze_switch (id, is_on, reason, by_whom, since) VALUES (1, $1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET is_on = excluded.is_on, reason = excluded.reason, by_whom = excluded.by_whom, since = excluded.since",
        ))
        .bind(i64::from(f.on))
        .bind(&f.reason)
        .bind(&f.by)
        .bind(ms(f.since))
        .execute(&mut *tx)
        .await?;
        let seq = self.append_in(&mut tx, event).await?;
        tx.commit().await?;
        Ok(seq)
    }

    // ---- tokens -----------------------------------------------------------

    pub async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        sqlx::query(&self.q(
            "INSERT INTO tokens (name, hash, role, principal, created_at, created_by, revoked_at, revoked_by) VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)",
        ))
        .bind(&t.name)
        .bind(&t.hash)
        .bind(&t.role)
        .bind(&t.principal)
        .bind(ms(t.created_at))
        .bind(&t.created_by)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Io(format!("a token named `{}` already exists; revoke it or pick another name", t.name)),
            _ => StoreError::Db(e),
        })?;
        Ok(())
    }

    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&self.q("SELECT * FROM tokens WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(token_from).transpose()
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(token_from).collect()
    }

    /// Is a token of this name live (exists and not revoked)?
    pub async fn token_live(&self, name: &str) -> Result<bool> {
        let row = sqlx::query(
            &self.q("SELECT COUNT(*) AS n FROM tokens WHERE name = $1 AND revoked_at IS NULL"),
        )
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Revoke a token; false when no live token has that name.
    pub async fn revoke_token(&self, name: &str, by: &str, at: DateTime<Utc>) -> Result<bool> {
        let res = sqlx::query(&self.q("UPDATE tokens SET revoked_at = $1, revoked_by = $2 WHERE name = $3 AND revoked_at IS NULL"))
            .bind(ms(at))
            .bind(by)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    // ---- check results ----------------------------------------------------

    pub async fn insert_check_results(&self, results: &[CheckResultRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for r in results {
            sqlx::query(&self.q(
                "INSERT INTO check_results (rollout_id, check_name, at, query, value, verdict, reason, in_session) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            ))
            .bind(&r.rollout_id)
            .bind(&r.check_name)
            .bind(ms(r.at))
            .bind(&r.query)
            .bind(r.value.filter(|v| v.is_finite()))
            .bind(&r.verdict)
            .bind(&r.reason)
            .bind(i64::from(r.in_session))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` results of a rollout, newest first.
    pub async fn check_results(
        &self,
        rollout_id: &str,
        limit: i64,
    ) -> Result<Vec<CheckResultRecord>> {
        let rows = sqlx::query(&self.q(
            "SELECT rollout_id, check_name, at, query, value, verdict, reason, in_session FROM check_results WHERE rollout_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
        ))
        .bind(rollout_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CheckResultRecord {
                    rollout_id: r.try_get("rollout_id")?,
                    check_name: r.try_get("check_name")?,
                    at: from_ms(r.try_get("at")?),
                    query: r.try_get("query")?,
                    value: r.try_get("value")?,
                    verdict: r.try_get("verdict")?,
                    reason: r.try_get("reason")?,
                    in_session: r.try_get::<i64, _>("in_session")? != 0,
                })
            })
            .collect()
    }

    /// Bounded retention: keep results newer than `before` (the audit log
    /// keeps every verdict that led to a decision).
    pub async fn prune_check_results(&self, before: DateTime<Utc>) -> Result<u64> {
        let res = sqlx::query(&self.q("DELETE FROM check_results WHERE at < $1"))
            .bind(ms(before))
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected())
    }

    // ---- outbox -----------------------------------------------------------

    async fn enqueue_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        seq: i64,
        o: &NewOutbox,
        now: DateTime<Utc>,
    ) -> Result<()> {
        // De-duplicated by (event, channel): a retried transition cannot
        // queue the same notification twice.
        sqlx::query(&self.q(
            "INSERT INTO outbox (event_seq, channel, payload, attempts, next_attempt) VALUES ($1, $2, $3, 0, $4) ON CONFLICT (event_seq, channel) DO NOTHING",
        ))
        .bind(seq)
        .bind(&o.channel)
        .bind(&o.payload)
        .bind(ms(now))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Queue a notification for an already committed event.
    pub async fn enqueue(&self, seq: i64, o: &NewOutbox, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        self.enqueue_in(&mut tx, seq, o, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn outbox_due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<OutboxRecord>> {
        let rows = sqlx::query(&self.q(
            "SELECT id, event_seq, channel, payload, attempts FROM outbox WHERE sent_at IS NULL AND next_attempt <= $1 ORDER BY id LIMIT $2",
        ))
        .bind(ms(now))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRecord {
                    id: r.try_get("id")?,
                    event_seq: r.try_get("event_seq")?,
                    channel: r.try_get("channel")?,
                    payload: r.try_get("payload")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    pub async fn outbox_sent(&self, id: i64, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(&self.q("UPDATE outbox SET sent_at = $1, attempts = attempts + 1, last_error = NULL WHERE id = $2"))
            .bind(ms(at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn outbox_failed(&self, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<()> {
        sqlx::query(&self.q("UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt = $2 WHERE id = $3"))
            .bind(error)
            .bind(ms(retry_at))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
