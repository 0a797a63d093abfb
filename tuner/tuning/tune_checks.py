"""tav-tune's checks before it writes anything: the settings, RUN_DIR and its ``.partial``, a resume's settings.

They run before the clip and the model load, so a bad invocation fails in a second (tuning/tune.py's first phase).
"""

from pathlib import Path

from tav.runtime.file_fields import FileFormatError
from tav.runtime.strict_json import read_json_file

from ..tuned_weights import RUN_JSON
from .config import MAX_EVAL_PAIRS, PRECISIONS, TuneConfig
from .resume_state import has_checkpoint
from .session import resolve_device

TUNE_CONFIG = "tune_config.json"  # in RUN_DIR.partial/: the settings the run started with
# A resume must agree on these; steps, checkpointing, validation and inversion settings may change.
RESUME_MUST_MATCH = ("pretrained_model_path", "pretrained_model_hash", "video", "prompt", "frames", "stride", "start",
                     "height", "width", "lr", "seed", "precision", "device", "adam_betas", "adam_weight_decay",
                     "adam_epsilon", "max_grad_norm")


def check_config(cfg: TuneConfig):
    """The settings alone: choices, counts, the prompt, --out's name; the device is resolved (so "tpu" fails now)."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.validation_init not in ("noise", "inverted"):
        raise ValueError(f"validation init must be 'noise' or 'inverted', got {cfg.validation_init!r}")
    resolve_device(cfg.device)  # "--device tpu" fails now, not after loading the clip and the model
    for name in ("steps", "inversion_steps", "validation_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if not 0 <= cfg.eval_pairs <= MAX_EVAL_PAIRS:
        raise ValueError(f"eval_pairs must be 0 (no evaluation) to {MAX_EVAL_PAIRS}, got {cfg.eval_pairs}")
    if cfg.lr <= 0:
        raise ValueError(f"learning rate must be positive, got {cfg.lr}")
    if not cfg.prompt:
        raise ValueError("the training prompt is empty; pass --prompt with the clip's caption")
    if str(cfg.out).strip() in ("", "-"):
        raise ValueError(f"--out {cfg.out!r} is not a folder name; give the RUN_DIR's path")


def check_targets(run_dir: Path, partial: Path, resume: bool):
    """RUN_DIR is free (absent or empty); RUN_DIR.partial holds a checkpoint to resume, or nothing to clobber."""
    if (run_dir / RUN_JSON).is_file():
        raise FileExistsError(f"{run_dir} already holds a finished run; choose a new --out")
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise FileExistsError(f"{run_dir} exists and is not an empty folder; choose a new --out")
    if resume and not has_checkpoint(partial):
        raise FileNotFoundError(f"nothing to resume: no checkpoint in {partial}; run without --resume")
    if not resume and partial.exists():
        raise FileExistsError(f"{partial} holds an interrupted run; "
                              "add --resume to continue it, or delete it to start over")


def check_resume_matches(partial: Path, settings: dict):
    """A resume keeps the settings the run started with (``RESUME_MUST_MATCH`` of its tune_config.json)."""
    try:
        saved = read_json_file(partial / TUNE_CONFIG, allow_nan=True)
        if not isinstance(saved, dict):
            raise FileFormatError("not an object")
    except (OSError, ValueError):  # missing, not JSON, nested past reason, or a FIFO
        raise ValueError(f"cannot resume: {partial / TUNE_CONFIG} is missing or corrupt; "
                         f"delete {partial} and start over") from None
    for key in RESUME_MUST_MATCH:
        if saved.get(key) != settings.get(key):
            raise ValueError(f"cannot resume: {key} was {saved.get(key)!r}, now {settings.get(key)!r}; "
                             "resume with the original settings")
