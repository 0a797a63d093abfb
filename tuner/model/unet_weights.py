"""Safe reading of UNet weights: safetensors, or a pickled .bin read with weights_only.

Official Tune-A-Video checkpoints are pickled ``.bin`` files; ``torch.load`` with
``weights_only=True`` reads their tensors without executing arbitrary code.
"""

import json
from pathlib import Path, PurePosixPath

import torch

from tav.runtime.command import first_line

from .aligned_safetensors import read_safetensors
from .torch_files import UnsafeTorchFile, load_torch_file

WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin.index.json",
)


def find_unet_weights(unet_dir: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (unet_dir / name).is_file():
            return unet_dir / name
    raise FileNotFoundError(
        f"no UNet weights in {unet_dir} (expected one of {', '.join(WEIGHT_NAMES[:2])}); "
        "point at a diffusers-layout Stable Diffusion 1.x folder"
    )


def read_state_dict(path: Path) -> dict:
    """Tensors of a .safetensors / .bin file, or of every shard named by an index .json."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        state = {}
        for shard in _shards(path):
            state.update(read_state_dict(shard))
        return state
    try:
        state = read_safetensors(path) if path.suffix == ".safetensors" else load_torch_file(path)
    except UnsafeTorchFile:
        raise  # "FILE is not a safe torch file (why): what to do" already
    except Exception as err:  # corrupt or truncated file, or an unsafe pickle
        raise ValueError(f"cannot read weights {path}: {first_line(err, with_type=True)}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError(f"cannot read weights {path}: it holds a {type(state).__name__} "
                         "that is not a flat name -> tensor dict")
    return state


def _shards(index: Path) -> list:
    """The shard files an index .json names, each a plain file name inside the index's folder."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{index} is not a weights index (no weight_map: {type(err).__name__}); "
                         "copy the folder again") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index}: weight_map must map tensor names to shard file names; copy the folder again")
    folder = index.parent.resolve()
    shards = []
    for name in sorted(set(weight_map.values())):
        pure = PurePosixPath(name)
        # Only names inside the folder: an index from elsewhere must not make us read "../../x.safetensors".
        outside = pure.is_absolute() or ".." in pure.parts or "\\" in name
        if not name or outside or not (folder / pure).resolve().is_relative_to(folder):
            raise ValueError(f"{index}: weight_map names shard {name!r}, which is not a file inside {index.parent}; "
                             "shards must sit next to their index")
        shards.append(index.parent / pure)
    return shards


def describe_key_mismatch(missing, unexpected, where: str) -> str:
    def head(keys):
        keys = sorted(keys)
        more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
        return ", ".join(keys[:5]) + more

    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys: {head(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys: {head(unexpected)}")
    return f"weights in {where} do not fit the video UNet: " + "; ".join(parts)
