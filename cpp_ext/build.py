"""Builds and loads the compiled kv_gather library (torch.utils.cpp_extension JIT + ninja).

Two variants from one source tree: ``cpu`` (the C++ twin) and ``cuda`` (the same plus the
CUDA kernels; only where torch has CUDA and nvcc exists). Builds are cached in a folder
named by a hash of the sources, headers, flags and the torch/Python versions, so an
edited header or an upgraded torch never loads a stale library, and a cached build loads
in milliseconds without running ninja.

``python -m tav.cpp_ext`` pre-builds it (the Makefile's set-up step) so tests and the
first forward pass do not pay for the compile.
"""

import hashlib
import os
import shutil
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
DISABLE_ENV = "TAV_DISABLE_CPP_EXT"
CACHE_ENV = "TAV_CPP_EXT_CACHE"
STALE_LOCK_S = 900


def cache_root() -> Path:
    """$TAV_CPP_EXT_CACHE, else ~/.cache/tav-runtime/cpp_ext (a temp folder if that is read-only)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tav-runtime" / "cpp_ext"
    try:
        root.mkdir(parents=True, exist_ok=True)
        return root
    except OSError:
        return Path(tempfile.gettempdir()) / f"tav-runtime-{os.getuid()}" / "cpp_ext"


def library_path(variant: str) -> Path:
    """Where the built library of ``variant`` ('cpu' or 'cuda') lives for these sources and this torch."""
    digest = hashlib.sha256()
    for name in SOURCES[variant] + HEADERS:
        digest.update(name.encode() + (CSRC / name).read_bytes())
    tag = [variant, torch.__version__, str(torch.version.cuda), sys.version.split()[0], *CFLAGS, *CUDA_CFLAGS]
    if variant == "cuda":
        # Without TORCH_CUDA_ARCH_LIST torch compiles for the visible GPUs only: a library from
        # another GPU generation (a shared cache) would load and then fail at the first launch.
        tag.append(os.environ.get("TORCH_CUDA_ARCH_LIST", ""))
        tag += [str(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]
    digest.update(" ".join(tag).encode())
    return cache_root() / f"{variant}-{digest.hexdigest()[:16]}" / f"tav_kv_gather_{variant}.so"


def cuda_toolchain_available() -> bool:
    """True where the CUDA variant can be built: CUDA torch with a GPU, and nvcc."""
    if not torch.cuda.is_available() or torch.version.cuda is None:
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    return CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").exists()


def load(variant: str, verbose: bool = False) -> Path:
    """Loads the ``variant`` library into this process, building it first if it is not cached.

    Raises whatever the compiler or loader raised; the caller decides on the fallback.
    Load at most one variant per process: both define the ``tav`` op library.
    """
    so = library_path(variant)
    lock = so.parent / "lock"  # held by torch's build until the link is done
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink(missing_ok=True)  # left by a killed build; torch would wait on it forever
    except FileNotFoundError:
        pass  # no lock, or another process's build just finished and removed it
    if so.exists() and not lock.exists():
        torch.ops.load_library(str(so))
        return so
    so.parent.mkdir(parents=True, exist_ok=True)
    _put_ninja_on_path()
    from torch.utils.cpp_extension import load as jit_load

    jit_load(
        name=so.stem,
        sources=[str(CSRC / s) for s in SOURCES[variant]],
        extra_cflags=CFLAGS,
        extra_cuda_cflags=CUDA_CFLAGS,
        build_directory=str(so.parent),
        with_cuda=variant == "cuda",
        is_python_module=False,
        verbose=verbose,
    )
    return so


def _put_ninja_on_path() -> None:
    # `.venv/bin/python -m ...` runs without the venv on PATH; torch looks for `ninja` there.
    if shutil.which("ninja"):
        return
    candidates = [Path(sys.executable).parent]
    try:
        import ninja

        candidates.insert(0, Path(ninja.BIN_DIR))
    except ImportError:
        pass
    for folder in candidates:
        if (folder / "ninja").exists():
            os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
            return
