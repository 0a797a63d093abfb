"""``tav-make-tiny``: a seeded, random, SD-1.x-architecture pipeline folder for tests, the demo and benchmarks.

Same layout and block types as Stable Diffusion 1.x (diffusers ``save_pretrained``),
with small channels so the whole test suite runs in minutes on two CPU cores.
The tokenizer is CLIP's real BPE tokenizer, so prompts tokenize as with real SD.
"""

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tav.tuner.model.clip_tokenizer_files import write_clip_tokenizer_files

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


def make_tiny(out_dir, seed: int = 0, size: str = "tiny") -> Path:
    """Write a random pipeline folder of the given size atomically (temp folder, then rename)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with tempfile.TemporaryDirectory() as vocab_dir:
            write_clip_tokenizer_files(Path(vocab_dir))
            tokenizer = CLIPTokenizer.from_pretrained(vocab_dir)
        torch.manual_seed(seed)
        pipe = StableDiffusionPipeline(
            vae=random_vae(SIZES[size]),
            text_encoder=random_text_encoder(SIZES[size]),
            tokenizer=tokenizer,
            unet=random_unet(SIZES[size]),
            scheduler=DDIMScheduler(**SD1_SCHEDULE),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(staging, safe_serialization=True)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tav-make-tiny", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to create (must not exist or be empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="tiny (tests), small (CPU bench), sd15")
    args = parser.parse_args(argv)
    try:
        print(make_tiny(args.out_dir, args.seed, args.size))
    except (OSError, ValueError) as err:
        sys.exit(f"tav-make-tiny: error: {err}")


if __name__ == "__main__":
    main()
