"""An official Tune-A-Video config.yaml, read once and typed: ``tav-tune --config``, and the config.yaml an
official output folder keeps beside its weights (read for its frame count, size and prompt).

The official fields map onto TuneConfig's (``MAPPING``); each is checked for its form as it is taken
(runtime/file_fields.py), so a garbled file is one ``OfficialConfigError`` line naming the file, the field
and the form expected, never a TypeError later. A null value means "not set" (the official defaults
are None), as does an absent one. Unknown fields are warned about, not fatal. Torch-free.
"""

import math
import warnings
from pathlib import Path

from tav.runtime.command import first_line
from tav.runtime.file_fields import (
    BOOLEAN,
    COUNT,
    INTEGER,
    NAME,
    NUMBER,
    POSITIVE_INT,
    TEXT,
    Fields,
    FileFormatError,
    Form,
    list_of,
    one_of,
)
from tav.runtime.regular_files import NotRegularFile, open_regular

OFFICIAL_TRAINABLE_MODULES = ["attn1.to_q", "attn2.to_q", "attn_temp"]
MAX_BYTES = 1 << 20  # an official config is a few hundred bytes


def _is_lr(value) -> bool:  # YAML 1.1 reads "3e-5" (the official configs' spelling) as a string
    try:
        rate = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else math.nan
    except ValueError:
        return False
    return math.isfinite(rate) and rate > 0


LEARNING_RATE = Form("a positive number", _is_lr)

# section -> {official field: (TuneConfig field, form)}
MAPPING = {
    "train_data": {
        "video_path": ("video", NAME), "prompt": ("prompt", TEXT), "n_sample_frames": ("frames", POSITIVE_INT),
        "width": ("width", POSITIVE_INT), "height": ("height", POSITIVE_INT), "sample_start_idx": ("start", COUNT),
        "sample_frame_rate": ("stride", POSITIVE_INT),
    },
    "validation_data": {
        "prompts": ("validation_prompts", list_of(TEXT)), "num_inference_steps": ("validation_steps", POSITIVE_INT),
        "guidance_scale": ("validation_guidance", NUMBER), "use_inv_latent": ("validation_init", BOOLEAN),
        "num_inv_steps": ("inversion_steps", POSITIVE_INT),
    },
    "": {
        "pretrained_model_path": ("pretrained_model_path", NAME), "output_dir": ("out", NAME),
        "learning_rate": ("lr", LEARNING_RATE), "max_train_steps": ("steps", POSITIVE_INT), "seed": ("seed", INTEGER),
        "gradient_checkpointing": ("gradient_checkpointing", BOOLEAN),
        "checkpointing_steps": ("checkpoint_every", COUNT), "validation_steps": ("validate_every", COUNT),
    },
}
# Official fields checked but not mapped: the validation repeats the training size and frame count.
CHECKED_ONLY = {"validation_data": {"video_length": POSITIVE_INT, "width": POSITIVE_INT, "height": POSITIVE_INT},
                "": {"trainable_modules": list_of(TEXT), "mixed_precision": one_of("no", "fp16", "bf16")}}
# Official fields that mean nothing here: accepted silently (train_batch_size is always 1, xformers -> SDPA, ...).
IGNORED = {
    "train_batch_size", "enable_xformers_memory_efficient_attention", "use_8bit_adam", "scale_lr",
    "lr_scheduler", "lr_warmup_steps", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon",
    "max_grad_norm", "gradient_accumulation_steps", "resume_from_checkpoint",
}


class OfficialConfigError(FileFormatError):
    """A config.yaml that is not YAML, not a mapping, or holds a field of the wrong form."""


def read_official_config(path) -> dict:
    """TuneConfig fields from official config.yaml ``path``, each of its form; OfficialConfigError otherwise."""
    import yaml  # here, not at the top: tav-tune --help parses without the tune extra (no PyYAML)

    path = Path(path)
    try:
        with open_regular(path) as fh:
            text = fh.read(MAX_BYTES + 1)
        if len(text) > MAX_BYTES:
            raise OfficialConfigError(f"config {path} is larger than {MAX_BYTES >> 20} MiB; it is not a config")
        raw = yaml.safe_load(text)
    except (OSError, NotRegularFile) as err:
        raise OfficialConfigError(f"cannot read config {path}: {first_line(err, None)}") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        raise OfficialConfigError(f"config {path} is not valid YAML ({type(err).__name__}); "
                                  "fix it or copy it again") from None
    try:
        return _fields(Fields({} if raw is None else raw, path), path)
    except FileFormatError as err:
        raise OfficialConfigError(f"config {path}: {err.problem}; use the official Tune-A-Video config layout",
                                  err.problem) from None


def _fields(config: Fields, path: Path) -> dict:
    out, unknown = {}, []
    for section_name, mapping in MAPPING.items():
        section = config.section(section_name) if section_name else config
        checked = CHECKED_ONLY.get(section_name, {})
        for key, value in section.raw.items():
            if value is None:
                continue  # the official default
            if key in mapping:
                field, form = mapping[key]
                out[field] = section.take(key, form)
            elif key in checked:
                section.take(key, checked[key])
            elif section_name:
                unknown.append(f"{section_name}.{key}")
            elif key not in MAPPING and key not in IGNORED:
                unknown.append(key)
    _translate(config, out, path)
    if unknown:
        warnings.warn(f"{path}: ignoring unknown config fields: {', '.join(sorted(unknown))}", stacklevel=2)
    return out


def _translate(config: Fields, out: dict, path: Path) -> None:
    """The official fields whose meaning differs from ours."""
    if "lr" in out:
        out["lr"] = float(out["lr"])
    if "validation_init" in out:
        out["validation_init"] = "inverted" if out["validation_init"] else "noise"
    if "mixed_precision" in config.raw:
        precision = config.raw["mixed_precision"]
        out["precision"] = "fp32" if precision in ("no", None) else precision
    frames = config.section("validation_data").raw.get("video_length")
    if frames is not None and frames != out.get("frames", frames):
        warnings.warn(f"{path}: validation_data.video_length {frames} differs from n_sample_frames; "
                      "the tuned model samples the frame count it was tuned on", stacklevel=2)
    trainable = config.raw.get("trainable_modules")
    if trainable is not None and trainable != OFFICIAL_TRAINABLE_MODULES:
        warnings.warn(f"{path}: trainable_modules {trainable} ignored; "
                      f"Tune-A-Video tunes {OFFICIAL_TRAINABLE_MODULES}", stacklevel=2)
