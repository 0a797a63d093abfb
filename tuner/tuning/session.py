"""The training math of Tune-A-Video's one-shot tuning, faithful to the official ``train_tuneavideo.py``.

- Trainable: exactly ``VideoUNet.trainable_parameter_names()`` (attn1.to_q, attn2.to_q, attn_temp);
  everything else frozen.
- The base model's DDPM schedule; one random timestep per clip, shared by all frames;
  MSE(eps_hat, eps) in fp32.
- AdamW (betas 0.9/0.999, weight decay 1e-2, eps 1e-8), grad-norm clip 1.0, constant lr.

Differences that change cost and, negligibly, the objective: the clip latents (one
seeded ``latent_dist.sample()``, where the official code draws a new sample each step;
the VAE posterior's std is tiny) and the prompt embedding are computed once; the VAE and
text encoder run in fp32 (once, so it costs nothing);
frozen Linear/Conv weights are stored in the autocast dtype (autocast would cast
them to it on every call anyway), while norms and the trained tensors stay fp32.
"""

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from ..model import sd_folder
from ..model.text_encoding import encode_prompts
from ..model.video_unet import VideoUNet
from .config import TuneConfig

EVAL_SEED_OFFSET = 1_000_003  # the eval pairs' generator is independent of the training one
VAE_CHUNK = 8  # frames per VAE encoder call: bounds its memory at 512x512


@dataclass
class TuningSession:
    cfg: TuneConfig
    device: torch.device
    compute_dtype: torch.dtype | None  # None: plain fp32, no autocast
    unet: VideoUNet
    trainable: dict  # name -> parameter (fp32)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator  # CPU; draws every step's noise and timestep, saved in checkpoints
    ddpm: object
    latents: torch.Tensor  # [1, 4, F, h, w], already scaled
    text: torch.Tensor  # [1, 77, D], the training prompt
    empty_text: torch.Tensor  # [1, 77, D], for inversion
    parts: object = None  # the sampler's PipelineParts, loaded on the first validation

    def autocast(self):
        if self.compute_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)


def resolve_device(name: str) -> torch.device:
    """auto, cpu, cuda or cuda:N; anything else (tpu, mps, a typo) is a one-line ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked, but PyTorch sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name} asked, but PyTorch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 on CUDA with bf16 support, fp16 on older CUDA GPUs, fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 training needs a CUDA GPU; use --precision fp32 (or bf16) on CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def prepare(cfg: TuneConfig, sd_dir: Path, pixels: np.ndarray) -> TuningSession:
    """Load the models, compute the constant latents and embeddings, build the optimizer."""
    device = resolve_device(cfg.device)
    compute_dtype = resolve_precision(cfg.precision, device)
    tokenizer, text_encoder = sd_folder.load_tokenizer(sd_dir), sd_folder.load_text_encoder(sd_dir).to(device)
    text = encode_prompts(tokenizer, text_encoder, [cfg.prompt])
    empty_text = encode_prompts(tokenizer, text_encoder, [""])
    del text_encoder
    vae = sd_folder.load_vae(sd_dir).to(device)
    latents = encode_clip(vae, pixels, cfg.seed)
    del vae

    unet = VideoUNet.from_pretrained_2d(sd_dir, seed=cfg.seed).to(device)
    unet.requires_grad_(False)
    params = dict(unet.named_parameters())
    trainable = {name: params[name] for name in unet.trainable_parameter_names()}
    for param in trainable.values():
        param.requires_grad_(True)
    if compute_dtype is not None:
        for module in unet.modules():
            if (isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
                    and not any(p.requires_grad for p in module.parameters())):
                module.to(compute_dtype)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(
        trainable.values(), lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.adam_weight_decay,
        eps=cfg.adam_epsilon,
    )
    # Loss scaling only for fp16 (its gradients underflow); bf16 has fp32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=compute_dtype == torch.float16)
    generator = torch.Generator().manual_seed(cfg.seed)
    return TuningSession(cfg, device, compute_dtype, unet, trainable, optimizer, scaler, generator,
                         sd_folder.load_ddpm(sd_dir), latents, text.to(device), empty_text.to(device))


@torch.no_grad()
def encode_clip(vae, pixels: np.ndarray, seed: int) -> torch.Tensor:
    """Pixels [F, 3, H, W] in [-1, 1] -> latents [1, 4, F, H/8, W/8]: one seeded latent_dist.sample() x scaling."""
    device = next(vae.parameters()).device
    moments = torch.cat([
        vae.encode(torch.from_numpy(pixels[i : i + VAE_CHUNK]).to(device)).latent_dist.parameters
        for i in range(0, len(pixels), VAE_CHUNK)
    ])
    latents = DiagonalGaussianDistribution(moments).sample(torch.Generator().manual_seed(seed))
    return (latents * vae.config.scaling_factor).transpose(0, 1).unsqueeze(0).contiguous()


def denoising_loss(s: TuningSession, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """MSE between the UNet's prediction and the target at one timestep shared by all frames, in fp32."""
    noisy = s.ddpm.add_noise(s.latents, noise, timestep)
    if s.ddpm.config.prediction_type == "v_prediction":
        target = s.ddpm.get_velocity(s.latents, noise, timestep)
    else:
        target = noise
    with s.autocast():
        prediction = s.unet(noisy, timestep, s.text).sample
    return F.mse_loss(prediction.float(), target.float())


def train_step(s: TuningSession) -> float:
    noise = torch.randn(s.latents.shape, generator=s.generator).to(s.device)
    timestep = torch.randint(0, s.ddpm.config.num_train_timesteps, (1,), generator=s.generator).to(s.device)
    loss = denoising_loss(s, noise, timestep)
    s.scaler.scale(loss).backward()
    s.scaler.unscale_(s.optimizer)  # clip the true gradients, not the scaled ones
    torch.nn.utils.clip_grad_norm_(s.trainable.values(), s.cfg.max_grad_norm)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.optimizer.zero_grad(set_to_none=True)
    return loss.item()


@torch.no_grad()
def eval_loss(s: TuningSession, on_pass=None) -> float:
    """Mean denoising loss over fixed seeded (timestep, noise) pairs, timesteps spread evenly over the schedule.

    ``on_pass()`` runs after each pair's UNet pass (a progress bar; a stop request honoured between passes)."""
    generator = torch.Generator().manual_seed(s.cfg.seed + EVAL_SEED_OFFSET)
    n, total = s.cfg.eval_pairs, s.ddpm.config.num_train_timesteps
    losses = []
    for k in range(n):
        timestep = torch.tensor([(2 * k + 1) * total // (2 * n)], device=s.device)  # bin centres: 62, 187, ... for 8
        noise = torch.randn(s.latents.shape, generator=generator).to(s.device)
        losses.append(denoising_loss(s, noise, timestep).item())
        if on_pass is not None:
            on_pass()
    return float(np.mean(losses))
