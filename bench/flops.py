"""FLOPs of one video-UNet step, counted by torch's flop counter on the meta device (no memory, no time)."""

from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from tav.cpp_ext import kv_gather_reference
from tav.tuner import VideoUNet
from tav.tuner.model import frame_layers


def unet_step_flops(unet_config: dict, batch: int, frames: int, latent_hw: tuple, text_dim: int) -> int:
    """FLOPs of one forward at the CFG batch; 2 flop per multiply-add, as the counter reports.

    The KV gather runs as its PyTorch reference here: no kernel exists for the meta device, and calling the op there
    would print tav.cpp_ext's fallback note in tav-bench's output. A gather has no FLOPs, so the count is the same.
    """
    with torch.device("meta"), mock.patch.object(frame_layers, "kv_gather", kv_gather_reference):
        model = VideoUNet.from_config_2d(unet_config)
        sample = torch.empty(batch, 4, frames, *latent_hw)
        text = torch.empty(batch, 77, text_dim)
        with FlopCounterMode(display=False) as counter:
            model(sample, torch.tensor([500.0]), text)
    return counter.get_total_flops()
