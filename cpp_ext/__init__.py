"""Cross-frame KV gather for sparse-causal attention: a CUDA kernel, its CPU twin, one torch op.

``kv_gather(k, v, num_frames)`` is what the video UNet calls: [B*F, N, C] -> [B*F, 2N, C]
for K and V, frame 0's tokens then frame max(i-1, 0)'s (reference.py holds the rule).

Importing this package registers ``torch.ops.tav.kv_gather`` (and its backward): with the
compiled kernels when the library builds or is cached (build.py), else with the
pure-PyTorch reference, announced once with logging.warning. TAV_DISABLE_CPP_EXT=1
forces the reference. During ONNX export kv_gather emits standard ops, or one
``tav::KVGather`` node under ``kv_gather_as_plugin()`` (onnx_plugin.py).
"""

import logging
import os
import sys
import time

import torch

from . import build, op
from .onnx_plugin import ONNX_DOMAIN, ONNX_OP, ONNX_OPSET, export_kv_gather, kv_gather_as_plugin
from .reference import kv_gather_backward_reference, kv_gather_reference

logger = logging.getLogger(__name__)

_compiled: set[str] = set()  # devices with a compiled kernel in this process
_library = None
_fallback_reason = ""
_warned = False
_load_seconds = 0.0


def _load_compiled() -> None:
    global _library, _fallback_reason, _load_seconds
    if os.environ.get(build.DISABLE_ENV, "") not in ("", "0"):
        _fallback_reason = f"{build.DISABLE_ENV}={os.environ[build.DISABLE_ENV]}"
        return
    failures = []
    start = time.perf_counter()
    for variant in ("cuda", "cpu") if build.cuda_toolchain_available() else ("cpu",):
        try:
            _library = build.load(variant)
        except Exception as error:  # noqa: BLE001 - any build/load failure means "use the fallback"
            failures.append(f"{variant} build failed: {type(error).__name__}: {_shorten(str(error))}")
            continue
        _compiled.update({"cpu", "cuda"} if variant == "cuda" else {"cpu"})
        break
    _fallback_reason = "; ".join(failures)
    _load_seconds = time.perf_counter() - start


def _shorten(message: str) -> str:
    # Compiler errors put the command first and the cause last: keep both ends.
    message = " ".join(message.split())
    return message if len(message) <= 400 else f"{message[:150]} ... {message[-250:]}"


def _warn_fallback(device: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        reason = _fallback_reason or f"no compiled kernel for {device}"
        logger.warning("tav.cpp_ext: using the pure-PyTorch kv_gather on %s (%s)", device, reason)


def compiled_backend_available(device) -> bool:
    """Whether a compiled kv_gather kernel serves ``device`` ('cpu', 'cuda' or a torch.device)."""
    return torch.device(device).type in _compiled


def loaded_library():
    """Path of the loaded compiled library, or None."""
    return _library


def fallback_reason() -> str:
    """Why some device runs the reference ('' when nothing failed)."""
    return _fallback_reason


def _in_onnx_export() -> bool:
    # torch.onnx loads lazily and not cheaply: if nothing imported it, no export is running.
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def kv_gather(k: torch.Tensor, v: torch.Tensor, num_frames: int):
    """[B*F, N, C] -> [B*F, 2N, C] for K and V: frame 0's tokens, then frame max(i-1, 0)'s."""
    if _in_onnx_export():
        return export_kv_gather(k, v, num_frames)
    if k.device.type in _compiled:
        return torch.ops.tav.kv_gather(k, v, num_frames)
    _warn_fallback(k.device.type)
    return kv_gather_reference(k, v, num_frames)


_load_compiled()
op.register(schemas_defined=_library is not None)
if "cpu" not in _compiled:
    _warn_fallback("cpu")

__all__ = [
    "ONNX_DOMAIN",
    "ONNX_OP",
    "ONNX_OPSET",
    "compiled_backend_available",
    "fallback_reason",
    "kv_gather",
    "kv_gather_as_plugin",
    "kv_gather_backward_reference",
    "kv_gather_reference",
    "loaded_library",
]
