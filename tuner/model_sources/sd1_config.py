"""Config-only diffusers folders for the SD-1.x architectures, so single files convert without the network.

diffusers' ``from_single_file`` takes each component's config from a diffusers
folder (``config=``); without one it downloads SD 1.5's from the hub. We write
that folder ourselves: SD 1.x's architecture is ``model.sd1_architecture.SIZES["sd15"]``,
and the project's own tiny/small sizes are accepted too (tests, demo, benchmarks).
A checkpoint names its architecture through three widths that differ between the
sizes; every other shape is then checked by diffusers as it loads the weights.
"""

import json
import tempfile
from pathlib import Path

import torch
from diffusers import DDIMScheduler
from transformers import CLIPTokenizer

from ..model.clip_tokenizer_files import write_clip_tokenizer_files
from ..model.sd1_architecture import SD1_SCHEDULE, SIZES, random_text_encoder, random_unet, random_vae
from .model_kind import SD1_HINT, TEXT_TOKEN_EMBEDDING, UNET_INPUT_CONV, VAE_INPUT_CONV

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "safety_checker": [None, None],
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "requires_safety_checker": False,
}


def architecture_of(shapes: dict, name) -> str:
    """The SIZES entry whose UNet, text and VAE widths the checkpoint has; "sd15" for real SD 1.x."""
    text_key = next(k for k in TEXT_TOKEN_EMBEDDING if k in shapes)
    widths = (shapes[UNET_INPUT_CONV][0], shapes[text_key][1], shapes[VAE_INPUT_CONV][0])
    for size_name, size in SIZES.items():
        if widths == (size.unet_channels[0], size.text_dim, size.vae_channels[0]):
            return size_name
    raise ValueError(f"{name} is not recognisable as Stable Diffusion 1.x: UNet width {widths[0]}, text width "
                     f"{widths[1]}, VAE width {widths[2]} (SD 1.x: 320, 768, 128); {SD1_HINT}")


def write_pipeline_config(out_dir: Path, size_name: str) -> Path:
    """model_index.json and every component's config (no weights) for ``SIZES[size_name]``; the real CLIP tokenizer."""
    size = SIZES[size_name]
    with torch.device("meta"):  # the configs only: no memory, no random init
        unet, vae, text_encoder = random_unet(size), random_vae(size), random_text_encoder(size)
    unet.save_config(out_dir / "unet")
    vae.save_config(out_dir / "vae")
    text_encoder.config.save_pretrained(out_dir / "text_encoder")
    DDIMScheduler(**SD1_SCHEDULE).save_config(out_dir / "scheduler")
    with tempfile.TemporaryDirectory() as vocab_dir:
        write_clip_tokenizer_files(Path(vocab_dir))
        CLIPTokenizer.from_pretrained(vocab_dir).save_pretrained(out_dir / "tokenizer")
    (out_dir / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=1))
    return out_dir
