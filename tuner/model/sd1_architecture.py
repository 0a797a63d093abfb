"""The Stable Diffusion 1.x architecture: its noise schedule, and its UNet, VAE and text encoder at several widths.

``SIZES["sd15"]`` is the real SD 1.5 (random weights do the same work as real ones); "tiny" and
"small" keep its blocks with fewer channels, for tests and CPU benchmarks. model_sources reads
these to convert single-file checkpoints without the network; the demo builds its tiny model here.
"""

from __future__ import annotations  # the model types below are imported on use: `tav-make-tiny --help` skips torch

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

# Stable Diffusion 1.x's noise schedule (its scheduler/scheduler_config.json).
SD1_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


@dataclass(frozen=True)
class ModelSize:
    """Channel widths of a randomly initialised SD-1.x-architecture pipeline."""

    unet_channels: tuple
    unet_layers: int
    unet_heads: int  # SD 1.x's config calls the head count `attention_head_dim`
    unet_groups: int
    vae_channels: tuple
    vae_layers: int
    vae_groups: int
    text_dim: int
    text_layers: int
    text_heads: int
    text_ffn: int


SIZES = {
    # Tests and the demo: the whole suite runs in minutes on 2 CPU cores.
    "tiny": ModelSize((32, 32, 64, 64), 1, 4, 8, (16, 32, 32, 32), 1, 8, 32, 2, 4, 64),
    # CPU benchmarks: same blocks as SD 1.x with reduced channels; 2 heads keep the head size
    # (32-128) in SD 1.5's range (40-160), which decides how attention maps onto GEMMs.
    "small": ModelSize((64, 128, 256, 256), 2, 2, 32, (32, 64, 64, 64), 1, 32, 256, 4, 4, 1024),
    # The real SD 1.5 architecture (random weights do the same work as real ones).
    "sd15": ModelSize((320, 640, 1280, 1280), 2, 8, 32, (128, 256, 512, 512), 2, 32, 768, 12, 12, 3072),
}


def random_unet(size: ModelSize) -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=size.unet_channels,
        layers_per_block=size.unet_layers,
        norm_num_groups=size.unet_groups,
        cross_attention_dim=size.text_dim,
        attention_head_dim=size.unet_heads,
    )


def random_vae(size: ModelSize) -> AutoencoderKL:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=size.vae_channels,  # four blocks: 8x down-sampling, as SD's VAE
        layers_per_block=size.vae_layers,
        norm_num_groups=size.vae_groups,
        latent_channels=4,
        sample_size=512,
    )


def random_text_encoder(size: ModelSize) -> CLIPTextModel:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=size.text_dim,
            intermediate_size=size.text_ffn,
            num_hidden_layers=size.text_layers,
            num_attention_heads=size.text_heads,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
