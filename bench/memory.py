"""Peak memory, measured the way an operator sees it: resident set size on CPU, device memory on a GPU.

- ``child_peak``: run a command and read that one child's peak RSS from ``wait4`` (the kernel's
  own high-water mark for exactly that process), with its wall time.
- ``rss_window``: the peak RSS of this process during a block, above the RSS when it started.
  Linux lets a process reset its own high-water mark (``/proc/self/clear_refs`` <- "5"), so
  several backends measured one after another in one process each get their own peak.
"""

import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

STATUS = Path("/proc/self/status")


def child_peak(cmd: list, env: dict | None = None) -> dict:
    """{"seconds", "peak_rss_bytes", "returncode", "stderr_tail"} of running ``cmd`` to completion."""
    with tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        # Reaped with wait4, not Popen.wait: its rusage is that one child's own peak, whereas
        # RUSAGE_CHILDREN is a maximum over every child this process ever waited for.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        lines = stderr.read().strip().splitlines()
    return {"seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
            "returncode": proc.returncode, "stderr_tail": lines[-1][:300] if lines else ""}


def peak_rss_bytes() -> int | None:
    return _status_kib("VmHWM")


def rss_bytes() -> int | None:
    return _status_kib("VmRSS")


@contextmanager
def rss_window():
    """Yields a dict that gets ``peak_rss_bytes`` (process high-water mark in the block) and
    ``peak_rss_above_start_bytes`` when the block ends; empty where /proc is not Linux's."""
    measured = {}
    start = rss_bytes()
    reset = _reset_peak()
    try:
        yield measured
    finally:
        peak = peak_rss_bytes()
        if reset and peak is not None and start is not None:
            measured.update(peak_rss_bytes=peak, peak_rss_above_start_bytes=max(peak - start, 0))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


@contextmanager
def step_memory(device: str):
    """Memory of a backend set up and stepped inside the block: process RSS on CPU; on CUDA, torch's
    peak allocation plus what the device lost meanwhile (ORT's arena and TensorRT's buffers are
    outside torch's allocator; neither gives memory back before the backend is closed)."""
    measured = {}
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        free_before, _ = torch.cuda.mem_get_info()
        allocated_before = torch.cuda.memory_allocated()
        yield measured
        torch.cuda.synchronize()
        free_after, _ = torch.cuda.mem_get_info()
        measured["cuda_torch_peak_above_start_bytes"] = torch.cuda.max_memory_allocated() - allocated_before
        measured["cuda_device_used_above_start_bytes"] = max(free_before - free_after, 0)
        return
    with rss_window() as window:
        yield measured
    measured.update(window)
