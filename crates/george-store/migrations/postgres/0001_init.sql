-- George store schema for PostgreSQL, version 1: the whole schema of the
-- SQLite migrations 0001-0004, in PostgreSQL types. Counters and attempt
-- numbers are BIGINT (they hold any u32), times TIMESTAMPTZ (microseconds),
-- JSON JSONB. Names, ids and statuses that are sorted or compared are
-- COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.

CREATE TABLE jobs (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    template           TEXT NOT NULL,
    agent              TEXT NOT NULL,
    params             JSONB NOT NULL,              -- object
    priority           TEXT NOT NULL,
    chapter            TEXT COLLATE "C",
    desired            TEXT NOT NULL,
    status             TEXT COLLATE "C" NOT NULL,
    reason             TEXT,
    env                JSONB NOT NULL,              -- object of strings
    max_attempts       BIGINT,
    origin_source      TEXT COLLATE "C" NOT NULL,
    origin_ref         TEXT,
    origin_rev         TEXT,
    spec_digest        TEXT NOT NULL,               -- changes when template/params/steps change
    attempt            BIGINT NOT NULL DEFAULT 0,   -- current attempt number
    failures           BIGINT NOT NULL DEFAULT 0,   -- failed attempts so far
    next_attempt_at    TIMESTAMPTZ,
    blocked_at_comment BIGINT,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE INDEX jobs_by_source ON jobs (origin_source);

CREATE TABLE steps (
    job_id     TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx        BIGINT NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    spec       JSONB NOT NULL,                      -- StepSpec
    status     TEXT NOT NULL,
    reason     TEXT,
    runs       BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, id)
);

CREATE TABLE attempts (
    job_id         TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number         BIGINT NOT NULL,
    agent_spec     TEXT NOT NULL,
    runtime        TEXT NOT NULL,
    handle         JSONB,
    token_hash     TEXT NOT NULL UNIQUE,
    state          TEXT NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL,
    last_heartbeat TIMESTAMPTZ,
    ended_at       TIMESTAMPTZ,
    exit_code      INTEGER,
    outcome        TEXT,
    PRIMARY KEY (job_id, number)
);
CREATE INDEX attempts_live ON attempts (state) WHERE state <> 'terminated';

CREATE TABLE comments (
    id         BIGSERIAL PRIMARY KEY,
    job_id     TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    author     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX comments_by_job ON comments (job_id, id);

CREATE TABLE evidence (
    id         BIGSERIAL PRIMARY KEY,
    job_id     TEXT COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step_id    TEXT,
    attempt    BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    content    TEXT NOT NULL,
    truncated  BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX evidence_by_job ON evidence (job_id, id);

-- The audit log: append-only, one row per transition. Transactions insert
-- their events last, holding a transaction-level advisory lock, so `seq`
-- order is commit order (see src/postgres/mod.rs).
CREATE TABLE events (
    seq     BIGSERIAL PRIMARY KEY,
    ts      TIMESTAMPTZ NOT NULL,
    job_id  TEXT COLLATE "C",
    attempt BIGINT,
    kind    TEXT NOT NULL,
    actor   TEXT NOT NULL,
    data    JSONB NOT NULL
);
CREATE INDEX events_by_job ON events (job_id, seq);

CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END;
$$;
CREATE TRIGGER events_append_only_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_append_only_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_append_only();

CREATE TABLE manifests (
    kind       TEXT COLLATE "C" NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    source     TEXT COLLATE "C" NOT NULL,
    file       TEXT NOT NULL,
    revision   TEXT NOT NULL,
    body       JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, name)
);

CREATE TABLE sources (
    name              TEXT COLLATE "C" PRIMARY KEY,
    applied_revision  TEXT,
    applied_at        TIMESTAMPTZ,
    rejected_revision TEXT,
    errors            JSONB NOT NULL DEFAULT '[]',  -- array of strings
    checked_at        TIMESTAMPTZ NOT NULL
);

-- The latest scheduled time each cron trigger has been looked at up to.
CREATE TABLE trigger_marks (
    name       TEXT COLLATE "C" PRIMARY KEY,
    watermark  TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- The token ledger: one row per LLM call forwarded by the proxy, with the
-- provider's own usage.
CREATE TABLE llm_usage (
    id            BIGSERIAL PRIMARY KEY,
    ts            TIMESTAMPTZ NOT NULL,
    job_id        TEXT COLLATE "C" NOT NULL,
    attempt       BIGINT NOT NULL,
    agent_spec    TEXT COLLATE "C" NOT NULL,
    chapter       TEXT COLLATE "C" NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    streamed      BOOLEAN NOT NULL
);
CREATE INDEX llm_usage_by_ts ON llm_usage (ts);
CREATE INDEX llm_usage_by_job ON llm_usage (job_id);

-- Small durable facts (alerts raised this period, approvals, throttles), as
-- key and JSON value.
CREATE TABLE settings (
    key        TEXT COLLATE "C" PRIMARY KEY,
    value      JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
