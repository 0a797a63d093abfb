"""The settings of one tuning run; an official Tune-A-Video YAML config is read into them by
tuner/official_config.py (``official_config_to_fields``, re-exported here for tav-tune).

Defaults are the early official ones (8 frames, 300 steps); the official
configs' fields map onto ours unchanged.
"""

from dataclasses import asdict, dataclass, field

from ..official_config import OFFICIAL_TRAINABLE_MODULES  # noqa: F401  (tuning/tune.py records it)
from ..official_config import read_official_config as official_config_to_fields  # noqa: F401  (tav-tune --config)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
MAX_EVAL_PAIRS = 64  # the evaluation's UNet passes: 8 already bound the loss's spread over the schedule


@dataclass
class TuneConfig:
    pretrained_model_path: str  # a diffusers folder, a .safetensors/.ckpt file or a hub ORG/NAME (model_sources)
    video: str
    prompt: str
    out: str
    frames: int = 8
    stride: int = 2
    start: int = 0
    height: int = 512
    width: int = 512
    steps: int = 300
    lr: float = 3e-5
    seed: int = 0
    precision: str = "auto"  # bf16 on CUDA with bf16 support, fp16 on other CUDA, fp32 on CPU
    device: str = "auto"
    gradient_checkpointing: bool = True
    checkpoint_every: int = 100  # 0: only on Ctrl-C
    validate_every: int = 0  # 0: no validation samples
    validation_prompts: list = field(default_factory=list)  # empty: the training prompt
    validation_steps: int = 50
    validation_guidance: float = 12.5
    validation_init: str = "noise"  # "inverted": invert with the current weights first, as use_inv_latent
    inversion_steps: int = 50
    eval_pairs: int = 8  # UNet passes of the loss evaluation before and after tuning; 0: no evaluation
    resume: bool = False
    pretrained_model_revision: str | None = None  # branch, tag or commit of a hub repo id
    # The official optimiser; not exposed as flags, recorded in run.json.
    adam_betas: tuple = (0.9, 0.999)
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

