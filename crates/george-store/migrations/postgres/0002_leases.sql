-- Leader election: one row per lease. Expiry is judged by the database's
-- clock (now()); `epoch` grows by one whenever the lease changes hands (or
-- its holder let it expire), and fences the writes of earlier terms.
CREATE TABLE leases (
    name TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
