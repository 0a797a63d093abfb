"""Refusing NaN/Inf before they are written into an ENGINE_DIR or a pack.

A diverged tuning run (or an edited file) can hold non-finite tuned tensors or inverted
latents. Exported as they are, they surface only at tav-run's first step, as a NaN blamed on
"the exported graphs"; here the refusal names the tensor and the run it came from.
"""

import numpy as np
import torch

from .errors import ExportError

# Elements checked at a time: each part's boolean mask (64 KiB) is reused from malloc's heap. A whole
# tensor's mask is a fresh mapping to fault in (tav-export maps blocks over 1 MiB): the SD-1.5 UNet took
# 2.3-4.0 s whole, 0.9 s in parts of this size.
FINITE_PART = 1 << 16

RETUNE = "re-tune it with tav-tune (a diverged run: try a lower learning rate) and export again"


def refuse_non_finite_model(tuned, weights) -> None:
    """ExportError naming the first UNet tensor or the inverted latents of ``tuned`` that hold NaN/Inf."""
    for name, tensor in tuned.unet.state_dict().items():
        if tensor.is_floating_point() and not _all_finite(tensor):
            raise ExportError(f"{weights}: UNet tensor {name} contains NaN/Inf; {RETUNE}")
    latents = tuned.inverted_latents
    if latents is not None and not _all_finite(latents):
        raise ExportError(f"{weights}: the inverted latents contain NaN/Inf (a failed DDIM inversion); {RETUNE}")


def _all_finite(tensor: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(part).all()) for part in tensor.detach().reshape(-1).split(FINITE_PART))


def refuse_non_finite_array(array: np.ndarray, name: str, weights) -> None:
    """ExportError unless ``array`` (as it will be written, after any cast) is finite."""
    if not np.isfinite(array).all():
        cast = " after the cast to float16 (values past 65504)" if array.dtype == np.float16 else ""
        raise ExportError(f"{weights}: tensor {name} contains NaN/Inf{cast}; {RETUNE}")
