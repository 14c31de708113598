-- George store schema, version 6: retention. Jobs of a status are found
-- by age without a scan (the index by status alone is replaced), and the
-- event log may be compacted below a floor that only rises: events at or
-- above it stay append-only.
DROP INDEX jobs_by_status;
CREATE INDEX jobs_by_status_age ON jobs(status, updated_at, id);
-- The registry reads an AgentSpec's newest ended attempts when each one ends.
CREATE INDEX attempts_by_spec ON attempts(agent_spec, started_at DESC, job_id, number DESC) WHERE state = 'terminated';
-- Job lists page through this order (`?after=`) instead of sorting every job.
CREATE INDEX jobs_by_created ON jobs(created_at, id);

CREATE TABLE event_floor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO event_floor (id, seq) VALUES (1, 0);
CREATE TRIGGER event_floor_only_rises BEFORE UPDATE ON event_floor WHEN new.seq < old.seq
BEGIN SELECT RAISE(ABORT, 'the event floor never goes down'); END;

DROP TRIGGER events_append_only_delete;
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
WHEN old.seq >= (SELECT seq FROM event_floor WHERE id = 1)
BEGIN SELECT RAISE(ABORT, 'events are append-only above the compaction floor'); END;
