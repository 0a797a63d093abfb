"""An async generate (``"async": true``), on the model replica: sample, recording each step in the job record, then
write the video to STORE/results/<job_id>.<format> and mark the record done with its timings.

The record is the progress report a client polls (GET /v1/jobs/{job_id}); the video is at
GET /v1/jobs/{job_id}/result. A cancel (DELETE) marks the record cancelled: the next step's write
raises JobAbandoned, which ends the sampling loop there.
"""

import time

from tav.runtime.atomic_files import write_bytes_atomic

from .encoding import MEDIA_TYPES, encode_frames
from .jobs import update_job
from .store import Store


def generate_into_store(video, store: Store, job_id: str, sampling: dict, fmt: str, fps: float) -> dict:
    """Run on a worker thread of the replica holding ``video`` (tav.serve.residency.ResidentVideo)."""
    total = sampling["steps"]
    update_job(store, job_id, state="running", stage="generating", stage_started=True)

    def each_step(step_index, steps, *_):
        update_job(store, job_id, progress={"step": step_index + 1, "total": steps})

    result = video.generate(**sampling, callback=each_step)
    update_job(store, job_id, stage="encoding", progress={"step": total, "total": total})
    started = time.perf_counter()
    write_bytes_atomic(store.result_path(job_id, fmt), encode_frames(result.frames, fmt, fps))
    timings = {**result.timings, "encode": time.perf_counter() - started}
    outcome = {"url": f"/v1/jobs/{job_id}/result", "media_type": MEDIA_TYPES[fmt], "format": fmt,
               "shape": list(result.frames.shape), "timings": {k: round(v, 6) for k, v in timings.items()}}
    update_job(store, job_id, state="done", stage="done", result=outcome)
    return outcome
