"""The PyTorch reference sampler: DDIM with classifier-free guidance over the tuned video UNet.

Uses diffusers' own ``DDIMScheduler`` (built from the base model's scheduler
config), so it is an independent reference for the runtime's numpy DDIM. Every
convention shared with the runtime (text encoding, CFG batch order, starting
noise, eta noise, decoding, uint8 conversion) follows docs/CONTRACTS.md.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from tav.runtime.denoise import denoise
from tav.runtime.video_output import frames_to_uint8

from .model import sd_folder
from .model.text_encoding import encode_prompts
from .tuned_weights import TunedModel

INITS = ("inverted", "noise")


@dataclass
class SampleResult:
    frames: np.ndarray  # uint8 [F, H, W, 3]
    latents: np.ndarray  # float32 [1, 4, F, H/8, W/8], the final latents before decoding


@dataclass
class PipelineParts:
    """The frozen SD parts a sampler needs besides the UNet."""

    tokenizer: object
    text_encoder: object
    vae: object
    scheduler: object

    @classmethod
    def load(cls, base_dir, device="cpu") -> "PipelineParts":
        return cls(
            sd_folder.load_tokenizer(base_dir),
            sd_folder.load_text_encoder(base_dir).to(device),
            sd_folder.load_vae(base_dir).to(device),
            sd_folder.load_ddim(base_dir),
        )


def sample(tuned: TunedModel, prompt: str, negative_prompt: str = "", steps: int = 50, guidance: float = 12.5,
           seed: int = 0, init: str = "inverted", eta: float = 0.0, *, parts: PipelineParts | None = None,
           autocast=nullcontext, callback=None) -> SampleResult:
    """Generate tuned.frames frames for ``prompt``; runs on the device of ``tuned.unet``.

    ``parts`` reuses already loaded VAE/text encoder/tokenizer/scheduler and ``autocast``
    wraps UNet calls: both for the tuner's validation samples, which run mid-training.
    ``callback(step_index, total, t, latents)`` runs after each denoising step (tav.runtime.denoise;
    tav-sample's progress bar).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    device = next(tuned.unet.parameters()).device
    parts = parts or PipelineParts.load(tuned.base_dir, device)
    shape = (1, 4, tuned.frames, tuned.height // 8, tuned.width // 8)
    rng = np.random.default_rng(seed)
    if init == "inverted":
        if tuned.inverted_latents is None:
            raise ValueError("these weights have no inverted latents; "
                             "use init='noise' (--init noise) or re-run tav-tune")
        latents = tuned.inverted_latents.float()
        if tuple(latents.shape) != shape:
            raise ValueError(f"inverted latents have shape {tuple(latents.shape)}, the model samples {shape}")
    else:
        latents = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    text = encode_prompts(parts.tokenizer, parts.text_encoder, [negative_prompt, prompt])  # [uncond; cond]
    latents = ddim_loop(tuned.unet, parts.scheduler, latents.to(device), text, steps, guidance, eta, rng,
                        autocast=autocast, callback=callback)
    return SampleResult(decode(parts.vae, latents), latents.cpu().numpy())


@torch.no_grad()
def ddim_loop(unet, scheduler, latents, text, steps: int, guidance: float, eta: float, rng: np.random.Generator, *,
              autocast=nullcontext, callback=None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) with CFG over tav.runtime.denoise's loop.

    eta > 0 draws step noise from ``rng``.
    """
    scheduler.set_timesteps(steps)
    text = text.to(latents.device)
    shape = tuple(latents.shape)

    def eps(x, t):
        model_input = scheduler.scale_model_input(torch.cat([x, x]), t)  # identity for DDIM
        with autocast():
            eps_uncond, eps_cond = unet(model_input, t.to(x.device), text).sample.float().chunk(2)
        return eps_uncond + guidance * (eps_cond - eps_uncond)

    def update(prediction, t, x, noise):
        return scheduler.step(prediction, t, x, eta=eta, variance_noise=noise).prev_sample

    def draw():
        return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).to(latents.device)

    latents = denoise(eps, update, scheduler.timesteps, latents, noise=draw if eta > 0 else None, callback=callback)
    return latents.float()


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> np.ndarray:
    """Latents [1, 4, F, h, w] -> uint8 frames [F, H, W, 3]: the VAE decoder on the F frames as one batch."""
    frames = latents[0].transpose(0, 1) / vae.config.scaling_factor  # [F, 4, h, w]
    images = vae.decode(frames.to(next(vae.parameters()).dtype)).sample
    return frames_to_uint8(images.float().cpu().numpy())
