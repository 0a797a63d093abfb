"""``tune(config)``: one-shot tuning of a run, end to end, into an atomically written RUN_DIR.

Phases: check every input before writing anything (tuning/tune_checks.py); resume or start the run
in ``RUN_DIR.partial/`` (tuning/resume_state.py); tune with a progress bar, checkpointing every
``checkpoint_every`` steps and on Ctrl-C, then DDIM-invert the clip with the tuned UNet; record
tuned.safetensors, inverted_latents.safetensors and run.json (last); publish: rename the folder to RUN_DIR.
The loss is evaluated before and after tuning over ``eval_pairs`` UNet passes (0: not at all, and run.json
then has no ``eval_loss_before``/``eval_loss_after``).
"""

import json
import platform
import random
import resource
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from tav.runtime.atomic_files import publish_folder
from tav.runtime.command import Interrupted
from tav.runtime.stops import stops_held

from ..model import sd_folder
from ..model_sources import resolve_base_model
from ..progress import Progress, counted
from ..tuned_weights import INVERTED_LATENTS, RUN_JSON, TUNED_WEIGHTS
from .config import OFFICIAL_TRAINABLE_MODULES, TuneConfig
from .ddim_inversion import ddim_inversion
from .interrupt_flag import InterruptFlag
from .partial_claim import claim_partial
from .resume_state import (
    has_checkpoint,
    load_checkpoint,
    partial_dir,
    remove_checkpoints,
    save_checkpoint,
)
from .session import TuningSession, eval_loss, prepare, train_step
from .tune_checks import TUNE_CONFIG, check_config, check_resume_matches
from .tune_checks import check_targets as _check_targets  # the seam tests patch to stage a race
from .validation_samples import write_validation_samples
from .video_input import load_clip


class TuneInterrupted(Interrupted):
    """Ctrl-C or SIGTERM (``signum``): the message says what was saved and how to resume."""


def tune(cfg: TuneConfig, on_step=None, *, progress: bool = True, on_stage=None, on_inversion_step=None) -> Path:
    """Tune, invert and write RUN_DIR (= cfg.out); returns its path. ``on_step(step, loss)`` runs after each step.

    ``progress``: bars and timed stage lines on stderr; ``on_stage(name)`` hears each stage start
    ("evaluating", "tuning", "inverting", "saving"); ``on_inversion_step(step, total)`` runs after each
    DDIM inversion step (a service's job record follows both).
    """
    started = time.perf_counter()
    check_config(cfg)
    run_dir = Path(cfg.out).absolute()
    partial = partial_dir(run_dir)
    _check_targets(run_dir, partial, cfg.resume)
    pixels = load_clip(cfg.video, cfg.frames, cfg.height, cfg.width, cfg.stride, cfg.start)
    # may download: after the cheap checks
    base = resolve_base_model(cfg.pretrained_model_path, cfg.pretrained_model_revision)
    sd_dir = base.path
    settings = dict(cfg.to_dict(), pretrained_model_path=str(sd_dir), pretrained_model_source=base.source,
                    video=str(Path(cfg.video).absolute()), out=str(run_dir),
                    pretrained_model_hash=sd_folder.folder_hash(sd_dir))
    del settings["resume"]
    if cfg.resume:
        check_resume_matches(partial, settings)
    job = _Job(cfg, settings, sd_dir, run_dir, partial, started, Progress("tav-tune", progress, on_stage),
               on_inversion_step)
    with claim_partial(partial, cfg.resume) as created:  # one run per RUN_DIR.partial, claimed atomically
        try:
            with InterruptFlag() as stop:
                return _run(job, pixels, stop, on_step)
        except BaseException:
            # Nothing worth resuming: leave nothing behind. A finished run (run.json) is never deleted.
            if created and not has_checkpoint(partial) and not (partial / RUN_JSON).is_file():
                shutil.rmtree(partial, ignore_errors=True)
            raise


@dataclass
class _Job:
    """One tav-tune invocation: its checked settings and where its RUN_DIR is built."""

    cfg: TuneConfig
    settings: dict  # run.json's settings part (tune_config.json while it runs)
    sd_dir: Path
    run_dir: Path
    partial: Path
    started: float
    shown: Progress  # stage lines and bars on stderr (or nothing), and the on_stage hook
    on_inversion_step: object = None  # (step, total) -> None


@dataclass
class _Progress:
    """What a checkpoint saves besides the tensors, and what run.json reports of the loop."""

    eval_before: float | None  # None: not evaluated (eval_pairs 0)
    step: int = 0
    losses: list = field(default_factory=list)
    train_time: float = 0.0
    resumed_from: int | None = None

    def state(self) -> dict:
        return {"step": self.step, "losses": self.losses, "eval_loss_before": self.eval_before,
                "train_time_s": self.train_time}


def _run(job: _Job, pixels, stop, on_step) -> Path:
    """The phases: resume (or start), the tuning loop and inversion, record the files, publish RUN_DIR."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # run.json's peak memory is this run's, not the process's
    if not job.cfg.resume:
        torch.manual_seed(job.cfg.seed)  # the global RNGs: not drawn from by our code, seeded for any library that does
        random.seed(job.cfg.seed)
        np.random.seed(job.cfg.seed)
    with job.shown.stage("loading", "loading the model, encoding the clip and the prompt"):
        s = prepare(job.cfg, job.sd_dir, pixels)
    try:
        stop.check()
        progress = _resume_or_start(job, s, stop)
    except KeyboardInterrupt:
        if job.cfg.resume:  # the checkpoint is untouched
            raise TuneInterrupted(f"interrupted before tuning resumed; the checkpoint in {job.partial} is kept: "
                                  "resume with the same command plus --resume", stop.signum) from None
        raise TuneInterrupted("interrupted before the first step; nothing to resume", stop.signum) from None
    inverted, eval_after, inversion_time = _tune_and_invert(job, s, progress, stop, on_step)
    _record(job, s, progress, inverted, dict(eval_loss_after=eval_after, inversion_time_s=inversion_time))
    run_dir = _publish(job)
    if stop.requested:  # came while saving: the run was finished rather than thrown away
        warnings.warn(f"stop received while saving; the run is complete: {run_dir}", stacklevel=1)
    return run_dir


def _resume_or_start(job: _Job, s: TuningSession, stop) -> _Progress:
    """A resumed run's trainable weights and loop state from its checkpoint; a new run's settings and first loss."""
    cfg = job.cfg
    if not cfg.resume:
        (job.partial / TUNE_CONFIG).write_text(json.dumps(job.settings, indent=1))
        return _Progress(eval_before=_evaluate(job, s, stop, "before"))
    tensors, state = load_checkpoint(job.partial, s.optimizer, s.scaler, s.generator)
    with torch.no_grad():
        for name, param in s.trainable.items():
            param.copy_(tensors[name])
    step = state["step"]
    if step > cfg.steps:
        raise ValueError(f"the checkpoint is at step {step}, past --steps {cfg.steps}; pass --steps {step} or more")
    return _Progress(state["eval_loss_before"], step, state["losses"], state["train_time_s"], resumed_from=step)


def _tune_and_invert(job: _Job, s: TuningSession, p: _Progress, stop, on_step) -> tuple:
    """Train to cfg.steps (checkpoints, validation, Ctrl-C between steps), then the final loss and DDIM inversion."""
    cfg, shown = job.cfg, job.shown

    def checkpoint():
        save_checkpoint(job.partial, s.trainable, s.optimizer, s.scaler, s.generator, p.state())

    in_step, bar = False, None
    try:
        stop.check()
        if shown.on_stage is not None:
            shown.on_stage("tuning")
        bar = shown.bar(cfg.steps, "", initial=p.step)
        while p.step < cfg.steps:
            in_step = True
            tick = time.perf_counter()
            loss = train_step(s)
            p.train_time += time.perf_counter() - tick
            p.step += 1
            p.losses.append(loss)
            in_step = False
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0 and p.step < cfg.steps:
                checkpoint()
            if cfg.validate_every and p.step % cfg.validate_every == 0:
                write_validation_samples(s, job.sd_dir, job.partial, p.step)
            if on_step is not None:
                on_step(p.step, loss)
            stop.check()
        bar.close()
        eval_after = _evaluate(job, s, stop, "after")
        if p.eval_before is not None and eval_after is not None:
            shown.line(f"evaluation loss {p.eval_before:.4f} -> {eval_after:.4f}")
        stop.check()
        tick = time.perf_counter()
        with shown.stage("inverting", f"inverting the clip ({counted(cfg.inversion_steps, 'DDIM step')})"), \
                shown.bar(cfg.inversion_steps, "inversion") as inversion_bar:
            inverted = ddim_inversion(s.unet, s.latents, s.empty_text, sd_folder.load_ddim(job.sd_dir),
                                      cfg.inversion_steps, s.autocast,
                                      callback=lambda i, total, *_: (inversion_bar.update(1), stop.check(),
                                                                     _report(job.on_inversion_step, i + 1, total)))
        return inverted, eval_after, time.perf_counter() - tick
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        raise _interrupted(job, p, in_step, checkpoint, stop.signum) from None


def _report(hook, step: int, total: int) -> None:
    if hook is not None:
        hook(step, total)


def _evaluate(job: _Job, s: TuningSession, stop, when: str) -> float | None:
    """The loss ``when`` ("before"/"after") tuning over eval_pairs UNet passes, with a bar; None with eval_pairs 0."""
    n = job.cfg.eval_pairs
    if n == 0:
        return None
    passes = counted(n, "UNet pass", "UNet passes")
    with job.shown.stage("evaluating", f"evaluating the loss {when} tuning ({passes})"), \
            job.shown.bar(n, "evaluation", unit="pass") as bar:
        return eval_loss(s, on_pass=lambda: (bar.update(1), stop.check()))


def _interrupted(job: _Job, p: _Progress, in_step: bool, checkpoint, signum: int | None) -> TuneInterrupted:
    """The interruption's message; between steps (after the first) the state is checkpointed first."""
    partial = job.partial
    if in_step:
        if has_checkpoint(partial):
            return TuneInterrupted(f"interrupted in the middle of step {p.step + 1}; the last checkpoint in {partial} "
                                   "is kept: resume with the same command plus --resume", signum)
        return TuneInterrupted(f"interrupted in the middle of step {p.step + 1}, before any checkpoint; "
                               "nothing to resume", signum)
    if p.step > 0:
        checkpoint()
        return TuneInterrupted(f"interrupted at step {p.step}/{job.cfg.steps}; checkpoint saved in {partial}; "
                               "resume with the same command plus --resume", signum)
    return TuneInterrupted("interrupted before the first step; nothing to resume", signum)


def _record(job: _Job, s: TuningSession, p: _Progress, inverted: torch.Tensor, measured: dict) -> None:
    """tuned.safetensors, inverted_latents.safetensors, then run.json (last: its presence marks a finished run)."""
    partial = job.partial
    with job.shown.stage("saving", f"saving to {partial.name}/"):
        save_file({k: v.detach().float().cpu().contiguous() for k, v in s.trainable.items()},
                  str(partial / TUNED_WEIGHTS))
        save_file({"latents": inverted.float().cpu().contiguous()}, str(partial / INVERTED_LATENTS))
    peak, peak_kind = _peak_memory(s.device)
    run = dict(
        job.settings,
        schema_version=1,
        trainable_modules=OFFICIAL_TRAINABLE_MODULES,
        num_trainable_params=sum(v.numel() for v in s.trainable.values()),
        lr_schedule="constant",
        resolved_precision=str(s.compute_dtype or torch.float32).replace("torch.", ""),
        resolved_device=str(s.device),
        latents_shape=list(s.latents.shape),
        tuned_frames=job.cfg.frames,  # tav-invert keeps this (and the window) when it re-inverts another length
        temporal_window=job.cfg.frames,  # tuned with full attention over its frames: the default window elsewhere
        inversion={"steps": job.cfg.inversion_steps, "prompt": "", "guidance": None, "scheduler": "DDIM"},
        losses=p.losses,
        **_measured_losses(p.eval_before, measured["eval_loss_after"]),
        resumed_from_step=p.resumed_from,
        train_time_s=p.train_time,
        steps_per_s=len(p.losses) / p.train_time if p.train_time else None,
        inversion_time_s=measured["inversion_time_s"],
        wall_time_s=time.perf_counter() - job.started,  # this invocation: loading, tuning, evaluation, inversion
        peak_memory_bytes=peak,
        peak_memory_kind=peak_kind,
        versions=_versions(),
    )
    (partial / RUN_JSON).write_text(json.dumps(run, indent=1))


def _measured_losses(before: float | None, after: float | None) -> dict:
    """run.json's evaluation losses: only those measured (none with eval_pairs 0; a resume may add one)."""
    return {k: v for k, v in (("eval_loss_before", before), ("eval_loss_after", after)) if v is not None}


def _publish(job: _Job) -> Path:
    """Drop the resume state and rename RUN_DIR.partial to RUN_DIR."""
    partial, run_dir = job.partial, job.run_dir
    remove_checkpoints(partial)
    (partial / TUNE_CONFIG).unlink(missing_ok=True)
    try:  # run_dir was absent or empty at the start; the rename fails if something appeared in it since
        with stops_held(lambda signum: warnings.warn(f"stop received while {run_dir} was put in place; "
                                                     "the run is complete", stacklevel=1)):
            publish_folder(partial, run_dir)  # and gives the run the modes every output gets
    except OSError as err:
        raise FileExistsError(
            f"the run finished but cannot become {run_dir} "
            f"({err.strerror or err}: something appeared there while tuning); "
            f"the complete run is kept in {partial}: move it to a free RUN_DIR name yourself"
        ) from None
    return run_dir


def _peak_memory(device: torch.device) -> tuple:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss"  # Linux reports KiB


def _versions() -> dict:
    import diffusers
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__}
