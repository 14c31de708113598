-- George store schema, version 4: small durable facts (alerts raised this
-- period, approvals, throttles), as key and JSON value.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
