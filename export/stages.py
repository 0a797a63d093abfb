"""Timed export stages: one log line per stage as it ends (the CLI's progress), durations for the manifest.

Each line also gives the process's resident memory now and its peak so far, so the stage that sets
the peak of an export is visible in its log (docs/PERF.md "Real size").
"""

import logging
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("tav.export")


@contextmanager
def stage(timings: dict, name: str, graph: str | None = None):
    key = f"{name}:{graph}" if graph else name
    start = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - start, 3)
    log.info("%-9s %-13s %6.1fs%s", name, graph or "", timings[key], _memory())


def _memory() -> str:
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        now, peak = (int(fields[k].split()[0]) / 2**20 for k in ("VmRSS", "VmHWM"))
    except (OSError, KeyError, ValueError):  # not Linux
        return ""
    return f"   rss {now:5.2f} GiB, peak {peak:5.2f} GiB"
