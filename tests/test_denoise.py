"""The one denoising loop (tav.runtime.denoise): its call order, and the same latents in numpy and in torch.

The tuner's sampler runs it with diffusers' DDIMScheduler on torch tensors, the runtime with
runtime/ddim.py on numpy arrays; with the same model and the same per-step noise both must land
on the same latents (float32 rounding: 1e-5 relative after 10 steps of values ~1-3).
"""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler as DiffusersDDIM

from tav.runtime.ddim import DDIMConfig, DDIMScheduler
from tav.runtime.denoise import denoise

SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
           set_alpha_to_one=False, steps_offset=1)
SHAPE = (1, 4, 3, 4, 4)
STEPS = 10


def toy_model(x, t):
    """A deterministic stand-in for the UNet, the same function of (x, t) in numpy and torch."""
    return 0.3 * x + 0.001 * float(t)


@pytest.mark.parametrize("eta", [0.0, 0.8])
def test_numpy_and_torch_ddim_through_the_one_loop_agree(eta):
    draws = np.random.default_rng(1).standard_normal((STEPS, *SHAPE), dtype=np.float32)
    start = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)

    ours = DDIMScheduler(DDIMConfig.from_dict(SD1))
    timesteps = ours.timesteps(STEPS)
    drawn = iter(draws)
    got = denoise(toy_model, lambda e, t, x, z: ours.step(e, int(t), x, STEPS, eta=eta, noise=z), timesteps, start,
                  noise=(lambda: next(drawn)) if eta > 0 else None)

    theirs = DiffusersDDIM(**SD1)
    theirs.set_timesteps(STEPS)
    drawn_torch = iter(torch.from_numpy(draws))
    want = denoise(toy_model, lambda e, t, x, z: theirs.step(e, t, x, eta=eta, variance_noise=z).prev_sample,
                   theirs.timesteps, torch.from_numpy(start), noise=(lambda: next(drawn_torch)) if eta > 0 else None)

    assert got.dtype == np.float32 and got.shape == SHAPE
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, start)  # the loop moved the latents


def test_each_step_calls_the_model_then_draws_noise_then_updates_then_reports():
    events = []

    def eps(x, t):
        events.append(("eps", t, x))
        return x + 1

    def noise():
        events.append(("noise",))
        return 100

    def update(e, t, x, z):
        events.append(("update", t, e, z))
        return e + z

    def callback(i, total, t, x):
        events.append(("callback", i, total, t, x))

    assert denoise(eps, update, [30, 20, 10], 0, noise=noise, callback=callback) == 303
    assert events == [
        ("eps", 30, 0), ("noise",), ("update", 30, 1, 100), ("callback", 0, 3, 30, 101),
        ("eps", 20, 101), ("noise",), ("update", 20, 102, 100), ("callback", 1, 3, 20, 202),
        ("eps", 10, 202), ("noise",), ("update", 10, 203, 100), ("callback", 2, 3, 10, 303),
    ]


def test_without_noise_the_update_gets_none_and_no_callback_is_fine():
    seen = []
    assert denoise(lambda x, t: x, lambda e, t, x, z: seen.append(z) or x - t, [3, 2], 10) == 5
    assert seen == [None, None]
