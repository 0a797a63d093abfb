"""FLOPs of one video-UNet step, counted by torch's flop counter on the meta device (no memory, no time)."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from tav.tuner import VideoUNet


def unet_step_flops(unet_config: dict, batch: int, frames: int, latent_hw: tuple, text_dim: int) -> int:
    """FLOPs of one forward at the CFG batch; 2 flop per multiply-add, as the counter reports.

    On the meta device tav.cpp_ext runs the KV gather as its PyTorch reference, silently (no kernel exists there);
    a gather has no FLOPs, so the count is the same as the kernel's.
    """
    with torch.device("meta"):
        model = VideoUNet.from_config_2d(unet_config)
        sample = torch.empty(batch, 4, frames, *latent_hw)
        text = torch.empty(batch, 77, text_dim)
        with FlopCounterMode(display=False) as counter:
            model(sample, torch.tensor([500.0]), text)
    return counter.get_total_flops()
