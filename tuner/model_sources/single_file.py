"""Single-file SD 1.x checkpoints (.safetensors / .ckpt): convert once into a cached diffusers folder.

The cache is keyed by the file's sha256 (``<cache>/<sha256>/``), so renaming or
copying the file reuses the conversion and a changed file never does. A
conversion is written to a temp folder beside its final place and renamed into
it; when two processes convert the same file at once, the first rename wins and
the other process discards its copy and uses the winner's, so a folder under its
final name is always complete.

Reading is offline and safe: only the header or a memory-mapped, tensors-only
(``weights_only=True``) unpickling to identify the model, then diffusers'
``from_single_file`` with a locally written config (``sd1_config``).
"""

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from tav.runtime.atomic_files import atomic_folder
from tav.runtime.command import first_line
from tav.runtime.manifest import file_sha256

from ..model.torch_files import UnsafeTorchFile, load_torch_file, unwrap_state_dict
from .model_kind import check_sd1_checkpoint
from .sd1_config import architecture_of, write_pipeline_config
from .spec import SUFFIXES

RECORD = "tav_single_file.json"  # inside a converted folder: what it was converted from


def cache_root() -> Path:
    """$TAV_SINGLE_FILE_CACHE, else ~/.cache/tav-runtime/single_file ($XDG_CACHE_HOME respected)."""
    if os.environ.get("TAV_SINGLE_FILE_CACHE"):
        return Path(os.environ["TAV_SINGLE_FILE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tav-runtime" / "single_file"


def convert_single_file(path) -> tuple[Path, str, str]:
    """The cached diffusers folder of checkpoint ``path``, its sha256 and its architecture (converting on first use)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise ValueError(f"{path} is a file but not a .safetensors or .ckpt checkpoint; pass a Stable Diffusion 1.x "
                         "checkpoint file or a diffusers folder")
    digest = file_sha256(path)  # refuses devices and FIFOs (a link to /dev/zero would hash forever)
    target = cache_root() / digest
    if (target / RECORD).is_file():
        return target, digest, json.loads((target / RECORD).read_text())["architecture"]
    shapes = read_shapes(path)
    check_sd1_checkpoint(shapes, path)
    architecture = architecture_of(shapes, path)
    try:
        with atomic_folder(target, prefix=f".{digest[:16]}.") as staging:
            try:
                _convert_into(staging, path, architecture)
            except Exception as err:  # a tensor that does not fit SD 1.x's architecture, or an unreadable file
                raise ValueError(f"cannot convert {path} as Stable Diffusion 1.x ({type(err).__name__}: "
                                 f"{first_line(err)})") from None
            record = {"file_sha256": digest, "architecture": architecture, "converter": _converter_versions()}
            (staging / RECORD).write_text(json.dumps(record, indent=1))  # last: marks the folder complete
    except OSError:
        if not (target / RECORD).is_file():
            raise
        # The rename failed because a concurrent conversion of the same file put its folder there first: use it.
    return target, digest, architecture


def read_shapes(path: Path) -> dict:
    """key -> shape of every tensor, without reading the weights where the format allows."""
    try:
        if path.suffix.lower() == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        state = load_torch_file(path)  # bounded: no inflating records, no legacy stream, sizes inside the file
    except UnsafeTorchFile:
        raise
    except Exception as err:  # a truncated or corrupt .safetensors header
        raise ValueError(f"cannot read checkpoint {path} ({type(err).__name__}: {first_line(err)}); "
                         "copy it again or pass another Stable Diffusion 1.x checkpoint") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict; "
                         "pass a Stable Diffusion 1.x checkpoint")
    state = unwrap_state_dict(state, path)  # Lightning checkpoints nest the weights
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _convert_into(staging: Path, path: Path, architecture: str):
    from diffusers import StableDiffusionPipeline

    with tempfile.TemporaryDirectory() as config_dir:
        write_pipeline_config(Path(config_dir), architecture)
        # diffusers reads .ckpt files with weights_only=True as well. fp32 as the SD 1.x diffusers repos ship:
        # the tuner and the exporter load base models in fp32 and cast where they compute in lower precision.
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=config_dir, local_files_only=True, torch_dtype=torch.float32,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(staging, safe_serialization=True)


def _converter_versions() -> dict:
    import diffusers
    import transformers

    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__}
