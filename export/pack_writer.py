"""``write_pack``: tuned weights (RUN_DIR or official Tune-A-Video output) -> ``NAME.tavpack`` for a base ENGINE_DIR.

The pack holds exactly the tensors the base UNet takes as inputs (its manifest's "base"
section names them, their state-dict parameter and layout), converted to the base's
precision and layout, plus the video's inverted latents and metadata (runtime/packs.py has
the format). Written to a hidden temp file, read back and verified, then renamed into place.
Each stage (load, hash, convert, write) logs one timed line as it ends (export/stages.py; --quiet silences them).
"""

import io
import json
import math
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np
import torch

from tav.runtime.atomic_files import atomic_file
from tav.runtime.host_memory import release_freed_memory
from tav.runtime.manifest import EngineDirError, read_manifest
from tav.runtime.packs import (
    LATENTS_KEY,
    METADATA_KEY,
    PACK_SCHEMA_VERSION,
    PACK_SUFFIX,
    SHA_KEY,
    PackError,
    pack_digest,
    read_header,
    read_pack,
)

from .base_engine import unet_frozen_sha256
from .errors import ExportError
from .finite_check import refuse_non_finite_array, refuse_non_finite_model
from .stages import log, stage

# What a pack keeps of run.json: enough to tell videos apart and judge the tuning, not the per-step losses.
RUN_SUMMARY_KEYS = ("prompt", "video", "frames", "tuned_frames", "temporal_window", "stride", "start",
                    "height", "width", "steps", "learning_rate", "seed",
                    "pretrained_model_path", "pretrained_model_hash", "num_trainable_params", "resolved_precision",
                    "eval_loss_before", "eval_loss_after", "train_time_s")
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def write_pack(weights, base_dir, out_path, overwrite: bool = False) -> Path:
    """Write the pack of ``weights`` for base ENGINE_DIR ``base_dir`` to ``out_path`` (``NAME.tavpack``)."""
    from tav.tuner.tuned_weights import load_tuned

    out = Path(out_path).absolute()
    if out.suffix != PACK_SUFFIX:
        raise ExportError(f"--out {out} must end in {PACK_SUFFIX} (a pack is one file)")
    if out.exists() and not overwrite:
        raise ExportError(f"--out {out} exists; choose a new name or pass --overwrite")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; a pack is one file")
    timings = {}
    log.info("pack of %s for base %s", weights, base_dir)  # before the load: a large run takes seconds
    with stage(timings, "load"):
        manifest = _read_base(base_dir)
        tuned = load_tuned(weights)
        refuse_non_finite_model(tuned, weights)
    base = manifest.base
    latents = tuned.inverted_latents
    if latents is not None and tuple(latents.shape) != manifest.latent_shape:
        raise ExportError(f"the inverted latents of {weights} are {list(latents.shape)}, base {base_dir} is "
                          f"{manifest.frames} frames {manifest.width}x{manifest.height} "
                          f"({list(manifest.latent_shape)}); export a base at the run's frames and size")
    window = tuned.unet.temporal_window or manifest.frames  # the run's (run.json); an official output: all frames
    if min(window, manifest.frames) != manifest.temporal_window:
        raise ExportError(f"{weights} samples with a temporal window of {window} frames, "
                          f"base {base_dir} was exported with {manifest.temporal_window}; "
                          f"export a base with --temporal-window {window}")
    state = tuned.unet.state_dict()
    with stage(timings, "hash", "frozen UNet"):  # the base must hold the UNet this run was tuned from
        frozen = unet_frozen_sha256(tuned.unet, [t["param"] for t in base["tunable"]])
    if frozen != base["unet_frozen_sha256"]:
        raise ExportError(f"{weights} was tuned from UNet {frozen[:12]}, base {base_dir} holds UNet "
                          f"{base['unet_frozen_sha256'][:12]}; "
                          "export a base from the run's SD model (tav-export --base)")
    with stage(timings, "convert"):
        tensors = _pack_tensors(state, base["tunable"], latents, weights)
    meta = {
        "schema_version": PACK_SCHEMA_VERSION,
        "base": {"id": base["id"], "unet_frozen_sha256": frozen, "frames": manifest.frames, "height": manifest.height,
                 "width": manifest.width, "precision": manifest.precision, "temporal_window": manifest.temporal_window},
        "prompt": _prompt(tuned),
        "source": {"weights": str(Path(weights).absolute()), "weights_hash": tuned.weights_hash,
                   "kind": "official" if tuned.meta.get("official") else "run_dir"},
        "run": _run_summary(tuned.meta),
        "has_inverted_latents": latents is not None,
        "tensors": len(base["tunable"]),
        "tensor_bytes": int(sum(a.nbytes for k, a in tensors.items() if k != LATENTS_KEY)),
        "tools": {"tav-runtime": _version("tav-runtime"), "safetensors": _version("safetensors")},
    }
    # The pack holds a tenth of the UNet: drop the model before the serialised copies are made (SD-1.5: the
    # write's peak was the 3.4 GB UNet plus three copies of the pack, 5.15 GiB; now the load's, 4.04 GiB).
    del tuned, state
    release_freed_memory()
    with stage(timings, "write"):
        _write_atomic(out, tensors, meta)
    log.info("done: %s (%.1fs)", out, sum(timings.values()))
    return out


def _pack_tensors(state: dict, tunables: list, latents, weights) -> dict:
    """The base's tunable inputs from the tuned state dict, in the base's dtype and layout, plus the latents."""
    tensors = {}
    for tunable in tunables:
        value = state[tunable["param"]].detach().cpu()
        value = value.t() if tunable["layout"] == "transposed" else value
        tensors[tunable["name"]] = np.ascontiguousarray(value.to(TORCH_DTYPES[tunable["dtype"]]).numpy())
        refuse_non_finite_array(tensors[tunable["name"]], tunable["param"], weights)
    if latents is not None:
        tensors[LATENTS_KEY] = np.ascontiguousarray(latents.float().numpy())
    return tensors


def _read_base(base_dir):
    try:
        manifest = read_manifest(base_dir)
    except EngineDirError as err:
        raise ExportError(f"--pack-for: {err}") from None
    if manifest.base is None:
        raise ExportError(f"--pack-for {base_dir} has the tuned weights baked in (a full ENGINE_DIR), not a base; "
                          "export one with "
                          "`tav-export --base SD_FOLDER --frames F --height H --width W --out BASE_DIR`")
    return manifest


def _prompt(tuned) -> str | None:
    if "prompt" in tuned.meta:
        return tuned.meta["prompt"]
    config = Path(tuned.base_dir) / "config.yaml"  # an official output keeps its training config there
    if tuned.meta.get("official") and config.is_file():
        from tav.tuner.official_config import read_official_config

        return read_official_config(config).get("prompt")
    return None


def _run_summary(meta: dict) -> dict:
    """run.json's RUN_SUMMARY_KEYS as strict JSON scalars: a diverged run's NaN loss is null, anything nested is left
    out (pack metadata is read with the service's JSON rules: no NaN, bounded depth)."""
    summary = {}
    for key in RUN_SUMMARY_KEYS:
        value = meta.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            summary[key] = None
        elif key in meta and (value is None or isinstance(value, (str, int, float))):
            summary[key] = value
    return summary


def _serialise(tensors: dict, meta: dict, sha: str | None) -> bytes:
    from safetensors.numpy import save

    fields = {METADATA_KEY: json.dumps(meta, sort_keys=True, allow_nan=False)}
    if sha is not None:
        fields[SHA_KEY] = sha
    return save(tensors, metadata=fields)


def _write_atomic(out: Path, tensors: dict, meta: dict) -> None:
    """Serialise, pin with the sha256, write to a temp file, verify by reading it back, rename into place."""
    draft = _serialise(tensors, meta, None)
    header, start = read_header(io.BytesIO(draft), out, len(draft))
    digest = pack_digest(header, memoryview(draft)[start:])
    del draft  # one serialised copy at a time
    blob = _serialise(tensors, meta, digest)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out) as tmp:
            with open(tmp, "xb") as fh:
                fh.write(blob)
            read_pack(tmp)  # the bytes on disk verify: a pack that leaves here always loads
    except PackError as err:
        raise ExportError(f"the written pack did not verify ({err}); "
                          "this is an exporter bug, please report it") from None
    except OSError as err:
        raise ExportError(f"cannot write next to --out {out}: {err.strerror or err}") from None


def _version(package: str) -> str | None:
    try:
        return package_metadata.version(package)
    except package_metadata.PackageNotFoundError:
        return None
