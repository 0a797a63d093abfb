"""Tuning-job records in STORE/jobs: created by the ingress, advanced by the job's Ray task, read by anyone.

A record's ``state`` is queued -> running -> done | failed. Every change rewrites the whole
record atomically (tav.serve.store.write_json_atomic). A service stop, and a start after a
crash, mark every job that is not finished as failed with the reason (``fail_interrupted``):
a job is never left "running" with nobody running it, and a task that outlived its service
sees its record failed at its next progress write and stops. A job marked failed loses its
upload and work folders at once; a start sweeps the ones a crash left (``sweep_orphans``).
"""

import shutil
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
    """Mark the job failed with ``reason`` if it is not finished, and remove its files; False if it already was."""
    try:
        update_job(store, job_id, state="failed", stage="failed", error=reason)
    except JobAbandoned:
        return False
    finally:
        remove_job_files(store, job_id)
    return True


def remove_job_files(store: Store, job_id: str) -> None:
    shutil.rmtree(store.upload_dir(job_id), ignore_errors=True)
    shutil.rmtree(store.work_dir(job_id), ignore_errors=True)


RESTARTED = "tav-serve restarted"


def fail_interrupted(store: Store, why: str = RESTARTED) -> list:
    """Every unfinished job failed, saying ``why`` (and whether it had started); returns their ids."""
    failed = []
    for job_id in store.job_ids():
        try:
            state = read_job(store, job_id)["state"]
            if state in TERMINAL:
                continue
            # A job that never started was cancelled, not interrupted: say which, so nobody looks for a partial run.
            what = ("interrupted: {} while this job ran" if state == "running"
                    else "cancelled: {} before this job started")
            if fail_job(store, job_id, what.format(why) + "; upload the clip again"):
                failed.append(job_id)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable record is reported by GET, not fixed here
    return failed


def sweep_orphans(store: Store) -> int:
    """At start (no upload or job in flight): remove upload/work folders and staged packs no unfinished job owns."""
    live = set()
    for job_id in store.job_ids():
        try:
            if read_job(store, job_id).get("state") not in TERMINAL:
                live.add(job_id)
        except (OSError, ValueError, AttributeError):
            continue
    leftovers = [p for folder in (store.uploads, store.work) for p in folder.iterdir() if p.name not in live]
    # Staged packs are ".<video_id>.<job_id>.tavpack" (ids hold no dots).
    leftovers += [p for p in store.packs.glob(".*.tavpack") if (p.name.split(".") + ["", ""])[2] not in live]
    leftovers += list(store.jobs.glob(".*.tmp"))
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(leftovers)


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
    return {k: record[k] for k in ("job_id", "video_id", "state", "stage", "scheduling", "progress", "loss", "error",
                                   "options", "created", "updated")
            if k in record}
