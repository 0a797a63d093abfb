"""Cross-frame KV gather for sparse-causal attention: a CUDA kernel, its CPU twin, one torch op.

``kv_gather(k, v, num_frames)`` is what the video UNet calls: [B*F, N, C] -> [B*F, 2N, C]
for K and V, frame 0's tokens then frame max(i-1, 0)'s (reference.py holds the rule).

Importing this package does nothing but define functions. The first kv_gather call (or an
explicit ``load()``) builds or loads the compiled kernels (build.py) and registers
``torch.ops.tav.kv_gather`` and its backward: with those kernels, or where they cannot be
built with the pure-PyTorch reference, announced once with logging.warning.
``load(compiled=False)`` chooses the reference. During ONNX export kv_gather emits standard
ops, or with ``plugin=True`` one ``tav::KVGather`` node (onnx_plugin.py).
"""

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import build, op
from .onnx_plugin import ONNX_DOMAIN, ONNX_OP, ONNX_OPSET, export_kv_gather
from .reference import kv_gather_backward_reference, kv_gather_reference

logger = logging.getLogger(__name__)


@dataclass
class KVGatherBackend:
    """What serves kv_gather in this process, decided once by ``load``."""

    devices: frozenset = frozenset()  # device types with a compiled kernel: {"cpu"} or {"cpu", "cuda"}
    library: Path | None = None  # the loaded compiled library
    fallback_reason: str = ""  # why some device runs the reference ('' when nothing failed)
    load_seconds: float = 0.0
    requested: tuple = (True, None)  # load()'s (compiled, cache_dir)
    noted: bool = False  # the reference fallback was announced (once per process)


_backend: KVGatherBackend | None = None
_lock = threading.Lock()


def load(compiled: bool = True, cache_dir=None, verbose: bool = False) -> KVGatherBackend:
    """Build (or find cached) and load the compiled kv_gather, and register the torch ops; once per process.

    ``compiled=False``: the pure-PyTorch reference serves every device. ``cache_dir``: where builds
    are cached (default: build.default_cache_root()). ``verbose``: the compiler's output on the
    terminal. kv_gather calls this with the defaults on first use; call it first to choose, or to pay
    the build up front. A later call with other arguments is refused: a library cannot be unloaded.
    """
    requested = (compiled, None if cache_dir is None else Path(cache_dir))
    backend = _loaded(requested, verbose)
    if backend.requested != requested:
        raise RuntimeError(f"tav.cpp_ext is already loaded with (compiled, cache_dir)={backend.requested}; "
                           f"load{requested} must come before the first kv_gather call")
    return backend


def _loaded(requested: tuple = (True, None), verbose: bool = False) -> KVGatherBackend:
    global _backend
    with _lock:
        if _backend is None:
            backend = _build_or_load(*requested, verbose)
            op.register(schemas_defined=backend.library is not None)
            _backend = backend
    return _backend


def _build_or_load(compiled: bool, cache_dir, verbose: bool) -> KVGatherBackend:
    backend = KVGatherBackend(requested=(compiled, cache_dir))
    if not compiled:
        backend.fallback_reason = "compiled kernels turned off (tav.cpp_ext.load(compiled=False))"
        return backend
    failures = []
    start = time.perf_counter()
    for variant in ("cuda", "cpu") if build.cuda_toolchain_available() else ("cpu",):
        try:
            backend.library = build.load(variant, cache_dir, verbose)
        except Exception as error:  # noqa: BLE001 - any build/load failure means "use the fallback"
            failures.append(f"{variant} build failed: {type(error).__name__}: {_shorten(str(error))}")
            continue
        backend.devices = frozenset({"cpu", "cuda"} if variant == "cuda" else {"cpu"})
        break
    backend.fallback_reason = "; ".join(failures)
    backend.load_seconds = time.perf_counter() - start
    return backend


def _shorten(message: str) -> str:
    # Compiler errors put the command first and the cause last: keep both ends.
    message = " ".join(message.split())
    return message if len(message) <= 400 else f"{message[:150]} ... {message[-250:]}"


def compiled_backend_available(device) -> bool:
    """Whether a compiled kv_gather kernel serves ``device`` ('cpu', 'cuda' or a torch.device); loads on first use."""
    return torch.device(device).type in _loaded().devices


def loaded_library():
    """Path of the loaded compiled library, or None; loads on first use."""
    return _loaded().library


def fallback_reason() -> str:
    """Why some device runs the reference ('' when nothing failed); loads on first use."""
    return _loaded().fallback_reason


def _in_onnx_export() -> bool:
    # torch.onnx loads lazily and not cheaply: if nothing imported it, no export is running.
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def kv_gather(k: torch.Tensor, v: torch.Tensor, num_frames: int, plugin: bool = False):
    """[B*F, N, C] -> [B*F, 2N, C] for K and V: frame 0's tokens, then frame max(i-1, 0)'s.

    ``plugin``: under ONNX export, one tav::KVGather node (TensorRT's KVGather plugin) instead of
    standard ops; ignored otherwise.
    """
    if _in_onnx_export():
        return export_kv_gather(k, v, num_frames, plugin)
    if k.device.type == "meta":  # shapes only (a model traced before its weights exist): no kernel to choose
        return kv_gather_reference(k, v, num_frames)
    backend = _backend or _loaded()
    if k.device.type in backend.devices:
        return torch.ops.tav.kv_gather(k, v, num_frames)
    if not backend.noted:
        backend.noted = True
        reason = backend.fallback_reason or f"no compiled kernel for {k.device.type}"
        logger.warning("tav.cpp_ext: using the pure-PyTorch kv_gather on %s (%s)", k.device.type, reason)
    return kv_gather_reference(k, v, num_frames)


__all__ = [
    "ONNX_DOMAIN",
    "ONNX_OP",
    "ONNX_OPSET",
    "KVGatherBackend",
    "compiled_backend_available",
    "fallback_reason",
    "kv_gather",
    "kv_gather_backward_reference",
    "kv_gather_reference",
    "load",
    "loaded_library",
]
