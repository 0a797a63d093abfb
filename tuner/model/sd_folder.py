"""Loading the frozen parts of a Stable Diffusion 1.x folder (diffusers layout).

Reads real SD 1.4/1.5 folders (safetensors or .bin) and the tiny ones from
``tav-make-tiny`` alike. Sampling always uses DDIM built from the folder's
scheduler config: SD folders ship a PNDM config, which has the same schedule.
"""

import hashlib
from pathlib import Path

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler
from transformers import CLIPTextModel, CLIPTokenizer

from tav.runtime.manifest import file_sha256  # one implementation for both sides of the ENGINE_DIR

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def check_sd_folder(path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; pass a Stable Diffusion 1.x folder in diffusers layout")
    absent = [c for c in COMPONENTS if not (path / c).is_dir()]
    if absent:
        raise FileNotFoundError(
            f"{path} lacks {', '.join(absent)}/; pass a Stable Diffusion 1.x folder in diffusers layout "
            "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )
    return path


def load_vae(sd_dir, dtype=None) -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(Path(sd_dir) / "vae", torch_dtype=dtype).eval().requires_grad_(False)


def load_text_encoder(sd_dir, dtype=None) -> CLIPTextModel:
    return CLIPTextModel.from_pretrained(Path(sd_dir) / "text_encoder", torch_dtype=dtype).eval().requires_grad_(False)


def load_tokenizer(sd_dir) -> CLIPTokenizer:
    return CLIPTokenizer.from_pretrained(Path(sd_dir) / "tokenizer")


def load_ddim(sd_dir) -> DDIMScheduler:
    return DDIMScheduler.from_pretrained(Path(sd_dir), subfolder="scheduler")


def load_ddpm(sd_dir) -> DDPMScheduler:
    """The training noise schedule of the base model."""
    return DDPMScheduler.from_pretrained(Path(sd_dir), subfolder="scheduler")


def folder_hash(path, patterns=("*.json", "*.safetensors", "*.bin", "*.txt")) -> str:
    """sha256 over a folder's config and weight files (names and contents), to pin what a run used."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted({f for pattern in patterns for f in path.rglob(pattern) if f.is_file()})
    for f in files:
        digest.update(str(f.relative_to(path)).encode())
        digest.update(file_sha256(f).encode())
    return digest.hexdigest()
