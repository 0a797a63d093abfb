"""A call's starting latents, and the error for NaN/Inf anywhere in a call (never a black video)."""

import numpy as np

INITS = ("inverted", "noise")


class NonFiniteError(FloatingPointError):
    """NaN or Inf in the latents or images: raised instead of writing a black video."""


def overflow_hint(precision: str) -> str:
    """What to do about NaN/Inf from an ENGINE_DIR of this precision."""
    if precision == "fp16":
        return ("this ENGINE_DIR is fp16 and its activations likely overflowed; "
                "re-export with `tav-export --precision fp32`")
    return ("the exported graphs or the starting latents are broken "
            "(fp16 overflow is ruled out: this ENGINE_DIR is fp32)")


def initial_latents(init, shape: tuple, rng: np.random.Generator, video) -> np.ndarray:
    """float32 latents of ``shape`` for ``init``: "inverted" (the video's), "noise" (from ``rng``) or an array."""
    if isinstance(init, np.ndarray):
        latents = init.astype(np.float32)
        if latents.shape != shape:
            raise ValueError(f"starting latents must have shape {shape}, got {latents.shape}")
    elif init == "inverted":
        if video.inverted_latents is None:
            raise ValueError(video.no_latents_hint)
        latents = video.inverted_latents.copy()
    elif init == "noise":
        latents = rng.standard_normal(shape, dtype=np.float32)
    else:
        raise ValueError(f"init must be one of {', '.join(INITS)} or an array of starting latents, got {init!r}")
    if not np.isfinite(latents).all():
        raise NonFiniteError("the starting latents contain NaN/Inf; re-run the DDIM inversion (tav-tune) and re-export")
    return latents
