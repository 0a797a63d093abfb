"""Every stage of the workflow at a real size, each command in its own process with its own peak RSS.

``tav-bench --real-size --model sd15 --frames 8 --height 256 --width 256`` runs what a user runs, as
they run it: tav-make-tiny (a random model of the real architecture), tav-make-clip, tav-tune (a few
steps and a short inversion), tav-export fp32 and fp16, tav-run and tav-sample (a few DDIM steps from
the inverted latents), and checks that tav-run's frames equal tav-sample's. Each command's peak RSS
is its own (bench/memory.child_peak, not inflated by this process), so the table says how much host
memory each stage needs: the figure docs/PERF.md "Real size" records.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from .e2e import _tool
from .memory import child_peak

PROMPT = "a red car drifting on a snowy road, cartoon style"


def run_real_size(model: str, frames: int, height: int, width: int, work: Path, steps: int = 2,
                  tune_steps: int = 2) -> dict:
    """{"stages": [{"stage", "command", "seconds", "peak_rss_bytes"}...], "frames_max_level_diff"}.

    Raises on a failed stage.
    """
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    tool = lambda name: _tool(bin_dir, name)  # noqa: E731
    sd, clip, run = work / f"sd_{model}", work / "clip.mp4", work / "run"
    sampling = ["--prompt", PROMPT, "--steps", str(steps), "--seed", "0", "--init", "inverted"]
    stages = [
        ("make model", [tool("tav-make-tiny"), str(sd), "--size", model], not sd.exists()),
        ("make clip",
         [tool("tav-make-clip"), str(clip), "--frames", str(2 * frames), "--size", str(max(height, width))],
         not clip.exists()),
        (f"tav-tune ({tune_steps} steps, {steps}-step inversion)",
         [tool("tav-tune"), "--pretrained", str(sd), "--video", str(clip), "--prompt", PROMPT, "--out", str(run),
          "--frames", str(frames), "--height", str(height), "--width", str(width), "--steps", str(tune_steps),
          "--inversion-steps", str(steps)], not run.exists()),
        ("tav-export fp32",
         [tool("tav-export"), "--weights", str(run), "--out", str(work / "engine_fp32"), "--overwrite"], True),
        ("tav-export fp16",
         [tool("tav-export"), "--weights", str(run), "--out", str(work / "engine_fp16"), "--precision", "fp16",
          "--overwrite"], True),
        (f"tav-run fp32 ({steps} steps + decode)",
         [tool("tav-run"), "--engine", str(work / "engine_fp32"), *sampling,
          "--device", "cpu", "--quiet", "--overwrite", "--out", str(work / "run.npy")], True),
        (f"tav-sample ({steps} steps + decode)",
         [tool("tav-sample"), "--weights", str(run), *sampling, "--device", "cpu",
          "--overwrite", "--out", str(work / "sample.npy")], True),
    ]
    measured = []
    for name, cmd, needed in stages:
        if not needed:
            measured.append({"stage": name, "skipped": "exists in --work"})
            continue
        print(f"{name:45s} running ...", flush=True)  # tune and exports are minutes each at SD-1.5 size
        result = child_peak(cmd, env=os.environ.copy())
        if result["returncode"] != 0:
            raise RuntimeError(f"{name} failed ({result['returncode']}): {result['stderr_tail']}")
        measured.append({"stage": name, "command": " ".join(cmd), "seconds": result["seconds"],
                         "peak_rss_bytes": result["peak_rss_bytes"]})
        print(f"{name:45s} {result['peak_rss_bytes'] / 1e9:6.2f} GB {result['seconds']:8.1f} s", flush=True)
    frames_run, frames_sample = (np.load(work / f).astype(np.int16) for f in ("run.npy", "sample.npy"))
    return {"model": model, "frames": frames, "height": height, "width": width, "steps": steps, "stages": measured,
            "frames_max_level_diff": int(np.abs(frames_run - frames_sample).max())}


def print_real_size(report: dict) -> None:
    print(f"\n{report['model']}, {report['frames']} frames {report['height']}x{report['width']}, "
          "each stage its own process")
    print(f"{'stage':45s} {'peak RSS':>10s} {'wall':>10s}")
    for row in report["stages"]:
        if "skipped" in row:
            print(f"{row['stage']:45s} {'(reused)':>10s}")
        else:
            print(f"{row['stage']:45s} {row['peak_rss_bytes'] / 1e9:7.2f} GB {row['seconds']:8.1f} s")
    print(f"tav-run vs tav-sample frames: max difference {report['frames_max_level_diff']} uint8 levels")


def write_json(report: dict, path: str) -> None:
    Path(path).write_text(json.dumps(report, indent=2))
