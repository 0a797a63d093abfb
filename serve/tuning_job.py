"""The body of a tuning job, run as a Ray task: tune the uploaded clip on the base SD model, pack it, register it.

Stages, each recorded in the job record with the time it began: preparing (loading the model,
reading the clip, the loss before tuning), tuning (step/total, the loss after every step and the
loss curve), inverting (the DDIM inversion of the clip, step/total), packing (``tav-export
--pack-for`` on the base ENGINE_DIR and the preview gif), then the pack is renamed into
STORE/packs/<video_id>.tavpack under the job lock, only if the job was not cancelled meanwhile:
replicas can load it from that moment. The RUN_DIR lives in STORE/work/<job_id>/ (so the ingress
can remove it when a killed task leaves it); the upload and work folders are deleted when the
job ends either way.
"""

import os
import shutil

from tav.runtime.atomic_files import publish_file
from tav.runtime.command import Interrupted
from tav.runtime.manifest import read_manifest

from .config import ServeConfig
from .errors import client_message
from .jobs import JobAbandoned, fail_job, job_lock, read_job, remove_job_files, update_held, update_job
from .previews import write_preview
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
        fail_job(store, job_id, failure_message(err))
        raise
    finally:
        remove_job_files(store, job_id)
    return record["video_id"]


def failure_message(err: BaseException) -> str:
    """The record's error, written for an HTTP client: what happened and what to send next. Nothing of the job is
    kept (no partial run to resume over HTTP), so a stop is not described in the tuner's words ("checkpoint saved
    in run.partial", "add --resume") nor as a number (SystemExit's code)."""
    if isinstance(err, (KeyboardInterrupt, SystemExit, Interrupted)):
        return ("interrupted: the tuning task was stopped (tav-serve stopping, or its worker signalled) before it "
                "finished; upload the clip again (POST /v1/videos)")
    return f"tuning failed: {client_message(err)}; fix the clip or the settings and upload again (POST /v1/videos)"


def _run(config: ServeConfig, store: Store, job_id: str, record: dict) -> None:
    # Imported here: the ingress imports this module to submit the task and must not load torch.
    from tav.tuner.tuning.config import TuneConfig
    from tav.tuner.tuning.tune import tune
    from tav.tuner.tuning.video_input import load_clip

    options, video_id = record["options"], record["video_id"]
    base = read_manifest(config.base_dir)
    clip = store.upload_dir(job_id) / record["clip"]
    update_job(store, job_id, state="running", stage="preparing", stage_started=True, scheduling=None,
               worker_pid=os.getpid())
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
        if stage in ("tuning", "inverting"):  # loading and the loss evaluations count as preparing / tuning
            update_job(store, job_id, stage=stage, stage_started=True)

    # The record is the progress report: no bars in the worker's log.
    tune(tune_config, on_step=lambda step, loss: update_job(store, job_id, progress={"step": step, "total": total},
                                                           loss=loss), progress=False,
         on_stage=on_stage,
         on_inversion_step=lambda step, steps: update_job(store, job_id, inversion={"step": step, "total": steps}))
    update_job(store, job_id, stage="packing", stage_started=True)
    from tav.export.pack_writer import write_pack

    # Both are written beside their final names (same filesystem, so the renames are atomic), under names
    # listings skip; the preview is the frames the tuner read, small.
    staged_pack, staged_preview = store.staged_pack_path(video_id, job_id), store.staged_preview_path(video_id, job_id)
    try:
        write_preview(load_clip(clip, base.frames, base.height, base.width, options["stride"], options["start"]),
                      staged_preview)
        write_pack(run_dir, config.base_dir, staged_pack)
        _publish(store, job_id, video_id, staged_pack, staged_preview)
    finally:
        staged_pack.unlink(missing_ok=True)
        staged_preview.unlink(missing_ok=True)


def _publish(store: Store, job_id: str, video_id: str, staged_pack, staged_preview) -> None:
    """Rename the pack (and its preview) into STORE and mark the job done, as one step under the job lock: a
    cancel that came first wins (nothing is published); one that comes after finds the job done."""
    with job_lock(store):
        update_held(store, job_id, stage="publishing")  # JobAbandoned if it was cancelled meanwhile
        target = store.pack_path(video_id)
        if target.exists():
            raise FileExistsError(f"a video {video_id!r} appeared in the store while this job ran; "
                                  "upload under another id")
        publish_file(staged_preview, store.preview_path(video_id))  # first: a listed video has its preview
        publish_file(staged_pack, target)
        update_held(store, job_id, state="done", stage="done")
