"""Job records in STORE/jobs (tuning jobs, and async generates): created by the ingress, advanced by the job's
task (a Ray task, or the model replica for a generate), read by anyone.

A record's ``state`` is queued -> running -> done | failed | cancelled. Every change is a
read-modify-write of the whole record under the STORE's job lock (``job_lock``), then an
atomic rewrite (tav.serve.store.write_json_atomic): the ingress (scheduling notes, cancel)
and the task (progress) never undo each other's writes. A service stop, and a start after a
crash, mark every job that is not finished as failed with the reason (``fail_interrupted``):
a job is never left "running" with nobody running it, and a task that outlived its service
sees its record finished at its next progress write and stops. A finished job loses its
upload and work folders at once; a start sweeps the ones a crash left (``sweep_orphans``).

Times are kept as epoch seconds in ``record["times"]`` (created, started, and when each stage
began); tav.serve.job_view turns them into elapsed time and an estimate of what remains.
"""

import fcntl
import math
import shutil
import time
from contextlib import contextmanager

from .job_record import read_job_record
from .store import Store, write_json_atomic

TERMINAL = ("done", "failed", "cancelled")
LOSS_CURVE_POINTS = 512  # past this the curve keeps every other point: a record stays small at 100k steps


class JobAbandoned(RuntimeError):
    """The record was finished by someone else (cancelled, or a restart marked it failed): the task must stop."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextmanager
def job_lock(store: Store):
    """One writer of job records at a time, across processes (the ingress, tuning tasks, model replicas).

    A lock file, not the folder: flock on NFS needs a file open for writing.
    """
    with open(store.jobs / ".lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def create_job(store: Store, job_id: str, video_id: str, clip: str | None, options: dict, kind: str = "tune") -> dict:
    """A queued record: ``kind`` "tune" (a clip to tune, ``clip`` its upload) or "generate" (an async edit)."""
    record = {"job_id": job_id, "kind": kind, "video_id": video_id, "state": "queued", "stage": "queued",
              "progress": {"step": 0, "total": options["steps"]}, "error": None, "clip": clip,
              "options": options, "created": _now(), "updated": _now(), "times": {"created": time.time()}}
    with job_lock(store):
        write_json_atomic(store.job_path(job_id), record)
    return record


def read_job(store: Store, job_id: str) -> dict:
    """The record, checked (serve/job_record.py): JobRecordError (a ValueError, one line) when it is garbled."""
    return read_job_record(store.job_path(job_id), job_id)


def list_jobs(store: Store) -> list:
    """Every readable record, newest first (an unreadable one is skipped: GET of its id reports it)."""
    records = []
    for job_id in store.job_ids():
        try:
            records.append(read_job(store, job_id))
        except (OSError, ValueError):
            continue
    return sorted(records, key=lambda r: (r.get("times") or {}).get("created") or 0, reverse=True)


def update_job(store: Store, job_id: str, *, only_if=None, stage_started=False, **changes) -> dict:
    """Apply ``changes`` unless the record is already finished (then JobAbandoned).

    ``only_if``: a state the record must still be in, else nothing is written (a note about a queued job
    must not land on a running one). ``stage_started``: record now as the start of ``changes["stage"]``.
    """
    with job_lock(store):
        return update_held(store, job_id, only_if=only_if, stage_started=stage_started, **changes)


def update_held(store: Store, job_id: str, *, only_if=None, stage_started=False, **changes) -> dict:
    """``update_job`` for a caller that holds ``job_lock`` already (flock does not nest: a second take would wait)."""
    record = read_job(store, job_id)
    if record["state"] in TERMINAL:
        raise JobAbandoned(f"job {job_id} is already {record['state']}: {record.get('error') or ''}".rstrip(": "))
    if only_if is not None and record["state"] != only_if:
        return record
    if "loss" in changes:  # a tuning step: the curve grows by one point, thinned past LOSS_CURVE_POINTS
        if not math.isfinite(changes["loss"]):  # a diverged step: JSON responses carry no NaN, so null
            changes["loss"] = None
        curve = [*(record.get("loss_curve") or []), [changes["progress"]["step"], changes["loss"]]]
        if len(curve) > LOSS_CURVE_POINTS:
            curve = curve[::2] + ([curve[-1]] if len(curve) % 2 == 0 else [])  # the newest point kept
        changes["loss_curve"] = curve
    record.update(changes, updated=_now())
    times = record.setdefault("times", {})
    if stage_started:
        times[changes["stage"]] = time.time()
    if changes.get("state") == "running" and "started" not in times:
        times["started"] = time.time()
    if changes.get("state") in TERMINAL:
        times["finished"] = time.time()
    write_json_atomic(store.job_path(job_id), record)
    return record


def fail_job(store: Store, job_id: str, reason: str) -> bool:
    """Mark the job failed with ``reason`` if it is not finished, and remove its files; False if it already was."""
    try:
        update_job(store, job_id, state="failed", stage="failed", error=reason, scheduling=None)
    except JobAbandoned:
        return False
    finally:
        remove_job_files(store, job_id)
    return True


def cancel_job(store: Store, job_id: str) -> dict:
    """Mark the job cancelled (JobAbandoned if it had already finished) and remove its files; the caller stops
    its task. A task that is still running sees the record at its next write and stops without publishing."""
    try:
        return update_job(store, job_id, state="cancelled", stage="cancelled", error=None, scheduling=None)
    finally:
        remove_job_files(store, job_id)


def discard_job(store: Store, job_id: str) -> None:
    """Remove a record that never became a job (a request refused at once) and its files."""
    remove_job_files(store, job_id)
    store.job_path(job_id).unlink(missing_ok=True)


def remove_job_files(store: Store, job_id: str) -> None:
    shutil.rmtree(store.upload_dir(job_id), ignore_errors=True)
    shutil.rmtree(store.work_dir(job_id), ignore_errors=True)
    # what the task was writing when it was stopped, and a generation's video
    for path in (*store.packs.glob(f".*.{job_id}.tavpack"), *store.previews.glob(f".*.{job_id}.gif"),
                 *store.results.glob(f"{job_id}.*"), *store.results.glob(f".{job_id}.*")):
        path.unlink(missing_ok=True)


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
            # For an HTTP client: nothing of the job survives a restart, so the next step is a new upload.
            if fail_job(store, job_id, what.format(why) + "; upload the clip again (POST /v1/videos)"):
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
    leftovers += [*store.jobs.glob(".*.tmp"), *store.previews.glob(".*"), *store.results.glob(".*")]  # temp files
    # a generation's video without its record (the record is written first, so this is a crash's leftover)
    leftovers += [p for p in store.results.iterdir() if not p.name.startswith(".")
                  and not (store.jobs / f"{p.name.split('.')[0]}.json").is_file()]
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
