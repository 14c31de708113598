//! Rows as domain records (`george_core::record`), whatever the database.

use crate::dialect::Get;
use crate::{Result, StoredManifest};
use george_core::api::{SourceView, UsageRecord, UsageTotal};
use george_core::plan::Origin;
use george_core::record::{Attempt, Comment, Event, Evidence, Job, Step};
use serde_json::Value;

pub const JOB_COLUMNS: &str = "id, template, agent, params, priority, chapter, desired, status, reason, \
    max_attempts, origin_source, origin_ref, origin_rev, attempt, failures, next_attempt_at, created_at, updated_at, \
    parallelism, fail_fast, labels";

pub fn job(r: &dyn Get) -> Result<Job> {
    Ok(Job {
        id: r.string("id")?,
        template: r.string("template")?,
        agent: r.string("agent")?,
        status: r.parsed("status")?,
        reason: r.text("reason")?,
        desired: r.parsed("desired")?,
        priority: r.parsed("priority")?,
        chapter: r.text("chapter")?,
        params: r.json("params")?,
        labels: r.json("labels")?,
        origin: Origin {
            source: r.string("origin_source")?,
            reference: r.text("origin_ref")?,
            revision: r.text("origin_rev")?,
        },
        attempt: r.u32("attempt")?,
        failures: r.u32("failures")?,
        max_attempts: r.opt_u32("max_attempts")?,
        parallelism: r.u32("parallelism")?,
        fail_fast: r.bool("fail_fast")?,
        next_attempt_at: r.time("next_attempt_at")?,
        created_at: r.ts("created_at")?,
        updated_at: r.ts("updated_at")?,
        steps: Vec::new(),
    })
}

pub fn step(r: &dyn Get) -> Result<Step> {
    Ok(Step {
        spec: r.json("spec")?,
        status: r.parsed("status")?,
        reason: r.text("reason")?,
        runs: r.u32("runs")?,
        started_at: r.time("started_at")?,
        ended_at: r.time("ended_at")?,
        updated_at: r.ts("updated_at")?,
    })
}

pub const AGENT_COLUMNS: &str =
    "job_id, number, agent_spec, runtime, handle, state, started_at, last_heartbeat, ended_at, exit_code, outcome";

pub fn agent(r: &dyn Get) -> Result<Attempt> {
    let job_id = r.string("job_id")?;
    let number = r.u32("number")?;
    let exit_code =
        r.int("exit_code")?.map(i32::try_from).transpose().map_err(|e| crate::StoreError::Backend(Box::new(e)))?;
    Ok(Attempt {
        job_id,
        attempt: number,
        agent_spec: r.string("agent_spec")?,
        runtime: r.string("runtime")?,
        handle: r.json_text("handle")?.map(|h| serde_json::from_str(&h).unwrap_or(Value::String(h))),
        state: r.parsed("state")?,
        started_at: r.ts("started_at")?,
        last_heartbeat: r.time("last_heartbeat")?,
        ended_at: r.time("ended_at")?,
        exit_code,
        outcome: r.text("outcome")?,
    })
}

pub fn comment(r: &dyn Get) -> Result<Comment> {
    Ok(Comment {
        id: r.i64("id")?,
        job_id: r.string("job_id")?,
        author: r.string("author")?,
        body: r.string("body")?,
        created_at: r.ts("created_at")?,
    })
}

pub fn evidence(r: &dyn Get) -> Result<Evidence> {
    Ok(Evidence {
        id: r.i64("id")?,
        job_id: r.string("job_id")?,
        step_id: r.text("step_id")?,
        attempt: r.u32("attempt")?,
        kind: r.string("kind")?,
        content: r.string("content")?,
        truncated: r.bool("truncated")?,
        created_at: r.ts("created_at")?,
    })
}

pub const EVENT_COLUMNS: &str = "seq, ts, job_id, attempt, kind, actor, data";

pub fn event(r: &dyn Get) -> Result<Event> {
    Ok(Event {
        seq: r.i64("seq")?,
        ts: r.ts("ts")?,
        job_id: r.text("job_id")?,
        attempt: r.opt_u32("attempt")?,
        kind: r.parsed("kind")?,
        actor: r.string("actor")?,
        data: r.json("data")?,
    })
}

pub fn usage_record(r: &dyn Get) -> Result<UsageRecord> {
    Ok(UsageRecord {
        ts: r.ts("ts")?,
        job_id: r.string("job_id")?,
        attempt: r.u32("attempt")?,
        agent_spec: r.string("agent_spec")?,
        chapter: r.string("chapter")?,
        provider: r.string("provider")?,
        model: r.string("model")?,
        input_tokens: r.u64("input_tokens")?,
        output_tokens: r.u64("output_tokens")?,
        streamed: r.bool("streamed")?,
    })
}

pub fn usage_total(r: &dyn Get) -> Result<UsageTotal> {
    Ok(UsageTotal {
        chapter: r.string("chapter")?,
        agent_spec: r.string("agent_spec")?,
        invocations: r.u64("invocations")?,
        input_tokens: r.u64("input_tokens")?,
        output_tokens: r.u64("output_tokens")?,
    })
}

pub fn source(r: &dyn Get) -> Result<SourceView> {
    Ok(SourceView {
        name: r.string("name")?,
        applied_revision: r.text("applied_revision")?,
        applied_at: r.time("applied_at")?,
        rejected_revision: r.text("rejected_revision")?,
        errors: r.json("errors")?,
        checked_at: r.ts("checked_at")?,
    })
}

pub fn manifest(r: &dyn Get) -> Result<StoredManifest> {
    let kind = r.string("kind")?;
    Ok(StoredManifest {
        kind: kind.parse().map_err(crate::StoreError::Invalid)?,
        name: r.string("name")?,
        source: r.string("source")?,
        file: r.string("file")?,
        revision: r.string("revision")?,
        body: r.json("body")?,
        updated_at: r.ts("updated_at")?,
    })
}
