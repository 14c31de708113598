"""Drives a real engine through a client generated from its OpenAPI document
(openapi-python-client): submit a job, list it, watch its events until its
agent runs, abort it, and watch it end. Usage: generated_client.py BASE_URL TOKEN TEMPLATE.
Exits non-zero, saying why, when anything is not as the document says."""

import sys
import time

from george_client import AuthenticatedClient
from george_client.api.default import get_events, get_jobs, get_jobs_id, post_jobs, post_jobs_id_abort
from george_client.models import ActionRequest, EventView, GetJobsOrder, JobView, SubmitJob


def watch(client, job_id, since, until, within=30.0):
    """Follows the job's events (the event log, a page at a time) until one
    is `until`: an event kind, or a (kind, a field of its data, the value)."""
    deadline = time.monotonic() + within
    seen = []
    while time.monotonic() < deadline:
        page = get_events.sync(client=client, since=since, job=job_id, limit=100)
        assert isinstance(page, list), f"GET /api/v1/events answered {page!r}"
        for event in page:
            assert isinstance(event, EventView), event
            seen.append(event.kind)
            since = event.seq
            kind, field, value = until if isinstance(until, tuple) else (until, None, None)
            data = event.data.to_dict() if hasattr(event.data, "to_dict") else event.data
            if event.kind == kind and (field is None or data.get(field) == value):
                return since
        time.sleep(0.05)
    raise AssertionError(f"no `{until}` event for {job_id} within {within}s; saw {seen}")


def main():
    base, token, template = sys.argv[1:4]
    client = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)

    job = post_jobs.sync(client=client, body=SubmitJob(template=template, id="generated-client-1"))
    assert isinstance(job, JobView) and job.id == "generated-client-1", f"submit answered {job!r}"
    print(f"submitted {job.id} ({job.status})")

    listed = get_jobs.sync(client=client, order=GetJobsOrder.NEWEST, limit=50)
    assert any(j.id == job.id for j in listed), f"{job.id} is not listed: {[j.id for j in listed]}"
    print(f"listed {len(listed)} jobs")

    since = watch(client, job.id, 0, "attempt.started")
    print("watched its agent start")

    aborted = post_jobs_id_abort.sync(job.id, client=client, body=ActionRequest(reason="generated client test"))
    assert isinstance(aborted, JobView), f"abort answered {aborted!r}"
    watch(client, job.id, since, ("job.status", "to", "aborted"))
    final = get_jobs_id.sync(job.id, client=client)
    assert isinstance(final, JobView) and str(final.status) == "aborted", f"after the abort: {final!r}"
    print(f"aborted: {final.status}")


if __name__ == "__main__":
    main()
