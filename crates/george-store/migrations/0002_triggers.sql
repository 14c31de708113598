-- George store schema, version 2: trigger watermarks.

-- The latest scheduled time each cron trigger has been looked at up to.
CREATE TABLE trigger_marks (
    name       TEXT PRIMARY KEY,
    watermark  TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
