"""The settings of one tuning run, and reading them from an official Tune-A-Video YAML config.

Defaults are the early official ones (8 frames, 300 steps); the official
configs' fields map onto ours unchanged (``official_config_to_fields``).
"""

import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tav.runtime.command import first_line

OFFICIAL_TRAINABLE_MODULES = ["attn1.to_q", "attn2.to_q", "attn_temp"]
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


FIELD_NAMES = {f.name for f in fields(TuneConfig)}

# Official fields that mean nothing here: accepted silently (train_batch_size is always 1, xformers -> SDPA, ...).
_IGNORED_OFFICIAL = {
    "train_batch_size", "enable_xformers_memory_efficient_attention", "use_8bit_adam", "scale_lr",
    "lr_scheduler", "lr_warmup_steps", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon",
    "max_grad_norm", "gradient_accumulation_steps", "resume_from_checkpoint",
}


def official_config_to_fields(path) -> dict:
    """TuneConfig fields from an official Tune-A-Video YAML config; unknown fields are warned about, not fatal."""
    import yaml  # here, not at the top: tav-tune --help parses without the tune extra

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read config {path}: {first_line(err, None)}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config {path} is not a mapping of fields; use the official Tune-A-Video config layout")
    out, unknown = {}, []
    train = raw.pop("train_data", None) or {}
    valid = raw.pop("validation_data", None) or {}
    _take(train, out, unknown, "train_data", {
        "video_path": "video", "prompt": "prompt", "n_sample_frames": "frames", "width": "width",
        "height": "height", "sample_start_idx": "start", "sample_frame_rate": "stride",
    })
    frames_in_validation = valid.pop("video_length", None)
    for key in ("width", "height"):  # the official validation repeats the training size
        valid.pop(key, None)
    if "use_inv_latent" in valid:
        valid["use_inv_latent"] = "inverted" if valid["use_inv_latent"] else "noise"
    _take(valid, out, unknown, "validation_data", {
        "prompts": "validation_prompts", "num_inference_steps": "validation_steps",
        "guidance_scale": "validation_guidance", "use_inv_latent": "validation_init",
        "num_inv_steps": "inversion_steps",
    })
    if frames_in_validation is not None and frames_in_validation != out.get("frames", frames_in_validation):
        warnings.warn(f"{path}: validation_data.video_length {frames_in_validation} differs from n_sample_frames; "
                      "the tuned model samples the frame count it was tuned on", stacklevel=2)
    trainable = raw.pop("trainable_modules", None)
    if trainable is not None and list(trainable) != OFFICIAL_TRAINABLE_MODULES:
        warnings.warn(f"{path}: trainable_modules {list(trainable)} ignored; "
                      f"Tune-A-Video tunes {OFFICIAL_TRAINABLE_MODULES}", stacklevel=2)
    precision = raw.pop("mixed_precision", None)
    if precision is not None:
        out["precision"] = {"no": "fp32", None: "fp32"}.get(precision, precision)
    _take(raw, out, unknown, "", {
        "pretrained_model_path": "pretrained_model_path", "output_dir": "out", "learning_rate": "lr",
        "max_train_steps": "steps", "seed": "seed", "gradient_checkpointing": "gradient_checkpointing",
        "checkpointing_steps": "checkpoint_every", "validation_steps": "validate_every",
    })
    unknown += [k for k in raw if k not in _IGNORED_OFFICIAL]
    if unknown:
        warnings.warn(f"{path}: ignoring unknown config fields: {', '.join(sorted(unknown))}", stacklevel=2)
    if out.get("lr") is not None:
        out["lr"] = float(out["lr"])  # YAML 1.1 reads "3e-5" as a string
    return out


def _take(section: dict, out: dict, unknown: list, prefix: str, mapping: dict):
    for key, value in list(section.items()):
        if key in mapping:
            out[mapping[key]] = value
            section.pop(key)
        elif prefix:
            unknown.append(f"{prefix}.{key}")
