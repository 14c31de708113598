-- Retention: jobs of a status are found by age without a scan (the index
-- by status alone is replaced), and the event log may be compacted below a
-- floor that only rises: events at or above it stay append-only.
DROP INDEX jobs_by_status;
CREATE INDEX jobs_by_status_age ON jobs (status, updated_at, id);
-- The registry reads an AgentSpec's newest ended attempts when each one ends.
CREATE INDEX attempts_by_spec ON attempts (agent_spec, started_at DESC, job_id, number DESC) WHERE state = 'terminated';
-- Job lists page through this order (`?after=`) instead of sorting every job.
CREATE INDEX jobs_by_created ON jobs (created_at, id);

CREATE TABLE event_floor (
    id  BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO event_floor (id, seq) VALUES (1, 0);

CREATE FUNCTION event_floor_only_rises() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq < OLD.seq THEN
        RAISE EXCEPTION 'the event floor never goes down';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER event_floor_only_rises BEFORE UPDATE ON event_floor
    FOR EACH ROW EXECUTE FUNCTION event_floor_only_rises();

-- Deletes below the floor are allowed; updates, truncation and deletes at
-- or above it are not.
CREATE FUNCTION events_compact_below_floor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq >= (SELECT seq FROM event_floor WHERE id = 1) THEN
        RAISE EXCEPTION 'events are append-only above the compaction floor';
    END IF;
    RETURN OLD;
END;
$$;
DROP TRIGGER events_append_only_update_delete ON events;
CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_compact_below_floor();
