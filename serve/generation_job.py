"""An async generate (``"async": true``), on the model replica: sample, recording each step in the job record, then
write the video to STORE/results/<job_id>.<format> and mark the record done with its timings.

The record is the progress report a client polls (GET /v1/jobs/{job_id}); the video is at
GET /v1/jobs/{job_id}/result. A cancel (DELETE) marks the record cancelled: the next progress write
raises JobAbandoned, which ends the sampling loop there.
"""

import time

from tav.runtime.atomic_files import write_bytes_atomic

from .encoding import MEDIA_TYPES, encode_frames
from .jobs import update_job
from .store import Store

# A record write takes the job lock and fsyncs: on a GPU a step takes ~20 ms, so the record follows the steps at most
# this often (the first and the last step always), and a cancel is seen within it.
PROGRESS_EVERY_S = 0.25


def generate_into_store(video, store: Store, job_id: str, sampling: dict, fmt: str, fps: float) -> dict:
    """Run on a worker thread of the replica holding ``video`` (tav.serve.residency.ResidentVideo)."""
    total = sampling["steps"]
    update_job(store, job_id, state="running", stage="generating", stage_started=True)

    last_write = [0.0]

    def each_step(step_index, steps, *_):
        now = time.monotonic()
        if step_index == 0 or step_index + 1 == steps or now - last_write[0] >= PROGRESS_EVERY_S:
            update_job(store, job_id, progress={"step": step_index + 1, "total": steps})
            last_write[0] = now

    result = video.generate(**sampling, callback=each_step)
    update_job(store, job_id, stage="encoding", progress={"step": total, "total": total})
    started = time.perf_counter()
    write_bytes_atomic(store.result_path(job_id, fmt), encode_frames(result.frames, fmt, fps))
    timings = {**result.timings, "encode": time.perf_counter() - started}
    outcome = {"url": f"/v1/jobs/{job_id}/result", "media_type": MEDIA_TYPES[fmt], "format": fmt,
               "shape": list(result.frames.shape), "timings": {k: round(v, 6) for k, v in timings.items()}}
    update_job(store, job_id, state="done", stage="done", result=outcome)
    return outcome
