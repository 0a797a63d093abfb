"""Tuning-job records in STORE/jobs: created by the ingress, advanced by the job's Ray task, read by anyone.

A record's ``state`` is queued -> running -> done | failed; its ``stage`` says more: queued,
tuning, inverting, packing, done or failed, with ``progress`` {step, total} and the last
training ``loss`` while tuning; while queued, GET adds ``waiting`` (``waiting_reason``: what
the job waits for and what is free). Every change rewrites the whole
record atomically (tav.serve.store.write_json_atomic). A service stop, and a start after a
crash, mark every job that is not finished as failed with the reason (``fail_interrupted``):
a job is never left "running" with nobody running it, and a task that outlived its service
sees its record failed at its next progress write and stops.
"""

import time

from .store import Store, read_json, write_json_atomic

TERMINAL = ("done", "failed")


class JobAbandoned(RuntimeError):
    """The record was finished by someone else (a restart marked it failed): the task must stop."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def create_job(store: Store, job_id: str, video_id: str, clip: str, options: dict) -> dict:
    record = {"job_id": job_id, "video_id": video_id, "state": "queued", "stage": "queued",
              "progress": {"step": 0, "total": options["steps"]}, "error": None, "clip": clip,
              "options": options, "created": _now(), "updated": _now()}
    write_json_atomic(store.job_path(job_id), record)
    return record


def read_job(store: Store, job_id: str) -> dict:
    return read_json(store.job_path(job_id))


def update_job(store: Store, job_id: str, **changes) -> dict:
    """Apply ``changes`` unless the record is already finished (then JobAbandoned)."""
    record = read_job(store, job_id)
    if record["state"] in TERMINAL:
        raise JobAbandoned(f"job {job_id} is already {record['state']}: {record.get('error') or ''}".rstrip(": "))
    record.update(changes, updated=_now())
    write_json_atomic(store.job_path(job_id), record)
    return record


def fail_job(store: Store, job_id: str, reason: str) -> bool:
    """Mark the job failed with ``reason`` if it is not finished; False if it already was."""
    try:
        update_job(store, job_id, state="failed", stage="failed", error=reason)
    except JobAbandoned:
        return False
    return True


def fail_interrupted(store: Store, reason: str = "interrupted: tav-serve restarted while this job ran; upload the clip again") -> list:
    """At service start: every unfinished job failed with ``reason``; returns their ids."""
    failed = []
    for job_id in store.job_ids():
        try:
            if read_job(store, job_id)["state"] not in TERMINAL and fail_job(store, job_id, reason):
                failed.append(job_id)
        except (OSError, ValueError, KeyError):
            continue  # an unreadable record is reported by GET, not fixed here
    return failed


def reserved_video_ids(store: Store) -> set:
    """Video ids taken by a pack or by an unfinished job: a new upload may not reuse them."""
    taken = set(store.video_ids())
    for job_id in store.job_ids():
        try:
            record = read_job(store, job_id)
        except (OSError, ValueError):
            continue
        if record.get("state") not in TERMINAL:
            taken.add(record.get("video_id"))
    return taken


def public_view(record: dict) -> dict:
    """What GET /v1/jobs/{id} shows: no server paths."""
    return {k: record[k] for k in ("job_id", "video_id", "state", "stage", "progress", "loss", "error", "options", "created",
                                   "updated") if k in record}


def waiting_reason(need: dict, free: dict) -> str:
    """Why a queued job has not started, from what its task asks for and what the cluster has free.

    ``need`` and ``free`` map Ray resource names ("CPU", "GPU") to amounts, as ``ray.available_resources()``.
    """
    short = [f"{_amount(amount, name)}; {free.get(name, 0):g} free" for name, amount in need.items()
             if amount and free.get(name, 0) < amount]
    if short:
        return "waiting for " + " and ".join(short) + " (busy with replicas or other jobs)"
    return "starting: its resources are free, a worker process is being started"


def _amount(amount: float, name: str) -> str:
    return f"{amount:g} {name}" if amount == 1 else f"{amount:g} {name}s"
