-- The newest attempts first, without a scan: the agent list (and the
-- registry's degraded check, run when every attempt ends) reads
-- `ORDER BY started_at DESC, job_id, number DESC LIMIT n`.
CREATE INDEX attempts_by_start ON attempts(started_at DESC, job_id, number DESC);
