"""End to end as a user runs it: ``tav-sample`` (PyTorch reference) and ``tav-run`` (exported graphs),
each a fresh process timed from start to exit, with that process's own peak memory.

Both write the frames as .npy, so the same run also checks that they agree (the contract's
tolerance is 2 uint8 levels; docs/CONTRACTS.md). Process start, imports and model loading are
part of the time: that is what a command-line user waits for.
"""

import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .memory import child_peak


def e2e_cli(run_dir: Path, engine_dir: Path, work: Path, steps: int, device: str, prompt: str) -> dict:
    common = ["--prompt", prompt, "--steps", str(steps), "--guidance", "12.5", "--seed", "0", "--init", "inverted"]
    bin_dir = Path(sys.executable).parent
    outputs = {"tav_sample": work / "e2e_sample.npy", "tav_run": work / "e2e_run.npy"}
    commands = {
        "tav_sample": [_tool(bin_dir, "tav-sample"), "--weights", str(run_dir), *common, "--device", device,
                       "--out", str(outputs["tav_sample"])],
        "tav_run": [_tool(bin_dir, "tav-run"), "--engine", str(engine_dir), *common, "--device", device, "--quiet",
                    "--out", str(outputs["tav_run"])],
    }
    measured = {"steps": steps}
    for name, cmd in commands.items():
        outputs[name].unlink(missing_ok=True)
        result = child_peak(cmd, env=os.environ.copy())
        if result["returncode"] != 0:
            raise RuntimeError(f"{name} failed ({result['returncode']}): {result['stderr_tail']}")
        measured[f"{name}_seconds"] = result["seconds"]
        measured[f"{name}_peak_rss_bytes"] = result["peak_rss_bytes"]
    sample, run = (np.load(outputs[n]).astype(np.int16) for n in ("tav_sample", "tav_run"))
    measured["frames_max_level_diff"] = int(np.abs(sample - run).max())
    measured["speedup_tav_run_vs_sample"] = measured["tav_sample_seconds"] / measured["tav_run_seconds"]
    measured["peak_rss_ratio_run_vs_sample"] = (measured["tav_run_peak_rss_bytes"]
                                                / measured["tav_sample_peak_rss_bytes"])
    return measured


def _tool(bin_dir: Path, name: str) -> str:
    """The console script next to this interpreter (the venv's), else the one on PATH."""
    local = bin_dir / name
    return str(local) if local.exists() else (shutil.which(name) or name)
