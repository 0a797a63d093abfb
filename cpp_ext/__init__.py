"""Cross-frame KV gather for sparse-causal attention.

``kv_gather(k, v, num_frames)`` is what the video UNet calls. The compiled
kernels (issue 6) plug in here; until one is available the pure-PyTorch
reference is used.
"""

from .reference import kv_gather_reference


def kv_gather(k, v, num_frames: int):
    """[B*F, N, C] -> [B*F, 2N, C] for K and V: frame 0's tokens, then frame max(i-1, 0)'s."""
    return kv_gather_reference(k, v, num_frames)


__all__ = ["kv_gather", "kv_gather_reference"]
