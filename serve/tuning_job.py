"""The body of a tuning job, run as a Ray task: tune the uploaded clip on the base SD model, pack it, register it.

Stages, each recorded in the job record: tuning (step/total after every step), packing
(``tav-export --pack-for`` on the base ENGINE_DIR), then the pack is renamed into
STORE/packs/<video_id>.tavpack: replicas can load it from that moment. The RUN_DIR lives in
a local temp folder of the worker and goes away with it; the upload is deleted when the
job ends either way.
"""

import os
import shutil
import tempfile
from pathlib import Path

from tav.runtime.manifest import read_manifest
from tav.runtime.one_line import first_line

from .config import ServeConfig
from .jobs import JobAbandoned, fail_job, read_job, update_job
from .store import Store


def run_tuning_job(config: ServeConfig, job_id: str) -> str:
    """Run job ``job_id`` to its end; returns the video id. Failures are written to the record, then re-raised."""
    store = Store(config.store)
    record = read_job(store, job_id)
    try:
        _run(config, store, job_id, record)
    except JobAbandoned:
        raise
    except BaseException as err:
        fail_job(store, job_id, first_line(err, None, with_type=True))
        raise
    finally:
        shutil.rmtree(store.upload_dir(job_id), ignore_errors=True)
    return record["video_id"]


def _run(config: ServeConfig, store: Store, job_id: str, record: dict) -> None:
    # Imported here: the ingress imports this module to submit the task and must not load torch.
    from tav.export.pack_writer import write_pack
    from tav.tuner import TuneConfig, tune

    options, video_id = record["options"], record["video_id"]
    base = read_manifest(config.base_dir)
    clip = store.upload_dir(job_id) / record["clip"]
    update_job(store, job_id, state="running", stage="tuning", worker_pid=os.getpid())
    with tempfile.TemporaryDirectory(prefix=f"tav-job-{job_id}-") as work:
        run_dir = Path(work) / "run"
        tune_config = TuneConfig(
            pretrained_model_path=config.sd_dir, video=str(clip), prompt=options["prompt"], out=str(run_dir),
            frames=base.frames, height=base.height, width=base.width, stride=options["stride"], start=options["start"],
            steps=options["steps"], lr=options["lr"], seed=options["seed"], inversion_steps=options["inversion_steps"],
            eval_pairs=options["eval_pairs"], device=config.tune_device, checkpoint_every=0,
        )
        total = options["steps"]
        tune(tune_config, on_step=lambda step, loss: update_job(store, job_id, progress={"step": step, "total": total},
                                                               loss=loss))
        update_job(store, job_id, stage="packing")
        # Written beside its final name (same filesystem, so the rename is atomic), under a name listings skip.
        staged = store.packs / f".{video_id}.{job_id}.tavpack"
        try:
            write_pack(run_dir, config.base_dir, staged)
            target = store.pack_path(video_id)
            if target.exists():
                raise FileExistsError(f"a video {video_id!r} appeared in the store while this job ran; upload under another id")
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
    update_job(store, job_id, state="done", stage="done")
