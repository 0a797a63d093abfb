"""Run a big UNet's feed-forwards a few frames at a time, so no export stage holds one whole GEGLU activation.

Every transformer block's feed-forward (GEGLU: Linear to 8x the width, gate, Linear back) acts on each token
alone. At the official 24 frames 512x512 with CFG, its first Linear writes a [48 x 4096 tokens, 2560] tensor
at the top level: 2 GB in fp32, and ONNX Runtime's CPU provider computes fp16 graphs in fp32. Measured on the
SD-1.5 fp16 export at that size (2026-12-02): the UNet reference's peak fell from 5.63 to 4.95 GiB; the trace
and parity peaks were then held up by glibc's heaps instead (runtime/host_memory.map_large_blocks).

Each such feed-forward is re-classed as ``PartedFeedForward``: it runs on a few rows of the block's
[batch x frames, tokens, C] input at a time and concatenates the results. Traced, that is static Slices, one
feed-forward per part (all reading the same weights, under the same names) and a Concat: plain ops that
TensorRT and ONNX Runtime both take (diffusers' own ``set_chunk_feed_forward`` uses ``torch.chunk``, which
traces to SplitToSequence, an op TensorRT lacks). Results are the same per token. Parts are whole frames of
one CFG half (a divisor of F), so the same setting serves the reference, which runs one half at a time.
Graphs whose feed-forwards fit the budget whole, such as 8 frames 256x256, are not split at all and export
as before.
"""

import math

import torch
from diffusers.models.attention import FeedForward

from tav.tuner.model.frame_layers import VideoTransformerBlock

# The largest first-Linear output of one part, counted in float32 (what the CPU provider computes fp16 in).
FEED_FORWARD_PART_BYTES = 256 * 2**20
FLOAT32_BYTES = 4


def frames_per_part(frames: int, batch: int, tokens: int, hidden_width: int, budget: int | None = None) -> int | None:
    """Frames of one feed-forward part for a block with ``tokens`` tokens a frame and a ``hidden_width``-wide
    first Linear; None when the whole [batch x frames] input fits the budget. At least 1 frame."""
    budget = FEED_FORWARD_PART_BYTES if budget is None else budget
    per_frame = tokens * hidden_width * FLOAT32_BYTES
    if batch * frames * per_frame <= budget:
        return None
    fitting = [d for d in range(1, frames + 1) if frames % d == 0 and d * per_frame <= budget]
    return max(fitting, default=1)


def chunk_feed_forwards(unet, frames: int, batch: int, latent_height: int, latent_width: int,
                        budget: int | None = None) -> None:
    """Give each of ``unet``'s transformer blocks the parts its level needs (none where it fits whole)."""
    levels = _block_levels(unet)
    for name, block in unet.named_modules():
        if not isinstance(block, VideoTransformerBlock):
            continue
        level = levels[name.split(".attentions.")[0]]
        tokens = math.ceil(latent_height / 2**level) * math.ceil(latent_width / 2**level)
        part = frames_per_part(frames, batch, tokens, block.ff.net[0].proj.out_features, budget)
        block.ff.__class__ = FeedForward if part is None else PartedFeedForward
        block.ff.rows = part


class PartedFeedForward(FeedForward):
    """diffusers' FeedForward on ``rows`` rows of its input's first axis at a time (a frame is a row)."""

    rows: int

    def forward(self, hidden_states, *args, **kwargs):
        parts = [super(PartedFeedForward, self).forward(hidden_states[start:start + self.rows], *args, **kwargs)
                 for start in range(0, hidden_states.shape[0], self.rows)]
        return torch.cat(parts)


def _block_levels(unet) -> dict:
    """Module path of each down, mid and up block -> its resolution level (0 = the latent's own size)."""
    downs, ups = len(unet.down_blocks), len(unet.up_blocks)
    levels = {f"down_blocks.{i}": i for i in range(downs)}
    levels.update({f"up_blocks.{i}": ups - 1 - i for i in range(ups)})
    levels["mid_block"] = downs - 1
    return levels
