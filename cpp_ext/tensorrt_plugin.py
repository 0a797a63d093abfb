"""TensorRT plugin library for the ``tav::KVGather`` ONNX node: build it, register it.

The library (csrc/kv_gather_trt_plugin.cu) is an IPluginV3 "KVGather", version "1", empty
namespace, launching the same CUDA kernel as the torch op. It needs only nvcc and the
TensorRT headers (NvInferRuntime.h of TensorRT >= 10 or TensorRT-RTX) to build, and links
nothing from TensorRT, so one library serves ``tensorrt`` and ``tensorrt_rtx``.

    python -m tav.cpp_ext.tensorrt_plugin build [--trt-include DIR] [--archs 80,86,...] [--out FILE]

The exporter calls ``register(trt, library)`` before parsing ONNX written with
``kv_gather(..., plugin=True)``; a runtime calls it (or, without torch, just
``trt.get_plugin_registry().load_library(path)``) before deserialising the engine.
"""

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from .build import CSRC, default_cache_root

logger = logging.getLogger(__name__)

PLUGIN_NAME = "KVGather"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
LIBRARY_NAME = "libtav_kv_gather_trt.so"
SOURCES = ["kv_gather_trt_plugin.cu", "kv_gather_kernels.h", "kv_gather_index.h"]
# CUDA 13 builds SM75+; SASS for the common GPUs, PTX of the oldest for anything newer.
DEFAULT_ARCHS = ("75", "80", "86", "89", "90", "100", "120")
# Read by this module's command only (main), passed down as arguments.
INCLUDE_ENV = "TENSORRT_INCLUDE_DIR"
TRT_ROOT_ENV = "TRT_ROOT"
SYSTEM_INCLUDE_DIRS = ("/usr/include/x86_64-linux-gnu", "/usr/include/aarch64-linux-gnu", "/usr/include",
                       "/usr/local/tensorrt/include", "/opt/tensorrt/include")


def find_include_dir(explicit=None):
    """The folder holding NvInferRuntime.h: ``explicit``, else the usual system paths; None if none has it."""
    for folder in (explicit, *SYSTEM_INCLUDE_DIRS):
        if folder and (Path(folder) / "NvInferRuntime.h").is_file():
            return Path(folder)
    return None


def find_nvcc():
    """nvcc of the CUDA toolkit torch builds with (torch resolves $CUDA_HOME), else the one on PATH."""
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = Path(CUDA_HOME or "/usr/local/cuda") / "bin" / "nvcc"
    return str(nvcc) if nvcc.exists() else shutil.which("nvcc")


def library_path(cache_dir=None) -> Path:
    """The cached build of these sources (``cache_dir``: the cache folder, default build.default_cache_root())."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((CSRC / name).read_bytes())
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    return root / f"trt-plugin-{digest.hexdigest()[:16]}" / LIBRARY_NAME


def build(include_dir=None, archs=DEFAULT_ARCHS, out=None, verbose=False) -> Path:
    """Compiles the plugin library with nvcc; returns its path. Raises RuntimeError with the reason."""
    include_dir = find_include_dir(include_dir)
    if include_dir is None:
        raise RuntimeError(f"TensorRT headers (NvInferRuntime.h) not found: pass --trt-include or set ${INCLUDE_ENV}")
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found: set CUDA_HOME")
    out = Path(out) if out else library_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    # nvcc writes a temp name that is renamed when complete: register() trusts any file at `out`.
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    gencode.append(f"-gencode=arch=compute_{archs[0]},code=compute_{archs[0]}")
    command = [nvcc, "-shared", "-O3", "-std=c++17", "-Xcompiler", "-fPIC,-fvisibility=hidden", "-cudart", "static",
               f"-I{CSRC}", f"-I{include_dir}", *gencode, "-o", str(partial), str(CSRC / SOURCES[0])]
    if verbose:
        print(" ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"nvcc failed ({result.returncode}):\n{result.stderr[-4000:]}")
    # Its own rename, not tav.runtime.atomic_files: cpp_ext imports nothing of ours (tuner and export import it).
    # The library sits in this user's build cache, so it keeps the mode the linker gave it.
    os.replace(partial, out)
    return out


def register(trt, library=None) -> Path:
    """Loads the plugin library into ``trt``'s plugin registry (``tensorrt`` or ``tensorrt_rtx`` module).

    ``library``: the plugin library's path (default: the cached build, ``library_path()``).
    Idempotent. Call it before parsing a plugin-mode ONNX graph and before deserialising
    an engine built from one. Returns the library path (ship it next to the engines).
    """
    path = Path(library) if library else library_path()
    _link_rtx_runtime(trt)
    registry = trt.get_plugin_registry()
    if registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None:
        return path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: build it with `python -m tav.cpp_ext.tensorrt_plugin build`")
    registry.load_library(str(path))
    if registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None:
        raise RuntimeError(f"{path} loaded but registered no {PLUGIN_NAME} v{PLUGIN_VERSION} creator")
    return path


def _link_rtx_runtime(trt) -> None:
    """Gives the tensorrt_rtx wheel the ``libtensorrt_rtx.so`` name its ONNX parser dlopens for plugin nodes.

    The wheel ships only ``libtensorrt_rtx.so.1`` (wheels cannot hold symlinks); the parser
    looks for the unversioned name next to itself ($ORIGIN) and aborts the process when it
    is missing. A symlink there fixes it; where that folder is read-only, put such a link on
    LD_LIBRARY_PATH before starting Python instead.
    """
    if not trt.__name__.startswith("tensorrt_rtx"):
        return
    try:
        import tensorrt_rtx_libs
    except ImportError:
        return
    folder = Path(tensorrt_rtx_libs.__file__).parent
    link, target = folder / "libtensorrt_rtx.so", folder / "libtensorrt_rtx.so.1"
    if link.exists() or not target.exists():
        return
    try:
        link.symlink_to(target.name)
        logger.info("tensorrt_plugin: linked %s -> %s for the ONNX parser's plugin import", link, target.name)
    except FileExistsError:
        pass  # another process made it
    except OSError as error:
        raise RuntimeError(
            f"the tensorrt_rtx ONNX parser needs {link} to import plugin nodes and it cannot be created ({error}); "
            f"put a symlink named libtensorrt_rtx.so -> {target} in a folder on LD_LIBRARY_PATH"
        ) from error


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tav.cpp_ext.tensorrt_plugin", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="compile the plugin library with nvcc")
    b.add_argument("--trt-include", default=_include_dir_from_environment(),
                   help=f"folder with NvInferRuntime.h (default: ${INCLUDE_ENV}, ${TRT_ROOT_ENV}/include, "
                   "system paths)")
    b.add_argument("--archs", default=",".join(DEFAULT_ARCHS), help="comma-separated SM versions")
    b.add_argument("--out", help="library path (default: the cache)")
    sub.add_parser("path", help="print where the library is cached")
    args = parser.parse_args(argv)
    if args.command == "path":
        print(library_path())
        return
    print(build(args.trt_include, tuple(args.archs.split(",")), args.out, verbose=True))


def _include_dir_from_environment():
    if os.environ.get(INCLUDE_ENV):
        return os.environ[INCLUDE_ENV]
    return str(Path(os.environ[TRT_ROOT_ENV]) / "include") if os.environ.get(TRT_ROOT_ENV) else None


if __name__ == "__main__":
    main()
