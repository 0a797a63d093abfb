"""DDIM inversion of the clip's latents with the tuned UNet (Tune-A-Video's ``ddim_inversion``).

The official loop walks the DDIM timesteps upwards (1, 21, ..., 981 for 50
steps of SD's schedule). At timestep t it evaluates the UNet at t on a latent
that sits at noise level t - step, then moves it to level t with the
deterministic DDIM update run backwards:

    x0_hat  = (x - sqrt(1 - a_prev) * eps) / sqrt(a_prev)
    x_next  = sqrt(a_t) * x0_hat + sqrt(1 - a_t) * eps

where a_prev = alphas_cumprod[t - step] (or the scheduler's final alpha when
t - step < 0) and a_t = alphas_cumprod[t]. We keep that off-by-one timestep
exactly, since the sampler's DDIM then retraces the same path.
"""

from contextlib import nullcontext

import torch
from diffusers import DDIMScheduler

from tav.runtime.denoise import denoise


def inversion_step(eps: torch.Tensor, t: int, sample: torch.Tensor, scheduler: DDIMScheduler) -> torch.Tensor:
    """One upward DDIM step from noise level t - step to t (the official ``next_step``)."""
    step = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    current, target = min(t - step, scheduler.config.num_train_timesteps - 1), t
    alpha_current = scheduler.alphas_cumprod[current] if current >= 0 else scheduler.final_alpha_cumprod
    alpha_target = scheduler.alphas_cumprod[target]
    original = (sample - (1 - alpha_current) ** 0.5 * eps) / alpha_current**0.5
    return alpha_target**0.5 * original + (1 - alpha_target) ** 0.5 * eps


@torch.no_grad()
def ddim_inversion(unet, latents: torch.Tensor, text: torch.Tensor, scheduler: DDIMScheduler, num_steps: int = 50,
                   autocast=nullcontext, *, callback=None) -> torch.Tensor:
    """Invert clip latents [1, 4, F, h, w] over ``num_steps`` DDIM steps; returns the last (noisiest) latent, float32.

    ``text`` is the empty-prompt embedding [1, 77, D] (no guidance, as the original). The loop is
    tav.runtime.denoise's, over the timesteps in ascending order; ``callback(step_index, total, t, latents)``
    runs after each step (the tuner checks for Ctrl-C there).
    """
    scheduler.set_timesteps(num_steps)

    def eps(x, t):
        with autocast():
            prediction = unet(x, torch.tensor(t, device=x.device), text).sample
        return prediction.float()

    def update(prediction, t, x, _noise):
        return inversion_step(prediction, t, x, scheduler)

    upwards = list(reversed(scheduler.timesteps.tolist()))
    return denoise(eps, update, upwards, latents.float().clone(), callback=callback)
