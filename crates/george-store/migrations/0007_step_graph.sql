-- Steps run as a graph: how many at once and whether a failure cancels the
-- rest are the job's; each step's run has a start and an end. An attempt
-- remembers the last batch of reports it applied, so a batch sent again (its
-- answer was lost) is not applied twice.
ALTER TABLE jobs ADD COLUMN parallelism INTEGER NOT NULL DEFAULT 4;
ALTER TABLE jobs ADD COLUMN fail_fast INTEGER NOT NULL DEFAULT 1;
ALTER TABLE steps ADD COLUMN started_at TEXT;
ALTER TABLE steps ADD COLUMN ended_at TEXT;
ALTER TABLE attempts ADD COLUMN reports_seq INTEGER NOT NULL DEFAULT 0;
