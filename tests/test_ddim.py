"""The numpy DDIM equals diffusers' DDIMScheduler: timesteps exactly, every step of a full loop to 1e-6."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler as DiffusersDDIM

from tav.runtime.ddim import DDIMConfig, DDIMScheduler

SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
CONFIGS = [
    dict(SD1, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading"),  # SD 1.x as shipped
    dict(SD1, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading"),
    dict(SD1, set_alpha_to_one=False, steps_offset=1, timestep_spacing="trailing"),
    dict(SD1, set_alpha_to_one=True, steps_offset=0, timestep_spacing="linspace"),
    dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True,
         steps_offset=0, timestep_spacing="trailing"),
    dict(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=True, set_alpha_to_one=False,
         steps_offset=1, timestep_spacing="linspace"),
]
IDS = [f"{c['beta_schedule']}-{c['timestep_spacing']}-one{int(c['set_alpha_to_one'])}-off{c['steps_offset']}"
       f"-clip{int(c['clip_sample'])}" for c in CONFIGS]


def both(config):
    return DDIMScheduler(DDIMConfig.from_dict(config)), DiffusersDDIM(**config)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_timesteps_equal_diffusers_exactly(config, steps):
    ours, theirs = both(config)
    theirs.set_timesteps(steps)
    if steps > ours.max_steps:  # diffusers then lists timestep 1000, past its own table (IndexError in step)
        assert theirs.timesteps.max() >= config.get("num_train_timesteps", 1000)
        with pytest.raises(ValueError, match=f"steps must be between 1 and {ours.max_steps}"):
            ours.timesteps(steps)
        return
    assert np.array_equal(ours.timesteps(steps), theirs.timesteps.numpy())
    assert ours.timesteps(steps).dtype == np.int64


def test_noise_schedule_equals_diffusers():
    for config in CONFIGS:
        ours, theirs = both(config)
        np.testing.assert_allclose(ours.alphas_cumprod, theirs.alphas_cumprod.numpy(), rtol=1e-6, atol=1e-7)
        assert np.isclose(ours.final_alpha_cumprod, float(theirs.final_alpha_cumprod), rtol=1e-7)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_full_loop_equals_diffusers(config, eta):
    """Random model outputs and the same supplied per-step noise: every intermediate sample agrees to 1e-6."""
    steps = 20
    ours, theirs = both(config)
    theirs.set_timesteps(steps)
    rng = np.random.default_rng(0)
    shape = (1, 4, 3, 8, 8)
    sample = rng.standard_normal(shape, dtype=np.float32)
    reference = torch.from_numpy(sample.copy())
    for t in ours.timesteps(steps):
        eps = rng.standard_normal(shape, dtype=np.float32)
        noise = rng.standard_normal(shape, dtype=np.float32)
        sample = ours.step(eps, int(t), sample, steps, eta=eta, noise=noise)
        reference = theirs.step(torch.from_numpy(eps), int(t), reference, eta=eta,
                                variance_noise=torch.from_numpy(noise)).prev_sample
        assert sample.dtype == np.float32
        scale = max(1.0, float(np.abs(sample).max()))
        np.testing.assert_allclose(sample, reference.numpy(), rtol=0, atol=1e-6 * scale)


def test_sd_scheduler_config_file_is_read(tmp_path):
    """A real SD scheduler_config.json (diffusers bookkeeping and PNDM keys included) loads."""
    path = tmp_path / "scheduler_config.json"
    path.write_text(json.dumps({"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "skip_prk_steps": True,
                                "num_train_timesteps": 1000, "trained_betas": None, **CONFIGS[0]}))
    config = DDIMConfig.from_file(path)
    assert config.steps_offset == 1 and config.set_alpha_to_one is False and config.timestep_spacing == "leading"


@pytest.mark.parametrize("bad, message", [
    ({"prediction_type": "v_prediction"}, "prediction_type"),
    ({"beta_schedule": "squaredcos_cap_v2"}, "beta_schedule"),
    ({"timestep_spacing": "karras"}, "timestep_spacing"),
    ({"thresholding": True}, "thresholding"),
    ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
])
def test_unsupported_settings_are_refused_clearly(bad, message):
    with pytest.raises(ValueError, match=message):
        DDIMConfig.from_dict({**CONFIGS[0], **bad})


def test_eta_without_noise_and_bad_steps_are_refused():
    ours = DDIMScheduler(DDIMConfig.from_dict(CONFIGS[0]))
    x = np.zeros((1, 4, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="noise"):
        ours.step(x, 981, x, 50, eta=0.5)
    for steps in (0, -3, 1001):
        with pytest.raises(ValueError, match="steps"):
            ours.timesteps(steps)
