-- George store schema, version 3: the token ledger.

-- One row per LLM call forwarded by the proxy, with the provider's own usage.
CREATE TABLE llm_usage (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ts            TEXT NOT NULL,
    job_id        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    agent_spec    TEXT NOT NULL,
    chapter       TEXT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    streamed      INTEGER NOT NULL
);
CREATE INDEX llm_usage_by_ts ON llm_usage(ts);
CREATE INDEX llm_usage_by_job ON llm_usage(job_id);
