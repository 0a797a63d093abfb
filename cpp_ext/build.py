"""Builds and loads the compiled kv_gather library (torch.utils.cpp_extension JIT + ninja, in a child process).

Two variants from one source tree: ``cpu`` (the C++ twin) and ``cuda`` (the same plus the
CUDA kernels; only where torch has CUDA and nvcc exists). Builds are cached in a folder
named by a hash of the sources, headers, flags and the torch/Python versions, so an
edited header or an upgraded torch never loads a stale library, and a cached build loads
in milliseconds without running ninja.

The compile runs in a child process (jit_build.py) whose PATH holds ninja: torch finds
ninja only on PATH, and this process's environment is left as it is.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().with_name("csrc")
SOURCES = {"cpu": ["kv_gather.cpp"], "cuda": ["kv_gather.cpp", "kv_gather_cuda.cu"]}
HEADERS = ["kv_gather_index.h", "kv_gather_op.h", "kv_gather_kernels.h"]
CFLAGS = ["-O3"]
CUDA_CFLAGS = ["-O3"]
STALE_LOCK_S = 900


def default_cache_root() -> Path:
    """~/.cache/tav-runtime/cpp_ext ($XDG_CACHE_HOME respected, as everywhere), else a temp folder.

    The temp folder serves a home that cannot be written. Nothing is created here: the build does that.
    """
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tav-runtime" / "cpp_ext"
    existing = next(folder for folder in (root, *root.parents) if folder.exists())
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return root
    return Path(tempfile.gettempdir()) / f"tav-runtime-{os.getuid()}" / "cpp_ext"


def library_path(variant: str, cache_dir=None) -> Path:
    """Where the built library of ``variant`` ('cpu' or 'cuda') lives for these sources and this torch.

    ``cache_dir``: the cache folder (default: ``default_cache_root()``).
    """
    digest = hashlib.sha256()
    for name in SOURCES[variant] + HEADERS:
        digest.update(name.encode() + (CSRC / name).read_bytes())
    tag = [variant, torch.__version__, str(torch.version.cuda), sys.version.split()[0], *CFLAGS, *CUDA_CFLAGS]
    if variant == "cuda":
        # Without TORCH_CUDA_ARCH_LIST torch compiles for the visible GPUs only: a library from
        # another GPU generation (a shared cache) would load and then fail at the first launch.
        # (torch's own variable, read by its build in the child: the cache key must follow it.)
        tag.append(os.environ.get("TORCH_CUDA_ARCH_LIST", ""))
        tag += [str(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]
    digest.update(" ".join(tag).encode())
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    return root / f"{variant}-{digest.hexdigest()[:16]}" / f"tav_kv_gather_{variant}.so"


def cuda_toolchain_available() -> bool:
    """True where the CUDA variant can be built: CUDA torch with a GPU, and nvcc."""
    if not torch.cuda.is_available() or torch.version.cuda is None:
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").exists()


def load(variant: str, cache_dir=None, verbose: bool = False) -> Path:
    """Loads the ``variant`` library into this process, building it first if it is not cached.

    Raises whatever the compiler or loader raised; the caller decides on the fallback.
    Load at most one variant per process: both define the ``tav`` op library.
    """
    so = library_path(variant, cache_dir)
    lock = so.parent / "lock"  # held by torch's build until the link is done
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink(missing_ok=True)  # left by a killed build; torch would wait on it forever
    except FileNotFoundError:
        pass  # no lock, or another process's build just finished and removed it
    if not so.exists() or lock.exists():
        so.parent.mkdir(parents=True, exist_ok=True)
        _build(variant, so, verbose)
    torch.ops.load_library(str(so))
    return so


def _build(variant: str, so: Path, verbose: bool) -> None:
    command = [sys.executable, "-m", "tav.cpp_ext.jit_build", variant, str(so.parent)]
    if verbose:
        command.append("--verbose")
    # verbose: the compiler's lines go straight to the terminal; else they are kept for the error.
    result = subprocess.run(command, env=_environment_with_ninja(), capture_output=not verbose, text=True)
    if result.returncode != 0 or not so.is_file():
        output = f"{result.stdout or ''}{result.stderr or ''}".strip() or "see the compiler output above"
        raise RuntimeError(f"building {so.name} failed (exit {result.returncode}): {output[-4000:]}")


def _environment_with_ninja() -> dict:
    """This process's environment for the build child, with ninja's folder first on PATH if it is not on it.

    `.venv/bin/python -m ...` runs without the venv on PATH, and torch looks for `ninja` there only.
    """
    env = dict(os.environ)
    if shutil.which("ninja", path=env.get("PATH")):
        return env
    candidates = [Path(sys.executable).parent]
    try:
        import ninja

        candidates.insert(0, Path(ninja.BIN_DIR))
    except ImportError:
        pass
    for folder in candidates:
        if (folder / "ninja").exists():
            env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
            break
    return env
