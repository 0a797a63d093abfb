"""``invert_run``: a tuned run + a clip of any length -> a new RUN_DIR with that clip's inverted latents.

The tuned weights are the run's, unchanged (tuned.safetensors is copied byte for byte, so the new
run's weights hash equals the old one's). Only the starting latents are new: the clip's frames are
encoded by the VAE and DDIM-inverted with the tuned UNet over all N frames at once, as tav-tune
inverts its own clip. The temporal window the inversion runs with (default: the frame count the
weights were tuned on) is recorded in run.json, so tav-sample and tav-export use the same one.

Written as tav-tune writes a run: into a hidden sibling folder, renamed into place when complete.
"""

import json
import shutil
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from tav.runtime.atomic_files import publish_folder, staging_folder
from tav.runtime.stops import stops_held

from ..model import sd_folder
from ..model.temporal_window import check_temporal_window, default_temporal_window
from ..model.text_encoding import encode_prompts
from ..progress import Progress, counted
from ..run_record import RUN_JSON, check_run_record
from ..tuned_weights import INVERTED_LATENTS, TUNED_WEIGHTS, is_run_dir, load_tuned
from .config import TuneConfig
from .ddim_inversion import ddim_inversion
from .session import encode_clip, resolve_device
from .video_input import load_clip


def invert_run(weights, video, frames: int, out, stride=None, start=None, temporal_window=None, inversion_steps=None,
               height=None, width=None, device: str = "auto", *, shown: Progress | None = None) -> Path:
    """Write RUN_DIR ``out``: ``weights``' tuned tensors and the N-frame inverted latents of ``video``; returns ``out``.

    ``stride``/``start``/``inversion_steps`` default to the run's (else tav-tune's defaults); ``height``/``width``,
    when given, must be the run's (the weights are inverted and exported at the size they were tuned at).
    ``shown``: stage lines and the inversion's bar on stderr (tav-invert's; default: nothing shown).
    """
    shown = shown or Progress("tav-invert", enabled=False)
    out = _check_out(out)
    _setting("--frames", frames, None, None, 1)
    device = resolve_device(device)
    tuned = load_tuned(weights)  # unannounced: its run.json decides what is bad input, refused below in one line
    meta = _source_meta(Path(weights), tuned)
    for name, asked, run in (("height", height, tuned.height), ("width", width, tuned.width)):
        if asked is not None and asked != run:
            raise ValueError(f"--{name} {asked}: {weights} was tuned at {tuned.height}x{tuned.width}, "
                             "and its clips are inverted at that size; "
                             "drop --height/--width, or tune a run at the size you want")
    record, defaults = tuned.record, TuneConfig(pretrained_model_path="", video="", prompt="", out="")
    tuned_frames = record.tuned_frames if record else tuned.frames
    # A run from before tav-invert recorded its window sampled with all the frames it was tuned on.
    recorded = record.temporal_window if record and "temporal_window" in record.raw else tuned_frames
    window = default_temporal_window(recorded, frames)
    window = window if temporal_window is None else check_temporal_window(temporal_window, frames)
    stride = _setting("--stride", stride, record and record.stride, defaults.stride, 1)
    start = _setting("--start", start, record and record.start, defaults.start, 0)
    steps = _setting("--inversion-steps", inversion_steps, record and record.inversion_steps,
                     defaults.inversion_steps, 1)
    run = dict(meta, frames=frames, stride=stride, start=start, video=str(Path(video).absolute()), out=str(out),
               tuned_frames=tuned_frames, temporal_window=window)
    check_run_record(run, out / RUN_JSON)  # what it will write, refused now if tav-sample or tav-export would refuse it
    # too few frames: one line, before any work
    pixels = load_clip(video, frames, tuned.height, tuned.width, stride, start)

    tick = time.perf_counter()
    latents = _invert(tuned, pixels, window, steps, record.seed if record else 0, device, shown)
    run.update(latents_shape=list(latents.shape),
               inversion={"steps": steps, "prompt": "", "guidance": None, "scheduler": "DDIM"},
               inversion_time_s=time.perf_counter() - tick, resolved_device=str(device),
               inverted_from={"weights": str(Path(weights).absolute()), "weights_hash": tuned.weights_hash})
    with shown.stage("saving", f"saving to {out.name}/"):
        return _write_run(out, Path(weights), tuned, latents, run)


def _setting(flag: str, given, recorded, default, least: int) -> int:
    """``given`` if set (an integer >= ``least``, else a one-line ValueError naming ``flag``), else the run's, else
    tav-tune's default."""
    if given is None:
        return default if recorded is None else recorded
    if isinstance(given, bool) or not isinstance(given, int) or given < least:
        form = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ValueError(f"{flag} {given!r} must be {form}")
    return given


def _check_out(out) -> Path:
    if str(out).strip() in ("", "-"):
        raise ValueError(f"--out {str(out)!r} is not a folder name; give the new RUN_DIR's path")
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose a new --out")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: folder {out.parent} does not exist; create it first")
    return out


def _source_meta(weights: Path, tuned) -> dict:
    """run.json of a RUN_DIR; for an official output, the fields a RUN_DIR needs (its own folder is the base)."""
    if is_run_dir(weights):
        return dict(tuned.meta)
    return {"pretrained_model_path": str(tuned.base_dir.absolute()),
            "pretrained_model_hash": sd_folder.folder_hash(tuned.base_dir),
            "frames": tuned.frames, "height": tuned.height, "width": tuned.width, "seed": 0, "official_source": True}


@torch.no_grad()
def _invert(tuned, pixels, window: int, steps: int, seed: int, device, shown: Progress) -> torch.Tensor:
    """Latents [1, 4, N, h, w]: VAE-encode the clip (seeded as tav-tune does), DDIM-invert it with the tuned UNet."""
    with shown.stage("encoding", f"encoding the clip ({counted(len(pixels), 'frame')}) and the empty prompt"):
        tokenizer = sd_folder.load_tokenizer(tuned.base_dir)
        text_encoder = sd_folder.load_text_encoder(tuned.base_dir).to(device)
        empty = encode_prompts(tokenizer, text_encoder, [""]).to(device)
        del text_encoder
        vae = sd_folder.load_vae(tuned.base_dir).to(device)
        latents = encode_clip(vae, pixels, seed)
        del vae
    unet = tuned.unet.to(device).eval()
    unet.temporal_window = window
    with shown.stage("inverting", f"inverting the clip ({counted(steps, 'DDIM step')})"), \
            shown.bar(steps, "inversion") as bar:
        inverted = ddim_inversion(unet, latents, empty, sd_folder.load_ddim(tuned.base_dir), steps,
                                  callback=lambda *_: bar.update(1))
    return inverted.cpu()


def _write_run(out: Path, weights: Path, tuned, latents: torch.Tensor, run: dict) -> Path:
    staging = staging_folder(out, prefix=f".{out.name}.partial-")
    try:
        if is_run_dir(weights):
            shutil.copyfile(weights / TUNED_WEIGHTS, staging / TUNED_WEIGHTS)
        else:  # an official output: its tuned tensors, under the official names
            state = tuned.unet.state_dict()
            save_file({k: state[k].detach().float().cpu().contiguous()
                       for k in tuned.unet.trainable_parameter_names()}, str(staging / TUNED_WEIGHTS))
        save_file({"latents": latents.float().contiguous()}, str(staging / INVERTED_LATENTS))
        (staging / RUN_JSON).write_text(json.dumps(run, indent=1))
        # out is absent or empty (checked at the start); the rename fails if something appeared in it since.
        with stops_held(lambda signum: warnings.warn(f"stop received while {out} was put in place; "
                                                     "the run is complete", stacklevel=1)):
            publish_folder(staging, out)
    except BaseException:  # Ctrl-C, SIGTERM, a full disk: no half-written run is left
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
