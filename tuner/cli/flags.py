"""argparse types of the tuner's flags beyond tav.runtime.flag_types: a base model spec and a torch device.

Both are checked by spelling and ``os.stat`` only, so parsing stays instant (no torch); what needs torch
(is there a CUDA GPU? is the folder SD 1.x?) is checked right after, before any work.
"""

import re
from pathlib import Path

from tav.runtime.flag_types import path_mode, refused
from tav.tuner.model_sources.spec import reads_as_path

DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?")
MODEL_HINT = "a Stable Diffusion 1.x folder, a .safetensors/.ckpt file or a hub repo id ORG/NAME"


def base_model(value: str) -> str:
    """A base model spec: an existing folder or regular file, or what reads as a hub repo id (not a missing path)."""
    text = value.strip()
    if not text:
        raise refused(value, "is empty", f"pass {MODEL_HINT}")
    mode = path_mode(str(Path(text).expanduser()), MODEL_HINT)
    if mode is None and reads_as_path(text):
        raise refused(value, "does not exist", f"pass {MODEL_HINT}")
    if mode is not None and not (Path(text).expanduser().is_dir() or Path(text).expanduser().is_file()):
        raise refused(value, "is not a folder or a regular file", f"pass {MODEL_HINT}")
    return value


def torch_device(value: str) -> str:
    if not DEVICE.fullmatch(value.strip()):
        raise refused(value, "is not supported", "use auto, cpu, cuda or cuda:N")
    return value.strip()
