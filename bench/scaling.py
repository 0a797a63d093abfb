"""tav-run at several frame counts N (``tav-bench --scaling 8,16,32``): time and memory per frame.

For each N: a random RUN_DIR of N frames (the same SD model; random tuned layers and inverted
latents: the same work as a real run at that size) whose temporal window is ``window`` frames (the
tuned count of a real run), exported to ONNX at fp32, then one generation in a fresh process
(bench/frames_worker.py). Step time is reported three ways: the mean over all steps, the first step (which
also faults in the arena's new memory) and the median of the later ones (the steady cost per step, what a
long edit mostly pays). Memory per frame is the peak above the resident memory after loading
(weights and sessions are the same at every N; what grows with N is activations), so a linear
pipeline shows a constant per-frame figure. Each figure is compared with the smallest N's.
"""

import json
import subprocess
import sys
from pathlib import Path

LINEAR_WITHIN = 1.25  # issue 21: per-frame time and memory at the largest N within 1.25x of the smallest's


def run_scaling(sd_dir: Path, frame_counts: list, window: int, height: int, width: int, steps: int, work: Path) -> dict:
    from tav.export import export_engine
    from tav.tuner.demo.random_run import make_random_run

    rows = []
    for frames in sorted(frame_counts):
        run_dir = make_random_run(sd_dir, work / f"run_{frames}", frames, height, width,
                                  temporal_window=min(window, frames))
        engine = export_engine(run_dir, work / f"engine_{frames}", precision="fp32", backend="onnx")
        measured = _worker(engine, steps)
        measured["temporal_window"] = json.loads((engine / "manifest.json").read_text())["temporal_window"]
        rows.append(_per_frame(measured))
    return {"frame_counts": sorted(frame_counts), "height": height, "width": width, "steps": steps, "rows": rows,
            "ratios_vs_smallest": _ratios(rows)}


def _worker(engine: Path, steps: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "tav.bench.frames_worker", str(engine), str(steps)],
                          capture_output=True, text=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("TAV_FRAMES ")), None)
    if line is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise RuntimeError(f"frames worker exited {done.returncode}: {tail}")
    return json.loads(line[len("TAV_FRAMES "):])


def _per_frame(m: dict) -> dict:
    n = m["frames"]
    activations = max(m["peak_rss_bytes"] - m["rss_after_load_bytes"], 0)
    steady = m.get("steady_step_seconds")
    return dict(m, denoise_step_ms_per_frame=1e3 * m["denoise_per_step_seconds"] / n,
                first_step_ms_per_frame=1e3 * m["first_step_seconds"] / n,
                steady_step_ms_per_frame=None if steady is None else 1e3 * steady / n,
                decode_ms_per_frame=1e3 * m["decode_seconds"] / n,
                steady_decode_ms_per_frame=1e3 * m["steady_decode_seconds"] / n,
                peak_rss_per_frame_bytes=m["peak_rss_bytes"] / n,
                peak_above_load_per_frame_bytes=activations / n)


def _ratios(rows: list) -> dict:
    """Each per-frame figure of every N over the smallest N's, and whether the largest stays within LINEAR_WITHIN."""
    first = rows[0]
    keys = ("denoise_step_ms_per_frame", "steady_step_ms_per_frame", "decode_ms_per_frame",
            "steady_decode_ms_per_frame", "peak_above_load_per_frame_bytes")
    ratios = {str(r["frames"]): {k: r[k] / first[k] if first[k] and r[k] is not None else None for k in keys}
              for r in rows}
    last = ratios[str(rows[-1]["frames"])]
    ratios["linear"] = {k: last[k] is not None and last[k] <= LINEAR_WITHIN for k in keys}
    return ratios


def print_scaling(report: dict) -> None:
    print(f"\ntav-bench --scaling  {report['height']}x{report['width']}, {report['steps']} steps, "
          "ONNX Runtime CPU fp32")
    print(f"{'frames':>7}{'window':>8}{'step ms':>10}{'ms/frame':>10}{'first/fr':>10}{'steady/fr':>10}"
          f"{'decode ms/fr':>14}{'again/fr':>10}{'peak MB':>10}{'above load MB/fr':>18}"
          f"  {'x smallest (step, steady, decode again, mem)'}")
    for r in report["rows"]:
        ratio = report["ratios_vs_smallest"][str(r["frames"])]
        steady = "-" if r["steady_step_ms_per_frame"] is None else f"{r['steady_step_ms_per_frame']:.2f}"
        print(f"{r['frames']:>7}{r['temporal_window']:>8}{1e3 * r['denoise_per_step_seconds']:>10.1f}"
              f"{r['denoise_step_ms_per_frame']:>10.2f}{r['first_step_ms_per_frame']:>10.2f}{steady:>10}"
              f"{r['decode_ms_per_frame']:>14.2f}{r['steady_decode_ms_per_frame']:>10.2f}"
              f"{r['peak_rss_bytes'] / 1e6:>10.0f}"
              f"{r['peak_above_load_per_frame_bytes'] / 1e6:>18.1f}"
              f"{_x(ratio['denoise_step_ms_per_frame']):>11}{_x(ratio['steady_step_ms_per_frame']):>11}"
              f"{_x(ratio['steady_decode_ms_per_frame']):>11}"
              f"{_x(ratio['peak_above_load_per_frame_bytes']):>11}")
    linear = report["ratios_vs_smallest"]["linear"]
    print(f"  linear within {LINEAR_WITHIN}x at the largest N: " + ", ".join(f"{k}={v}" for k, v in linear.items()))


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"
