"""Windowed temporal attention: frame i attends only to a band of W frames around it.

Tuned on T frames, temporal attention has only ever seen T frames at once. Editing a longer clip
(N > T) with full attention asks it to average over many more frames than it was tuned for; a
window of W = T keeps each frame's view the size it was tuned on (as AnimateDiff's context
windows do), while sparse-causal attention is unchanged.

The band: frame i sees frames ``[s_i, s_i + W)`` with ``s_i = clip(i - W // 2, 0, N - W)``.
So every frame sees exactly W frames, centred on itself where the clip allows (W odd: (W-1)/2
either side; W even: one more before than after) and shifted inwards at the first and last
frames rather than cut short. W >= N is therefore the official full attention.

The band is a constant additive bias on the attention scores (0 inside, ``MASKED`` outside),
which the exporter keeps as a [1, 1, N, N] constant: ONNX Runtime's MultiHeadAttention takes it as
``attention_bias``, TensorRT's twin as an Add before the Softmax.
"""

import numpy as np
import torch

# Large enough that exp(score + MASKED - max) is exactly 0 in fp32 and fp16 for any score a UNet
# makes, and finite, so no kernel meets -inf - (-inf) = NaN in a tile that is all masked.
MASKED = -10000.0


def check_temporal_window(window, frames: int) -> int:
    """``window`` as an int in 1..frames, else a one-line ValueError."""
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= frames:
        raise ValueError(f"--temporal-window {window!r} must be an integer from 1 to the frame count {frames} "
                         f"({frames} is full attention over all frames)")
    return window


def default_temporal_window(tuned_frames: int, frames: int) -> int:
    """The window a run gets when none is asked for: the frame count it was tuned on, at most the clip's."""
    return min(int(tuned_frames), int(frames))


def window_starts(frames: int, window: int) -> list:
    """First frame of each frame's window: ``clip(i - window // 2, 0, frames - window)``."""
    window = min(window, frames)
    return [min(max(i - window // 2, 0), frames - window) for i in range(frames)]


def band_bias(frames: int, window, dtype=torch.float32, device=None) -> torch.Tensor | None:
    """Additive score bias [1, 1, frames, frames] (0 in frame i's window, MASKED elsewhere); None for full attention.

    None (no bias at all) when ``window`` is None or covers every frame, so full attention runs the
    exact computation it ran before windows existed, bit for bit.
    """
    if window is None or window >= frames:
        return None
    # Built in numpy: a tracer records it as one constant, not as the ops that made it.
    starts = np.array(window_starts(frames, window))[:, None]
    keys = np.arange(frames)[None, :]
    bias = np.where((keys >= starts) & (keys < starts + window), 0.0, MASKED).astype(np.float32)
    return torch.from_numpy(bias[None, None]).to(device=device, dtype=dtype)
