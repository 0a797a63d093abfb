"""The body of a tuning job, run as a Ray task: tune the uploaded clip on the base SD model, pack it, register it.

Stages, each recorded in the job record: tuning (step/total and the loss after every step), inverting
(the DDIM inversion of the clip), packing
(``tav-export --pack-for`` on the base ENGINE_DIR), then the pack is renamed into
STORE/packs/<video_id>.tavpack: replicas can load it from that moment. The RUN_DIR lives in
STORE/work/<job_id>/ (so the ingress can remove it when a killed task leaves it); the upload
and work folders are deleted when the job ends either way.
"""

import os
import shutil

from tav.runtime.manifest import read_manifest

from .config import ServeConfig
from .errors import client_message
from .jobs import JobAbandoned, fail_job, read_job, remove_job_files, update_job
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
        fail_job(store, job_id, "tuning failed: " + client_message(err))
        raise
    finally:
        remove_job_files(store, job_id)
    return record["video_id"]


def _run(config: ServeConfig, store: Store, job_id: str, record: dict) -> None:
    # Imported here: the ingress imports this module to submit the task and must not load torch.
    from tav.export.pack_writer import write_pack
    from tav.tuner.tuning.config import TuneConfig
    from tav.tuner.tuning.tune import tune

    options, video_id = record["options"], record["video_id"]
    base = read_manifest(config.base_dir)
    clip = store.upload_dir(job_id) / record["clip"]
    update_job(store, job_id, state="running", stage="tuning", worker_pid=os.getpid())
    work = store.work_dir(job_id)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    # The folder goes in run_tuning_job's finally, and with fail_job from anywhere (a killed task).
    run_dir = work / "run"
    tune_config = TuneConfig(
        pretrained_model_path=config.sd_dir, video=str(clip), prompt=options["prompt"], out=str(run_dir),
        frames=base.frames, height=base.height, width=base.width, stride=options["stride"], start=options["start"],
        steps=options["steps"], lr=options["lr"], seed=options["seed"], inversion_steps=options["inversion_steps"],
        eval_pairs=options["eval_pairs"], device=config.tune_device, checkpoint_every=0,
    )
    total = options["steps"]

    def on_stage(stage):
        if stage == "inverting":  # loading and evaluation count as tuning
            update_job(store, job_id, stage=stage)

    # The record is the progress report: no bars in the worker's log.
    tune(tune_config, on_step=lambda step, loss: update_job(store, job_id, progress={"step": step, "total": total},
                                                           loss=loss),
         progress=False, on_stage=on_stage)
    update_job(store, job_id, stage="packing")
    # Written beside its final name (same filesystem, so the rename is atomic), under a name listings skip.
    staged = store.packs / f".{video_id}.{job_id}.tavpack"
    try:
        write_pack(run_dir, config.base_dir, staged)
        target = store.pack_path(video_id)
        if target.exists():
            raise FileExistsError(f"a video {video_id!r} appeared in the store while this job ran; "
                                  "upload under another id")
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    update_job(store, job_id, state="done", stage="done")
