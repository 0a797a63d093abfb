"""The ENGINE_DIR folder itself: refuse to clobber, build in a hidden sibling, swap in atomically; the non-graph files.

An ENGINE_DIR is written into ``.<name>.partial-<pid>-*`` next to it (same file system)
and renamed into place as the last step, so the path either does not exist or
holds a complete export whose manifest.json is the last file written. The exporting
process holds an flock on that folder, so a sibling left by a killed export can be told
from one still being written (see stale_exports).
"""

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tav.runtime.atomic_files import publish_folder, staging_folder
from tav.runtime.manifest import EngineDirError, read_manifest, verify_files
from tav.runtime.manifest_schema import INVERTED_LATENTS
from tav.runtime.stops import stops_held

from .errors import ExportError
from .owned_files import foreign_entries
from .stale_exports import OLD, PARTIAL, lock_folder

log = logging.getLogger("tav.export")

PROBE_PROMPT = "a man is skiing on the beach, cartoon style"


def check_output(out_dir: Path, overwrite: bool):
    """--out must be absent, an empty folder, or (with --overwrite) provably an ENGINE_DIR and nothing else."""
    if out_dir.is_symlink():  # the swap would replace the link, not the folder it points to
        raise ExportError(f"--out {out_dir} is a symlink; give the path of the folder itself")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"--out {out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise ExportError(f"--out {out_dir} exists and is not empty; choose a new folder "
                                  "(or pass --overwrite to replace an ENGINE_DIR)")
            problem = foreign_entries(out_dir)
            if problem:
                raise ExportError(f"--out {out_dir} is not only an ENGINE_DIR ({problem}); "
                                  "--overwrite replaces nothing else: move those away or choose a new folder")


def make_staging(out_dir: Path) -> Path:
    """The hidden sibling the ENGINE_DIR is built in; the same file system, so the final rename is atomic.
    Its name carries our pid; lock it with ``lock_folder`` while building."""
    try:
        return staging_folder(out_dir, prefix=f".{out_dir.name}{PARTIAL}{os.getpid()}-")
    except OSError as err:
        raise ExportError(f"cannot write next to --out {out_dir}: {err.strerror or err}") from None


def move_into_place(staging: Path, out_dir: Path, overwrite: bool):
    """Swap the finished ENGINE_DIR in (atomic_files.publish_folder: the modes every output gets, fsynced).
    What is at ``out_dir`` is re-checked now: the export took minutes, and only an existing ENGINE_DIR
    (with --overwrite) or an empty folder may be replaced."""
    check_output(out_dir, overwrite)
    with stops_held(lambda signum: log.warning("interrupt received while putting the ENGINE_DIR in place; the swap "
                                               "finished: %s is complete", out_dir)):
        if out_dir.exists() and any(out_dir.iterdir()):  # --overwrite of an existing ENGINE_DIR
            trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}{OLD}{os.getpid()}-", dir=out_dir.parent))
            try:
                with lock_folder(trash):  # a killed swap leaves the old ENGINE_DIR here: stale_exports restores it
                    publish_folder(staging, out_dir, replace=True, aside=trash / "engine")
            finally:
                if not (trash / "engine").exists():  # swapped, or put back: nothing in it to keep
                    shutil.rmtree(trash, ignore_errors=True)
        else:
            publish_folder(staging, out_dir)  # replaces an empty folder in one step


def check_as_the_runtime_does(staging: Path, out_dir: Path) -> None:
    """Read the staged ENGINE_DIR back with the runtime's own reader and file check (for every backend its
    manifest offers): an ENGINE_DIR that tav-run would refuse is never published."""
    try:
        manifest = read_manifest(staging)
        for backend in ("onnx", "tensorrt") if manifest.has_plans else ("onnx",):
            verify_files(manifest, backend)
    except EngineDirError as err:
        raise ExportError(f"the ENGINE_DIR built for --out {out_dir} fails the runtime's own check ({err.problem}), "
                          "so it was not published; this is an exporter bug, please report it") from None


def write_assets(tuned, staging: Path):
    """Tokenizer (with tokenizer.json for the torch-free runtime), scheduler config, inverted latents."""
    from tokenizers import Tokenizer

    from tav.tuner.model.sd_folder import load_tokenizer

    tokenizer = load_tokenizer(tuned.base_dir)
    tokenizer.save_pretrained(staging / "tokenizer")
    tokenizer_json = staging / "tokenizer" / "tokenizer.json"
    if not tokenizer_json.is_file():
        tokenizer.backend_tokenizer.save(str(tokenizer_json))
    # The runtime tokenizes with the `tokenizers` library alone: it must give the same ids.
    if Tokenizer.from_file(str(tokenizer_json)).encode(PROBE_PROMPT).ids != tokenizer(PROBE_PROMPT).input_ids:
        raise ExportError(f"{tokenizer_json} does not tokenize like the base model's tokenizer; "
                          f"is {tuned.base_dir}/tokenizer intact?")
    shutil.copyfile(Path(tuned.base_dir) / "scheduler" / "scheduler_config.json", staging / "scheduler_config.json")
    if tuned.inverted_latents is not None:
        np.save(staging / INVERTED_LATENTS, np.ascontiguousarray(tuned.inverted_latents.float().numpy()))
