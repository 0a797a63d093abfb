"""Safe reading of UNet weights: safetensors, or a pickled .bin read with weights_only.

Official Tune-A-Video checkpoints are pickled ``.bin`` files; ``torch.load`` with
``weights_only=True`` reads their tensors without executing arbitrary code.
"""

import json
from pathlib import Path

import torch

from tav.runtime.one_line import first_line
from tav.tuner.model.aligned_safetensors import read_safetensors

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
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(read_state_dict(path.parent / shard))
        return state
    try:
        if path.suffix == ".safetensors":
            return read_safetensors(path)
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or truncated file, or an unsafe pickle
        raise ValueError(f"cannot read weights {path}: {first_line(err, with_type=True)}") from None


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
