-- Steps run as a graph: how many at once and whether a failure cancels the
-- rest are the job's; each step's run has a start and an end. An attempt
-- remembers the last batch of reports it applied, so a batch sent again (its
-- answer was lost) is not applied twice.
ALTER TABLE jobs ADD COLUMN parallelism INTEGER NOT NULL DEFAULT 4;
ALTER TABLE jobs ADD COLUMN fail_fast BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE steps ADD COLUMN started_at TIMESTAMPTZ;
ALTER TABLE steps ADD COLUMN ended_at TIMESTAMPTZ;
ALTER TABLE attempts ADD COLUMN reports_seq BIGINT NOT NULL DEFAULT 0;
