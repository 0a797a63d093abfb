"""Giving freed host memory back to the system, so a process's footprint follows what it holds now."""

import ctypes
import gc


def release_freed_memory() -> None:
    """Collect, then ask glibc to return its free heap pages. Without this, memory freed by a closed
    ONNX Runtime session or a dropped torch model stays in the process (and in its RSS) for good:
    most weights and activations are allocated below glibc's mmap threshold. No-op elsewhere."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
