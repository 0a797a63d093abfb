"""Peak memory, measured the way an operator sees it: resident set size on CPU, device memory on a GPU.

- ``child_peak``: run a command and report its own peak RSS, with its wall time. Not from this
  process's ``wait4``: at exec the kernel folds the replaced address space's high-water mark into
  the child's, so a child forked (or vforked) from a 10 GB benchmark "peaks" at 10 GB whatever it
  does. A tiny launcher process (``LAUNCHER``) starts the command instead and reads its ``wait4``:
  the command's pre-exec address space is then the launcher's, about 10 MB.
- ``rss_window``: the peak RSS of this process during a block, above the RSS when it started.
  Linux lets a process reset its own high-water mark (``/proc/self/clear_refs`` <- "5"), so
  several backends measured one after another in one process each get their own peak.
"""

import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

STATUS = Path("/proc/self/status")


# Run with ``python -I -S``: no site-packages, so the launcher itself stays ~10 MB. posix_spawnp starts the
# command with vfork semantics, so its pre-exec memory is the launcher's, not a copy of anything larger.
LAUNCHER = """
import os, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def child_peak(cmd: list, env: dict | None = None) -> dict:
    """{"seconds", "peak_rss_bytes", "returncode", "stderr_tail"} of running ``cmd`` to completion."""
    with tempfile.TemporaryFile("w+") as stderr, tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "peak"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, str(result), *map(str, cmd)],
                       stdout=subprocess.DEVNULL, stderr=stderr, env=env, check=False)
        seconds = time.perf_counter() - start
        stderr.seek(0)
        lines = stderr.read().strip().splitlines()
        max_rss_kib, returncode = (int(v) for v in result.read_text().split()) if result.is_file() else (0, 127)
    return {"seconds": seconds, "peak_rss_bytes": max_rss_kib * 1024,  # Linux reports KiB
            "returncode": returncode, "stderr_tail": lines[-1][:300] if lines else ""}


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
