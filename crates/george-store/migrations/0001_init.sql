-- George store schema, version 1.

CREATE TABLE jobs (
    id                 TEXT PRIMARY KEY,
    template           TEXT NOT NULL,
    agent              TEXT NOT NULL,
    params             TEXT NOT NULL,          -- JSON object
    priority           TEXT NOT NULL,
    chapter            TEXT,
    desired            TEXT NOT NULL,
    status             TEXT NOT NULL,
    reason             TEXT,
    env                TEXT NOT NULL,          -- JSON object
    max_attempts       INTEGER,
    origin_source      TEXT NOT NULL,
    origin_ref         TEXT,
    origin_rev         TEXT,
    spec_digest        TEXT NOT NULL,          -- changes when template/params/steps change
    attempt            INTEGER NOT NULL DEFAULT 0,  -- current attempt number
    failures           INTEGER NOT NULL DEFAULT 0,  -- failed attempts so far
    next_attempt_at    TEXT,
    blocked_at_comment INTEGER,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX jobs_by_status ON jobs(status);
CREATE INDEX jobs_by_source ON jobs(origin_source);

CREATE TABLE steps (
    job_id     TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    id         TEXT NOT NULL,
    spec       TEXT NOT NULL,                  -- JSON StepSpec
    status     TEXT NOT NULL,
    reason     TEXT,
    runs       INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (job_id, id)
);

CREATE TABLE attempts (
    job_id         TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    number         INTEGER NOT NULL,
    agent_spec     TEXT NOT NULL,
    runtime        TEXT NOT NULL,
    handle         TEXT,                       -- JSON
    token_hash     TEXT NOT NULL UNIQUE,
    state          TEXT NOT NULL,
    started_at     TEXT NOT NULL,
    last_heartbeat TEXT,
    ended_at       TEXT,
    exit_code      INTEGER,
    outcome        TEXT,
    PRIMARY KEY (job_id, number)
);
CREATE INDEX attempts_live ON attempts(state) WHERE state <> 'terminated';

CREATE TABLE comments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    author     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX comments_by_job ON comments(job_id, id);

CREATE TABLE evidence (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step_id    TEXT,
    attempt    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    content    TEXT NOT NULL,
    truncated  INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX evidence_by_job ON evidence(job_id, id);

-- The audit log: append-only, one row per transition.
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      TEXT NOT NULL,
    job_id  TEXT,
    attempt INTEGER,
    kind    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    data    TEXT NOT NULL                      -- JSON
);
CREATE INDEX events_by_job ON events(job_id, seq);
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE manifests (
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    source     TEXT NOT NULL,
    file       TEXT NOT NULL,
    revision   TEXT NOT NULL,
    body       TEXT NOT NULL,                  -- JSON
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE sources (
    name              TEXT PRIMARY KEY,
    applied_revision  TEXT,
    applied_at        TEXT,
    rejected_revision TEXT,
    errors            TEXT NOT NULL DEFAULT '[]',   -- JSON array
    checked_at        TEXT NOT NULL
);
