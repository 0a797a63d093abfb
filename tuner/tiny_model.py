"""``tav-make-tiny``: a seeded, random, SD-1.x-architecture pipeline folder for tests and the demo.

Same layout and block types as Stable Diffusion 1.x (diffusers ``save_pretrained``),
with small channels so the whole test suite runs in minutes on two CPU cores.
The tokenizer is CLIP's real BPE tokenizer, so prompts tokenize as with real SD.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .clip_vocab import write_clip_tokenizer_files

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
TEXT_DIM = 32


def tiny_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,  # SD 1.x's config calls the head count this
    )


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),  # four blocks: 8x down-sampling, as SD's VAE
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=64,
    )


def tiny_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=TEXT_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )


def make_tiny(out_dir, seed: int = 0) -> Path:
    """Write the tiny pipeline folder atomically (temp folder, then rename)."""
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
            vae=tiny_vae(),
            text_encoder=tiny_text_encoder(),
            tokenizer=tokenizer,
            unet=tiny_unet(),
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
    args = parser.parse_args(argv)
    try:
        print(make_tiny(args.out_dir, args.seed))
    except (OSError, ValueError) as err:
        sys.exit(f"tav-make-tiny: error: {err}")


if __name__ == "__main__":
    main()
