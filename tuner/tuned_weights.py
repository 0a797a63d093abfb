"""Reading tuned weights: our RUN_DIR, or an official Tune-A-Video output folder.

RUN_DIR (written by ``tav-tune``):
    run.json                      ``pretrained_model_path``, ``frames``, ``height``, ``width``, ... (run_record.py)
    tuned.safetensors             only the tuned tensors, official key names
    inverted_latents.safetensors  key ``latents``: [1, 4, F, H/8, W/8]

Official output folder (showlab/Tune-A-Video ``train_tuneavideo.py``): a full
pipeline folder whose ``unet/`` is a 3D UNet with the temporal weights, a
``config.yaml`` with ``train_data`` (official_config.py), and optionally ``inv_latents/*.pt``.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from .model.sd_folder import check_sd_folder, file_sha256, folder_hash
from .model.torch_files import load_torch_file
from .model.unet_weights import read_state_dict
from .model.video_unet import VideoUNet
from .model_sources import resolve_base_model
from .official_config import read_official_config
from .run_record import RUN_JSON, RunRecord, read_run_record

log = logging.getLogger("tav.tuner")

TUNED_WEIGHTS = "tuned.safetensors"
INVERTED_LATENTS = "inverted_latents.safetensors"


@dataclass
class TunedModel:
    unet: VideoUNet
    base_dir: Path  # the SD folder holding vae/, text_encoder/, tokenizer/, scheduler/
    frames: int
    height: int
    width: int
    inverted_latents: torch.Tensor | None
    weights_hash: str  # sha256 pinning the tuned weights this model came from
    meta: dict = field(default_factory=dict)
    base_model_hash: str | None = None  # folder_hash(base_dir) when it was computed (checked against run.json)
    record: RunRecord | None = None  # a RUN_DIR's run.json, typed (None for an official output or a base)


def is_run_dir(path: Path) -> bool:
    return (path / RUN_JSON).exists() or (path / RUN_JSON).is_symlink()  # a FIFO is refused by name by its reader


def is_official_output(path: Path) -> bool:
    return (path / "model_index.json").is_file() and (path / "unet" / "config.json").is_file()


def load_tuned(weights, dtype=torch.float32, base_dir=None, allow_base_mismatch: bool = False) -> TunedModel:
    """The tuned video UNet and where the rest of its pipeline lives.

    ``base_dir`` (a folder from ``resolve_base_model``) replaces the base model the weights name:
    run.json's ``pretrained_model_path``, or an official output folder's own frozen parts. It must hold
    the weights the run was tuned on (e.g. the same model moved, or as a single file): the tuned layers
    are only meaningful beside the frozen weights they were trained with. So the base run.json names must
    still hash as run.json recorded at tuning time (an edited or replaced folder is refused);
    ``allow_base_mismatch`` turns that refusal into a loud warning, and a ``base_dir`` that hashes
    differently is used with the same warning.
    """
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; "
                                "pass a RUN_DIR from tav-tune or an official Tune-A-Video output folder")
    if is_run_dir(path):
        return _load_run_dir(path, dtype, base_dir, allow_base_mismatch)
    if is_official_output(path):
        tuned = _load_official(path, dtype)
        if base_dir is not None:
            tuned.base_dir = check_sd_folder(base_dir)
        return tuned
    raise FileNotFoundError(
        f"{path} is neither a RUN_DIR (no {RUN_JSON}) "
        "nor an official Tune-A-Video output folder (no model_index.json + unet/)"
    )


def _load_run_dir(path: Path, dtype, override, allow_base_mismatch: bool) -> TunedModel:
    record = read_run_record(path)
    weights_file = path / TUNED_WEIGHTS
    if not weights_file.is_file():
        raise FileNotFoundError(f"{weights_file} is missing; the run did not finish, re-run tav-tune")
    base_dir = _recorded_base(record, path) if override is None else check_sd_folder(override)
    # sha256 releases the GIL: hashing the base folder (4 GB at SD-1.5 size) overlaps reading its UNet,
    # which spends its time faulting in fresh pages (SD-1.5 on 2 cores: 7.4-14.8 s one after the other,
    # 5.1-5.3 s together). A mismatch is still refused, after the load instead of before it.
    with ThreadPoolExecutor(max_workers=1) as pool:
        checked = pool.submit(_check_base_hash, path, record, base_dir, allow_base_mismatch, override is not None)
        unet = VideoUNet.from_pretrained_2d(base_dir, seed=record.seed)
        base_hash = checked.result()
    unet.load_weights(read_state_dict(weights_file), where=str(weights_file), partial=True)
    unet.temporal_window = record.temporal_window
    latents_file = path / INVERTED_LATENTS
    inverted = _read_latents(latents_file) if latents_file.is_file() else None
    return TunedModel(_as_dtype(unet, dtype), base_dir, record.frames, record.height, record.width, inverted,
                      file_sha256(weights_file), record.raw, base_hash, record)


def _check_base_hash(path: Path, record: RunRecord, base_dir: Path, allow_mismatch: bool, given: bool) -> str | None:
    """folder_hash(base_dir) when run.json recorded one to compare with (runs before it did are not checked).

    The hash covers file bytes, not weights: a base given explicitly (``given``: the same model moved,
    or converted from a single file) may hash differently and still be right, so it only warns.
    """
    recorded = record.base_hash
    if recorded is None:
        return None
    current = folder_hash(base_dir)
    if current != recorded:
        what = (f"the base model {base_dir} is not the one {path} was tuned on (its files hash to {current[:12]}..., "
                f"run.json recorded {recorded[:12]}...)")
        if not (allow_mismatch or given):
            raise ValueError(f"{what}; use the SD model it was tuned on, "
                             "or pass --allow-base-mismatch to use this one anyway")
        why = "--allow-base-mismatch" if allow_mismatch else "it was given explicitly"
        log.warning("WARNING: %s; using it because %s: results equal the tuned run's only if it holds the same weights",
                    what, why)
    return current


def _recorded_base(record: RunRecord, run_dir: Path) -> Path:
    """run.json's base folder; when it is gone (another machine, a cleaned cache), fetched again from its source."""
    folder = Path(record.base_path)
    source = record.base_source or {}
    if folder.is_dir() or source.get("kind") not in ("hub", "single_file"):
        return check_sd_folder(folder)
    if source["kind"] == "hub":
        return resolve_base_model(source["repo_id"], revision=source["commit"]).path  # the exact commit tuned on
    base = resolve_base_model(source["file"])
    if base.source["file_sha256"] != source["file_sha256"]:
        raise ValueError(f"{source['file']} changed since {run_dir} was tuned on it (sha256 differs); "
                         "pass the original checkpoint with --pretrained")
    return base.path


def _load_official(path: Path, dtype) -> TunedModel:
    unet = VideoUNet.from_pretrained_2d(path)
    if not unet.has_tuned_temporal:
        raise ValueError(f"{path} is a plain Stable Diffusion folder, not tuned weights; tune it first with tav-tune")
    train = _official_train_data(path)
    inverted = _read_official_inversion(path)
    frames = train.get("frames") or (inverted.shape[2] if inverted is not None else None)
    if frames is None:
        raise ValueError(f"{path} has no config.yaml and no inv_latents/; cannot tell its frame count, pass --frames")
    height = train.get("height", 512)
    width = train.get("width", 512)
    return TunedModel(_as_dtype(unet, dtype), path, frames, height, width, inverted, folder_hash(path / "unet"),
                      {"official": True})


def _official_train_data(path: Path) -> dict:
    """The TuneConfig fields of an official output's config.yaml (typed by its reader), or {} without one."""
    config = path / "config.yaml"
    return read_official_config(config) if config.exists() or config.is_symlink() else {}


def _read_latents(path: Path) -> torch.Tensor:
    try:
        latents = load_file(str(path))["latents"]
    except Exception as err:
        raise ValueError(f"cannot read inverted latents {path}: {err}") from None
    if latents.ndim != 5:
        raise ValueError(f"{path}: inverted latents must be [1, 4, F, H/8, W/8], got {tuple(latents.shape)}")
    return latents


def _read_official_inversion(path: Path) -> torch.Tensor | None:
    """The newest ``inv_latents/ddim_latent-<step>.pt`` of an official run, read without unpickling code."""
    files = sorted((f for f in (path / "inv_latents").glob("ddim_latent-*.pt") if f.stem.split("-")[-1].isdigit()),
                   key=lambda f: int(f.stem.split("-")[-1]))
    if not files:
        return None
    latents = load_torch_file(files[-1])
    return latents if isinstance(latents, torch.Tensor) and latents.ndim == 5 else None


def _as_dtype(unet: VideoUNet, dtype) -> VideoUNet:
    # Skip the no-op cast: diffusers' ModelMixin.to() logs a misleading "keep in float32" notice.
    return unet if dtype == torch.float32 else unet.to(dtype)
