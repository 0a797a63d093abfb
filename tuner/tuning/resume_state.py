"""Resumable tuning state: ``RUN_DIR.partial/checkpoint/``.

A run is built in ``RUN_DIR.partial/`` and renamed to RUN_DIR only when it is
complete, so a folder with ``run.json`` is always finished work. While it runs,
``RUN_DIR.partial/`` holds:

    tune_config.json      the settings the run started with (a resume must match them)
    checkpoint/           the latest resumable state, replaced atomically
        trainable.safetensors   the tuned tensors (fp32 master weights)
        optimizer.pt            AdamW (and fp16 grad-scaler) state
        rng.pt                  torch CPU/CUDA RNG states and the training noise generator
        state.json              step, losses so far, eval_loss_before, time so far, python/numpy RNG states
    validation/           samples written by --validate-every

Everything is read back with ``weights_only=True`` through model/torch_files.py: no pickled code runs on
resume, and a hostile or garbled file is one line ("FILE is not a safe torch file (...): ...").
"""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tav.runtime.atomic_files import publish_folder
from tav.runtime.command import first_line
from tav.runtime.file_fields import COUNT, LIST, NUMBER, Fields, Form
from tav.runtime.strict_json import read_json_file

from ..model.torch_files import load_torch_file

CHECKPOINT = "checkpoint"


def has_checkpoint_at(folder: Path) -> bool:
    return (folder / "state.json").is_file()


def remove_checkpoints(partial: Path):
    for name in (CHECKPOINT, f"{CHECKPOINT}.tmp", f"{CHECKPOINT}.old"):
        shutil.rmtree(partial / name, ignore_errors=True)


def partial_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".partial")


def has_checkpoint(partial: Path) -> bool:
    return any(has_checkpoint_at(partial / name) for name in (CHECKPOINT, f"{CHECKPOINT}.old"))


def save_checkpoint(partial: Path, trainable: dict, optimizer, scaler, generator: torch.Generator, state: dict):
    """Write the state after a completed step into a fresh folder, then swap it in place of the old one."""
    staging, final, old = (partial / f"{CHECKPOINT}{s}" for s in (".tmp", "", ".old"))
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in trainable.items()},
              str(staging / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, staging / "optimizer.pt")
    torch.save({
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }, staging / "rng.pt")
    numpy_state = np.random.get_state()
    state = dict(state, python_random=_to_json(random.getstate()),
                 numpy_random=[numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]])
    (staging / "state.json").write_text(json.dumps(state))  # written last: its presence marks a complete checkpoint
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
    # The previous checkpoint waits at .old until the new one is in place: load_checkpoint falls back to it.
    publish_folder(staging, final, replace=True, aside=old)


def load_checkpoint(partial: Path, optimizer, scaler, generator: torch.Generator) -> tuple:
    """Restore optimizer, scaler and RNGs in place; returns (trainable tensors, state dict).

    A checkpoint that is garbled, or hostile (a pickle naming code in optimizer.pt or rng.pt), is one
    ValueError line: what is wrong and that the run must start over.
    """
    folder = partial / CHECKPOINT
    if not has_checkpoint_at(folder):
        folder = partial / f"{CHECKPOINT}.old"  # interrupted while swapping: the previous one is whole
    try:
        state = _read_state(folder / "state.json")
        trainable = load_file(str(folder / "trainable.safetensors"))
        opt, rng = (load_torch_file(folder / name, mmap=False) for name in ("optimizer.pt", "rng.pt"))
        if not (isinstance(opt, dict) and isinstance(rng, dict) and {"optimizer", "scaler"} <= opt.keys()
                and {"torch_cpu", "torch_cuda", "generator"} <= rng.keys()):
            raise ValueError(f"{folder}: optimizer.pt or rng.pt lacks the state tav-tune saves")
        optimizer.load_state_dict(opt["optimizer"])
        scaler.load_state_dict(opt["scaler"])
        torch.set_rng_state(rng["torch_cpu"])
        if rng["torch_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["torch_cuda"])
        generator.set_state(rng["generator"])
        random.setstate(_to_tuple(state.pop("python_random")))
        kind, keys, *rest = state.pop("numpy_random")
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise ValueError(f"cannot resume from {folder}: {first_line(err, None)}; delete {partial} and start over "
                         "(run without --resume)") from None
    return trainable, state


def _read_state(path: Path) -> dict:
    """state.json with the fields a resume reads, each of its form (NaN allowed: a diverged run's losses)."""
    fields = Fields(read_json_file(path, allow_nan=True), path)
    fields.take("step", COUNT), fields.take("losses", LIST), fields.take("train_time_s", NUMBER)
    fields.take("eval_loss_before", Form("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)))
    fields.take("python_random", LIST), fields.take("numpy_random", LIST)
    return fields.raw


def _to_json(value):
    return [_to_json(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuple(value):
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value
