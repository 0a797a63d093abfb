"""``tune(config)``: one-shot tuning of a run, end to end, into an atomically written RUN_DIR.

Steps: check every input before writing anything; build the run in
``RUN_DIR.partial/`` (see ``train_checkpoint``); tune with a progress bar,
checkpointing every ``checkpoint_every`` steps and on Ctrl-C; measure the
evaluation loss before and after; DDIM-invert the clip with the tuned UNet;
write tuned.safetensors, inverted_latents.safetensors and run.json (last);
rename the folder to RUN_DIR.
"""

import json
import platform
import random
import re
import resource
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import sd_folder
from .inversion import ddim_inversion
from .model_sources import resolve_base_model
from .partial_claim import claim_partial
from .saved_files import save_tensors
from .train_checkpoint import has_checkpoint, load_checkpoint, partial_dir, remove_checkpoints, save_checkpoint
from .tune_config import OFFICIAL_TRAINABLE_MODULES, PRECISIONS, TuneConfig
from .tuned_weights import INVERTED_LATENTS, RUN_JSON, TUNED_WEIGHTS, TunedModel
from .tuning_session import TuningSession, eval_loss, prepare, resolve_device, train_step
from .video_input import load_clip

TUNE_CONFIG = "tune_config.json"
# A resume must agree on these; steps, checkpointing, validation and inversion settings may change.
RESUME_MUST_MATCH = ("pretrained_model_path", "pretrained_model_hash", "video", "prompt", "frames", "stride", "start",
                     "height", "width", "lr", "seed", "precision", "device", "adam_betas", "adam_weight_decay",
                     "adam_epsilon", "max_grad_norm")


class TuneInterrupted(Exception):
    """Ctrl-C: the message says what was saved and how to resume."""


def tune(cfg: TuneConfig, on_step=None) -> Path:
    """Tune, invert and write RUN_DIR (= cfg.out); returns its path. ``on_step(step, loss)`` runs after each step."""
    started = time.perf_counter()
    _check_config(cfg)
    run_dir = Path(cfg.out).absolute()
    partial = partial_dir(run_dir)
    _check_targets(run_dir, partial, cfg.resume)
    pixels = load_clip(cfg.video, cfg.frames, cfg.height, cfg.width, cfg.stride, cfg.start)
    base = resolve_base_model(cfg.pretrained_model_path, cfg.pretrained_model_revision)  # may download: after cheap checks
    sd_dir = base.path
    settings = dict(cfg.to_dict(), pretrained_model_path=str(sd_dir), pretrained_model_source=base.source,
                    video=str(Path(cfg.video).absolute()), out=str(run_dir),
                    pretrained_model_hash=sd_folder.folder_hash(sd_dir))
    del settings["resume"]
    if cfg.resume:
        _check_resume_matches(partial, settings)
    with claim_partial(partial, cfg.resume) as created:  # one run per RUN_DIR.partial, claimed atomically
        try:
            with _InterruptFlag() as stop:
                return _run(cfg, settings, sd_dir, pixels, run_dir, partial, stop, on_step, started)
        except BaseException:
            # Nothing worth resuming: leave nothing behind. A finished run (run.json) is never deleted.
            if created and not has_checkpoint(partial) and not (partial / RUN_JSON).is_file():
                shutil.rmtree(partial, ignore_errors=True)
            raise


def _run(cfg, settings, sd_dir, pixels, run_dir, partial, stop, on_step, started) -> Path:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # run.json's peak memory is this run's, not the process's
    if not cfg.resume:
        torch.manual_seed(cfg.seed)  # the global RNGs: not drawn from by our code, seeded for any library that does
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
    s = prepare(cfg, sd_dir, pixels)
    step, losses, train_time, resumed_from = 0, [], 0.0, None
    if cfg.resume:
        tensors, state = load_checkpoint(partial, s.optimizer, s.scaler, s.generator)
        with torch.no_grad():
            for name, param in s.trainable.items():
                param.copy_(tensors[name])
        step = resumed_from = state["step"]
        losses, eval_before, train_time = state["losses"], state["eval_loss_before"], state["train_time_s"]
        if step > cfg.steps:
            raise ValueError(f"the checkpoint is at step {step}, past --steps {cfg.steps}; pass --steps {step} or more")
    else:
        (partial / TUNE_CONFIG).write_text(json.dumps(settings, indent=1))
        eval_before = eval_loss(s)

    def checkpoint():
        save_checkpoint(partial, s.trainable, s.optimizer, s.scaler, s.generator,
                        {"step": step, "losses": losses, "eval_loss_before": eval_before, "train_time_s": train_time})

    in_step, progress = False, None
    try:
        stop.check()
        progress = tqdm(total=cfg.steps, initial=step, desc="tav-tune", unit="step", dynamic_ncols=True)
        while step < cfg.steps:
            in_step = True
            tick = time.perf_counter()
            loss = train_step(s)
            train_time += time.perf_counter() - tick
            step += 1
            losses.append(loss)
            in_step = False
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.4f}")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                checkpoint()
            if cfg.validate_every and step % cfg.validate_every == 0:
                _validate(s, sd_dir, partial, step)
            if on_step is not None:
                on_step(step, loss)
            stop.check()
        progress.close()
        eval_after = eval_loss(s)
        stop.check()
        tick = time.perf_counter()
        inverted = ddim_inversion(s.unet, s.latents, s.empty_text, sd_folder.load_ddim(sd_dir), cfg.inversion_steps,
                                  s.autocast, callback=lambda *_: stop.check())
        inversion_time = time.perf_counter() - tick
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        if in_step:
            if has_checkpoint(partial):
                raise TuneInterrupted(f"interrupted in the middle of step {step + 1}; the last checkpoint in {partial} "
                                      "is kept: resume with the same command plus --resume") from None
            raise TuneInterrupted(f"interrupted in the middle of step {step + 1}, before any checkpoint; nothing to resume") from None
        if step > 0:
            checkpoint()
            raise TuneInterrupted(
                f"interrupted at step {step}/{cfg.steps}; checkpoint saved in {partial}; "
                "resume with the same command plus --resume") from None
        raise TuneInterrupted("interrupted before the first step; nothing to resume") from None

    save_tensors({k: v.detach().float().cpu().contiguous() for k, v in s.trainable.items()}, partial / TUNED_WEIGHTS)
    save_tensors({"latents": inverted.float().cpu().contiguous()}, partial / INVERTED_LATENTS)
    peak, peak_kind = _peak_memory(s.device)
    run = dict(
        settings,
        schema_version=1,
        trainable_modules=OFFICIAL_TRAINABLE_MODULES,
        num_trainable_params=sum(p.numel() for p in s.trainable.values()),
        lr_schedule="constant",
        resolved_precision=str(s.compute_dtype or torch.float32).replace("torch.", ""),
        resolved_device=str(s.device),
        latents_shape=list(s.latents.shape),
        inversion={"steps": cfg.inversion_steps, "prompt": "", "guidance": None, "scheduler": "DDIM"},
        losses=losses,
        eval_loss_before=eval_before,
        eval_loss_after=eval_after,
        resumed_from_step=resumed_from,
        train_time_s=train_time,
        steps_per_s=len(losses) / train_time if train_time else None,
        inversion_time_s=inversion_time,
        wall_time_s=time.perf_counter() - started,  # this invocation: loading, tuning, evaluation, inversion
        peak_memory_bytes=peak,
        peak_memory_kind=peak_kind,
        versions=_versions(),
    )
    (partial / RUN_JSON).write_text(json.dumps(run, indent=1))
    remove_checkpoints(partial)
    (partial / TUNE_CONFIG).unlink(missing_ok=True)
    try:
        if run_dir.exists():
            run_dir.rmdir()  # empty at the start; fails if something appeared in it since
        partial.rename(run_dir)
    except OSError as err:
        raise FileExistsError(
            f"the run finished but cannot become {run_dir} ({err.strerror or err}: something appeared there while tuning); "
            f"the complete run is kept in {partial}: move it to a free RUN_DIR name yourself"
        ) from None
    return run_dir


def _validate(s: TuningSession, sd_dir: Path, partial: Path, step: int):
    """Sample the validation prompts with the current weights into validation/ (as the official validation_steps)."""
    from tav.runtime.video_output import write_video

    from .sampler import PipelineParts, sample

    cfg = s.cfg
    if s.parts is None:
        s.parts = PipelineParts.load(sd_dir, s.device)
    tuned = TunedModel(s.unet, sd_dir, cfg.frames, cfg.height, cfg.width, None, "", {})
    s.unet.eval()
    try:
        if cfg.validation_init == "inverted":
            tuned.inverted_latents = ddim_inversion(s.unet, s.latents, s.empty_text, sd_folder.load_ddim(sd_dir),
                                                    cfg.inversion_steps, s.autocast)
        for prompt in cfg.validation_prompts or [cfg.prompt]:
            result = sample(tuned, prompt, steps=cfg.validation_steps, guidance=cfg.validation_guidance, seed=cfg.seed,
                            init=cfg.validation_init, parts=s.parts, autocast=s.autocast)
            slug = re.sub(r"[^A-Za-z0-9]+", "-", prompt).strip("-")[:60] or "empty"
            (partial / "validation").mkdir(exist_ok=True)
            # overwrite: a resumed run re-validates the steps after its checkpoint
            write_video(result.frames, partial / "validation" / f"step-{step:06d}-{slug}.gif", overwrite=True)
    finally:
        s.unet.train()


def _check_config(cfg: TuneConfig):
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.validation_init not in ("noise", "inverted"):
        raise ValueError(f"validation init must be 'noise' or 'inverted', got {cfg.validation_init!r}")
    resolve_device(cfg.device)  # "--device tpu" fails now, not after loading the clip and the model
    for name in ("steps", "inversion_steps", "eval_pairs", "validation_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.lr <= 0:
        raise ValueError(f"learning rate must be positive, got {cfg.lr}")
    if not cfg.prompt:
        raise ValueError("the training prompt is empty; pass --prompt with the clip's caption")
    if str(cfg.out).strip() in ("", "-"):
        raise ValueError(f"--out {cfg.out!r} is not a folder name; give the RUN_DIR's path")


def _check_targets(run_dir: Path, partial: Path, resume: bool):
    if (run_dir / RUN_JSON).is_file():
        raise FileExistsError(f"{run_dir} already holds a finished run; choose a new --out")
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise FileExistsError(f"{run_dir} exists and is not an empty folder; choose a new --out")
    if resume and not has_checkpoint(partial):
        raise FileNotFoundError(f"nothing to resume: no checkpoint in {partial}; run without --resume")
    if not resume and partial.exists():
        raise FileExistsError(f"{partial} holds an interrupted run; add --resume to continue it, or delete it to start over")


def _check_resume_matches(partial: Path, settings: dict):
    try:
        saved = json.loads((partial / TUNE_CONFIG).read_text())
    except (OSError, json.JSONDecodeError):
        raise ValueError(f"cannot resume: {partial / TUNE_CONFIG} is missing or corrupt; delete {partial} and start over") from None
    for key in RESUME_MUST_MATCH:
        if saved.get(key) != settings.get(key):
            raise ValueError(f"cannot resume: {key} was {saved.get(key)!r}, now {settings.get(key)!r}; "
                             "resume with the original settings")


def _peak_memory(device: torch.device) -> tuple:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss"  # Linux reports KiB


def _versions() -> dict:
    import diffusers
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__}


class _InterruptFlag:
    """Turns the first Ctrl-C (or SIGTERM, as a service manager or `kill` stops a job) into a request honoured
    between steps, so a checkpoint is saved and never half-updated.

    A second signal interrupts at once (the previous handlers are back by then).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.requested = True
        self._restore()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        tqdm.write(f"tav-tune: {name}: stopping after this step to save a checkpoint (again to stop at once)", file=sys.stderr)

    def _restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def check(self):
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        self._restore()
        return False
