-- Steps run as a graph: how many at once and whether a failure cancels the
-- rest are the job's; each step's run has a start and an end.
ALTER TABLE jobs ADD COLUMN parallelism INTEGER NOT NULL DEFAULT 4;
ALTER TABLE jobs ADD COLUMN fail_fast BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE steps ADD COLUMN started_at TIMESTAMPTZ;
ALTER TABLE steps ADD COLUMN ended_at TIMESTAMPTZ;
