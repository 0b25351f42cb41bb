-- muhurat schema v1 (SQLite). Times are Unix milliseconds (UTC); JSON is TEXT.
CREATE TABLE rollouts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    target      TEXT NOT NULL,
    revision    TEXT NOT NULL,
    initiator   TEXT NOT NULL,
    principal   TEXT NOT NULL,
    spec_yaml   TEXT NOT NULL,
    spec_hash   TEXT NOT NULL,
    state       TEXT NOT NULL,
    active      BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    data        TEXT NOT NULL,
    next_wake   BIGINT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- A target belongs to at most one active rollout.
CREATE UNIQUE INDEX rollouts_one_active_per_target ON rollouts (target) WHERE active = 1;
CREATE INDEX rollouts_name ON rollouts (name, created_at);

CREATE TABLE events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id       TEXT,
    at               BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    principal        TEXT,
    why              TEXT NOT NULL,
    input            TEXT NOT NULL,
    state            TEXT NOT NULL,
    version          BIGINT NOT NULL,
    snapshot         TEXT,
    calendar         TEXT,
    calendar_version TEXT,
    policy_version   TEXT,
    clock_skew_ms    BIGINT
);
CREATE INDEX events_rollout ON events (rollout_id, seq);

CREATE TABLE tokens (
    name        TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    principal   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  BIGINT,
    revoked_by  TEXT
);

CREATE TABLE check_results (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id  TEXT NOT NULL,
    check_name  TEXT NOT NULL,
    at          BIGINT NOT NULL,
    query       TEXT NOT NULL,
    value       DOUBLE PRECISION,
    verdict     TEXT NOT NULL,
    reason      TEXT NOT NULL,
    in_session  BIGINT NOT NULL
);
CREATE INDEX check_results_rollout ON check_results (rollout_id, at);

CREATE TABLE pools (
    target      TEXT PRIMARY KEY,
    live        TEXT NOT NULL,
    idle        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE freeze_switch (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    is_on       BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    by_whom     TEXT NOT NULL,
    since       BIGINT NOT NULL
);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq    BIGINT NOT NULL,
    channel      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL,
    sent_at      BIGINT,
    last_error   TEXT,
    UNIQUE (event_seq, channel)
);
CREATE INDEX outbox_due ON outbox (sent_at, next_attempt);
