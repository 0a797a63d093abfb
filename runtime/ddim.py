"""DDIM sampling (Song, Meng & Ermon, "Denoising Diffusion Implicit Models", ICLR 2021) in numpy.

A torch-free twin of diffusers' ``DDIMScheduler`` (schedulers/scheduling_ddim.py) for the
settings Stable Diffusion 1.x uses; it matches diffusers to float32 rounding (tests/test_ddim.py).
Unlike diffusers it holds no per-run state (no ``set_timesteps`` side effect): the step count
is an argument, so one scheduler serves many concurrent requests.

Notation (paper -> code): alpha_t of the paper is the cumulative product of (1 - beta),
``alphas_cumprod[t]`` here (diffusers' ``alpha_prod_t``); sigma_t is ``std_dev_t``.
"""

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear")
SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class DDIMConfig:
    """The fields of diffusers' scheduler_config.json that DDIM sampling reads (diffusers' defaults)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    timestep_spacing: str = "leading"
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0

    def __post_init__(self):
        # A config file is input: wrong types would fail deep inside numpy, or silently index from the end.
        for f in fields(self):
            value = getattr(self, f.name)
            allowed = (int, float) if f.type is float else f.type  # JSON writes 1.0 as 1
            numeric = f.type in (int, float)
            if (not isinstance(value, allowed) or (numeric and isinstance(value, bool))
                    or (numeric and not np.isfinite(value))):
                raise ValueError(f"scheduler {f.name} must be a{' finite' if numeric else ''} {f.type.__name__}, "
                                 f"got {value!r}")
        if self.num_train_timesteps < 1 or self.steps_offset < 0 or self.steps_offset >= self.num_train_timesteps:
            raise ValueError(f"scheduler num_train_timesteps={self.num_train_timesteps} / "
                             f"steps_offset={self.steps_offset} are out of range")
        if not 0 < self.beta_start < 1 or not 0 < self.beta_end < 1:
            raise ValueError(f"scheduler betas must lie in (0, 1), got {self.beta_start}..{self.beta_end}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"scheduler beta_schedule {self.beta_schedule!r} is not supported; "
                             f"use one of {BETA_SCHEDULES}")
        if self.timestep_spacing not in SPACINGS:
            raise ValueError(f"scheduler timestep_spacing {self.timestep_spacing!r} is not supported; "
                             f"use one of {SPACINGS}")
        if self.prediction_type != "epsilon":
            raise ValueError(
                f"scheduler prediction_type {self.prediction_type!r} is not supported: "
                "the runtime samples epsilon-prediction models (Stable Diffusion 1.x) only"
            )

    @classmethod
    def from_dict(cls, config: dict) -> "DDIMConfig":
        if not isinstance(config, dict):
            raise ValueError(f"a scheduler config is a JSON object, got a {type(config).__name__}")
        # Settings that change the math and that we do not implement must not be silently ignored.
        unsupported = {
            "thresholding": False,
            "rescale_betas_zero_snr": False,
            "trained_betas": None,
        }
        for key, neutral in unsupported.items():
            if config.get(key, neutral) not in (neutral, [], False):
                raise ValueError(f"scheduler setting {key}={config[key]!r} is not supported by the runtime's DDIM")
        known = {f.name for f in fields(cls)}
        # Other keys (diffusers' bookkeeping "_class_name", PNDM's skip_prk_steps, ...) do not affect DDIM.
        return cls(**{k: v for k, v in config.items() if k in known})

    @classmethod
    def from_file(cls, path) -> "DDIMConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


class DDIMScheduler:
    """Timesteps and the DDIM update for epsilon-prediction models; immutable after construction."""

    def __init__(self, config: DDIMConfig):
        self.config = c = config
        # The DDPM forward process's betas, computed in float32 as diffusers does (torch.linspace, float32).
        if c.beta_schedule == "linear":
            betas = np.linspace(c.beta_start, c.beta_end, c.num_train_timesteps, dtype=np.float32)
        else:  # "scaled_linear": Stable Diffusion's schedule, linear in sqrt(beta)
            betas = np.linspace(c.beta_start**0.5, c.beta_end**0.5, c.num_train_timesteps, dtype=np.float32) ** 2
        # alpha_t of the DDIM paper (their eq. 4 notation): the cumulative product of (1 - beta),
        # accumulated in float64 as torch.cumprod does on CPU, then stored in float32 as diffusers does.
        self.alphas_cumprod = np.cumprod((1.0 - betas).astype(np.float64)).astype(np.float32)
        # alpha_0 for the last step: 1 (a clean sample) or, as SD 1.x is configured, alpha at t = 0.
        self.final_alpha_cumprod = np.float32(1.0) if c.set_alpha_to_one else self.alphas_cumprod[0]

    def timesteps(self, steps: int) -> np.ndarray:
        """The ``steps`` training timesteps to visit, descending (int64), as diffusers' ``set_timesteps``."""
        c = self.config
        if not 0 < steps <= self.max_steps:
            # "leading" adds steps_offset to timesteps up to num_train_timesteps - 1: more steps would step
            # past the table.
            raise ValueError(f"steps must be between 1 and {self.max_steps} for this scheduler "
                             f"(num_train_timesteps={c.num_train_timesteps}, steps_offset={c.steps_offset}), "
                             f"got {steps}")
        if c.timestep_spacing == "linspace":
            return np.linspace(0, c.num_train_timesteps - 1, steps).round()[::-1].astype(np.int64)
        if c.timestep_spacing == "leading":
            ratio = c.num_train_timesteps // steps
            return (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64) + c.steps_offset
        ratio = c.num_train_timesteps / steps  # "trailing"
        return np.round(np.arange(c.num_train_timesteps, 0, -ratio)).astype(np.int64) - 1

    @property
    def max_steps(self) -> int:
        c = self.config
        return c.num_train_timesteps - c.steps_offset if c.timestep_spacing == "leading" else c.num_train_timesteps

    def previous_timestep(self, timestep: int, steps: int) -> int:
        # diffusers' DDIM always steps back by num_train_timesteps // steps, whatever the spacing
        # (so "trailing"/"linspace" land off their own grid); kept for parity with the reference.
        return int(timestep) - self.config.num_train_timesteps // steps

    def step(self, eps: np.ndarray, timestep: int, sample: np.ndarray, steps: int, eta: float = 0.0,
             noise=None) -> np.ndarray:
        """x_{t-1} from x_t and the model's noise prediction: DDIM eq. (12), with sigma_t from eq. (16).

        ``noise`` (standard normal, the shape of ``sample``) is required when ``eta > 0``.
        """
        c = self.config
        prev_t = self.previous_timestep(timestep, steps)
        alpha_t = self.alphas_cumprod[timestep]
        alpha_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        beta_t = 1 - alpha_t

        # Eq. (12), first term's bracket: "predicted x_0" = (x_t - sqrt(1 - alpha_t) eps) / sqrt(alpha_t).
        x0 = (sample - beta_t**0.5 * eps) / alpha_t**0.5
        if c.clip_sample:
            x0 = np.clip(x0, -c.clip_sample_range, c.clip_sample_range)

        # Eq. (16): sigma_t(eta) = eta * sqrt((1 - alpha_{t-1}) / (1 - alpha_t)) * sqrt(1 - alpha_t / alpha_{t-1}).
        variance = ((1 - alpha_prev) / beta_t) * (1 - alpha_t / alpha_prev)
        std_dev_t = eta * variance**0.5

        # Eq. (12), second term: "direction pointing to x_t" = sqrt(1 - alpha_{t-1} - sigma_t^2) eps.
        direction = (1 - alpha_prev - std_dev_t**2) ** 0.5 * eps
        # Eq. (12): x_{t-1} = sqrt(alpha_{t-1}) x0 + direction + sigma_t z.
        prev_sample = alpha_prev**0.5 * x0 + direction
        if eta > 0:
            if noise is None:
                raise ValueError("eta > 0 needs the step's standard normal noise")
            prev_sample = prev_sample + std_dev_t * noise
        return prev_sample.astype(sample.dtype, copy=False)
