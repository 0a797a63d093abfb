"""Why the end-to-end ratio (tav-run vs tav-sample) differs from the table's per-step ratio, from the run's numbers.

The table times one warm UNet step per backend in a process of its own; end to end times each command from process
start to exit at a few steps. At 5 CPU steps the commands' start-up (imports, loading, decode) can outweigh the
steps, so ONNX Runtime at 0.45x eager per step and tav-run at 3.9x tav-sample end to end are both true. These lines
split each command's time into its steps at the table's rates and the rest, and name the other differences.
"""

AGREE = (0.8, 1.25)  # e2e ratio over table ratio within this band: the two figures tell the same story
PROJECTED_STEPS = 50  # tav-run's default


def _run_backend(report: dict) -> str:
    """The backend tav-run's `auto` picked end to end: TensorRT where the export built plans on a GPU."""
    export = report["stages"].get("export", {})
    return "tensorrt" if report["config"]["device"] == "cuda" and export.get("backend") == "all" else "onnxruntime"


def e2e_lines(report: dict) -> list:
    """Lines under the end-to-end stage; none when it did not run."""
    e2e = report["stages"].get("e2e", {})
    if "tav_run_seconds" not in e2e:
        return []
    steps, sample_s, run_s = e2e["steps"], e2e["tav_sample_seconds"], e2e["tav_run_seconds"]
    lines = [f"  end to end, {steps} steps, each command a fresh process: tav-sample {sample_s:.1f} s, "
             f"tav-run {run_s:.1f} s ({sample_s / run_s:.2f}x)"]
    rows = {r["backend"]: r["unet_step_ms"] / 1e3 for r in report["results"] if r.get("unet_step_ms")}
    backend = _run_backend(report)
    if "torch" not in rows or backend not in rows:
        return lines + [f"    no torch and {backend} rows in the table to compare it with"]
    torch_s, run_step_s = rows["torch"], rows[backend]
    table_ratio, e2e_ratio = torch_s / run_step_s, sample_s / run_s
    if AGREE[0] <= e2e_ratio / table_ratio <= AGREE[1]:
        return lines + [f"    agrees with the table: {backend} at {table_ratio:.2f}x eager torch per step"]
    cfg = report["config"]
    sample_rest, run_rest = max(sample_s - steps * torch_s, 0.0), max(run_s - steps * run_step_s, 0.0)
    lines += [
        f"    why it differs from the table ({backend} at {table_ratio:.2f}x eager torch per step):",
        f"    - start-up: of tav-sample's {sample_s:.1f} s, {steps} steps at the table's eager rate are "
        f"~{steps * torch_s:.1f} s; the other ~{sample_rest:.1f} s is process start, importing torch and "
        "diffusers, loading the model, the text encoder and the VAE decode",
        f"      of tav-run's {run_s:.1f} s, {steps} {backend} steps are ~{steps * run_step_s:.1f} s; the other "
        f"~{run_rest:.1f} s is process start (no torch), loading the graphs, the text encoder and the decode",
        f"    - warm-up: the table's step is the median of {cfg.get('repeats', '?')} after "
        f"{cfg.get('warmup', 2)} untimed calls; end to end counts the first, slower calls too",
        f"    - threads: torch {report['device'].get('threads', '?')} in the table and in tav-sample; "
        "ONNX Runtime its default (one per core) in the table and in tav-run",
        f"    - sizes: the same in both, {cfg['frames']} frames {cfg['height']}x{cfg['width']}",
    ]
    for command, step_s, total_s, name in (("tav-sample", torch_s, sample_s, "torch"),
                                           ("tav-run", run_step_s, run_s, backend)):
        if steps * step_s > total_s:
            lines.append(f"    - the table's {name} step times {steps} is more than {command}'s whole run: that "
                         "timing ran slow (another process on the CPU?); rerun on an idle machine")
    if steps < PROJECTED_STEPS:
        projected = (sample_rest + PROJECTED_STEPS * torch_s) / (run_rest + PROJECTED_STEPS * run_step_s)
        lines.append(f"    at {PROJECTED_STEPS} steps the same rates give ~{projected:.2f}x end to end")
    return lines
