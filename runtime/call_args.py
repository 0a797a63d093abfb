"""One ``VideoPipeline`` call's arguments, checked before the first engine call.

A prompt that is not a str is a TypeError, a bad value a ValueError, each in one line naming it.
"""

from dataclasses import dataclass

import numpy as np

from .sampling_limits import ETA_MAX, ETA_MIN, MAX_PROMPT_CHARS


@dataclass(frozen=True)
class CallArgs:
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    seed: int
    init: object  # "inverted", "noise" or an array of starting latents (checked against the ENGINE_DIR later)
    eta: float

    @property
    def use_cfg(self) -> bool:
        return self.guidance != 1.0


def is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_call_args(args: CallArgs, max_steps: int) -> CallArgs:
    """``args`` with ``steps`` as a plain int, or the first problem found."""
    for name, text in (("prompt", args.prompt), ("negative_prompt", args.negative_prompt)):
        if not isinstance(text, str):  # a list would silently become a batch of prompts
            raise TypeError(f"{name} must be a str (one prompt per call), got {type(text).__name__}")
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"{name} has {len(text)} characters, over the limit of {MAX_PROMPT_CHARS} "
                             "(CLIP reads the first 77 tokens)")
    if not is_integer(args.steps) or args.steps < 1:
        raise ValueError(f"steps must be a positive integer, got {args.steps!r}")
    if not is_integer(args.seed) or args.seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {args.seed!r}")
    if not is_real(args.guidance) or not np.isfinite(args.guidance):
        raise ValueError(f"guidance must be a finite number, got {args.guidance!r}")
    # Above 1 the DDIM noise term exceeds what the step leaves room for (the square root of a negative).
    if not is_real(args.eta) or not ETA_MIN <= args.eta <= ETA_MAX:
        raise ValueError(f"eta must be between 0 (deterministic DDIM) and 1 (DDPM-like), got {args.eta!r}")
    if args.steps > max_steps:
        raise ValueError(f"steps must be between 1 and {max_steps} for this ENGINE_DIR's scheduler, got {args.steps}")
    return CallArgs(args.prompt, args.negative_prompt, int(args.steps), args.guidance, args.seed, args.init, args.eta)
