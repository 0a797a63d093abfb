"""The benchmark suite: one random SD-1.x pipeline, tuned, exported, and timed on every backend.

Order: device rates -> random model -> FLOPs and pack sizes -> tuning -> export ->
UNet step per backend (with accuracy against PyTorch fp32) -> base ENGINE_DIR + pack
(bench/packs.py) -> end to end (tav-run's pipeline and the PyTorch reference sampler).
A stage that cannot run here is recorded with the reason instead of failing the whole run.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tav.runtime.command import first_line
from tav.runtime.manifest import read_manifest

from .e2e import e2e_cli
from .flops import unet_step_flops
from .packs import measure_packs, pack_sizes
from .timing import GEMM_N, copy_gbps, matmul_tflops
from .unet_backends import StepInputs, accuracy

PROMPT = "a red car drifting on a snowy road, cartoon style"


@dataclass
class BenchConfig:
    model: str
    frames: int
    height: int
    width: int
    device: str
    steps: int
    tune_steps: int
    repeats: int
    backends: list
    warmup: int = 2
    skip: set = field(default_factory=set)
    temporal_window: int | None = None  # the random run's (--skip tune): a run tuned on W frames, inverted at `frames`


def run_suite(cfg: BenchConfig, work: Path) -> dict:
    gpu = cfg.device == "cuda"
    fast_dtype = torch.float16 if gpu else torch.float32
    report = {"device": _device_info(cfg.device, fast_dtype), "config": {**asdict(cfg), "skip": sorted(cfg.skip)},
              "results": [], "stages": {}}
    latent_hw = (cfg.height // 8, cfg.width // 8)

    from tav.tuner.demo.tiny_model import make_tiny

    t0 = time.perf_counter()
    sd_dir = (make_tiny(work / f"sd_{cfg.model}", seed=0, size=cfg.model) if not (work / f"sd_{cfg.model}").exists()
              else work / f"sd_{cfg.model}")
    unet_config = json.loads((sd_dir / "unet" / "config.json").read_text())
    text_dim = unet_config["cross_attention_dim"]
    report["stages"]["make_model"] = {"seconds": time.perf_counter() - t0}

    flops = unet_step_flops(unet_config, 2, cfg.frames, latent_hw, text_dim)
    report["flops"] = {"unet_step_flop": flops, "unet_step_tflop": flops / 1e12}
    # The reference point (SD-1.5, 8 frames 512x512) next to this run's model; counted, not timed.
    report["pack_sizes"] = [pack_sizes("sd15", 8, 512, 512, p) for p in ("fp16", "fp32")]
    report["pack_sizes"].append(pack_sizes(cfg.model, cfg.frames, cfg.height, cfg.width, "fp16" if gpu else "fp32"))

    # The random SD folder is reused across runs in one --work; runs and engines never are.
    scratch = Path(tempfile.mkdtemp(prefix="bench-", dir=work))
    run_dir = _stage(report, "tune", lambda: _tune(cfg, sd_dir, scratch), skipped="tune" in cfg.skip)
    if run_dir is None:
        # Untuned but the same work to export and run: what makes SD-1.5 sizes measurable on a CPU.
        run_dir = _stage(report, "random_run", lambda: _random_run(cfg, sd_dir, scratch))
    engine_dir = None
    if run_dir is not None and "export" not in cfg.skip:
        engine_dir = _stage(report, "export", lambda: _export(cfg, run_dir, scratch))

    if run_dir is not None:
        inputs = StepInputs.seeded(cfg.frames, latent_hw, text_dim)
        _unet_backends(cfg, report, run_dir, engine_dir, inputs, flops)
        _stage(report, "packs", lambda: measure_packs(cfg, sd_dir, run_dir, engine_dir, inputs, scratch),
               skipped="packs" in cfg.skip)
        if "e2e" not in cfg.skip and engine_dir is not None:
            _stage(report, "e2e", lambda: (None, e2e_cli(run_dir, engine_dir, scratch, cfg.steps, cfg.device, PROMPT)))
    return report


def _stage(report, name, fn, skipped=False):
    """Run one stage; its dict of measurements (and return value) or the reason it could not run."""
    if skipped:
        report["stages"][name] = {"skipped": "--skip"}
        return None
    try:
        value, measured = fn()
        report["stages"][name] = measured
        return value
    except Exception as err:  # a stage that cannot run here must not hide the others' numbers
        report["stages"][name] = {"error": first_line(err, 300, with_type=True)}
        return None


def _device_info(device: str, dtype) -> dict:
    name = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    info = {"name": name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "matmul_dtype": str(dtype).replace("torch.", ""), "matmul_n": GEMM_N[device],
            "matmul_tflops": matmul_tflops(device, dtype)}
    if device == "cuda":
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        info["copy_gbps"] = copy_gbps(device)
    return info


def _cpu_name() -> str:
    try:  # Linux: platform.processor() is often empty there
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _tune(cfg: BenchConfig, sd_dir: Path, work: Path, steps: int | None = None):
    from tav.runtime.video_output import write_video
    from tav.tuner.demo.synthetic_video import make_clip
    from tav.tuner.run_record import read_run_record
    from tav.tuner.tuning.config import TuneConfig
    from tav.tuner.tuning.tune import tune

    clip = work / "clip.mp4"
    if not clip.exists():
        write_video(make_clip(frames=2 * cfg.frames, size=max(cfg.height, cfg.width)), clip)
    run_dir = work / f"run_{steps or cfg.tune_steps}"
    if cfg.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tune(TuneConfig(pretrained_model_path=str(sd_dir), video=str(clip), prompt=PROMPT, out=str(run_dir),
                    frames=cfg.frames, height=cfg.height, width=cfg.width, steps=steps or cfg.tune_steps,
                    device=cfg.device, checkpoint_every=0, inversion_steps=min(cfg.steps, 50)))
    wall = time.perf_counter() - t0
    run = read_run_record(run_dir).raw
    measured = {"seconds_total": wall, "steps": steps or cfg.tune_steps}
    if run.get("train_time_s"):
        measured["seconds_per_step"] = run["train_time_s"] / (steps or cfg.tune_steps)
    for key in ("train_time_s", "steps_per_s", "inversion_time_s", "peak_memory_bytes", "peak_memory_kind",
                "eval_loss_before", "eval_loss_after", "resolved_precision"):
        if key in run:
            measured[key] = run[key]
    return run_dir, measured


def _random_run(cfg: BenchConfig, sd_dir: Path, work: Path):
    from tav.tuner.demo.random_run import make_random_run

    run = make_random_run(sd_dir, work / "run_random", cfg.frames, cfg.height, cfg.width,
                          temporal_window=cfg.temporal_window)
    return run, {"tuned": False, "temporal_window": cfg.temporal_window or cfg.frames}


def _export(cfg: BenchConfig, run_dir: Path, work: Path):
    from tav.export import export_engine
    from tav.export.tensorrt_build import find_tensorrt

    precision = "fp16" if cfg.device == "cuda" else "fp32"
    measured = {}
    # On a CPU no plan can run, and building them (tensorrt-rtx can) only adds minutes.
    if cfg.device == "cuda" and find_tensorrt() is not None:
        t0 = time.perf_counter()
        try:
            export_engine(run_dir, work / "engine_trt", precision=precision, backend="all")
            measured.update(backend="all", seconds=time.perf_counter() - t0)
            return _export_measured(work / "engine_trt", measured)
        except Exception as err:  # e.g. a TensorRT that cannot build for this GPU: keep the ONNX numbers
            measured["tensorrt_error"] = first_line(err, 300, with_type=True)
    t0 = time.perf_counter()
    export_engine(run_dir, work / "engine", precision=precision, backend="onnx")
    measured.update(backend="onnx", seconds=time.perf_counter() - t0)
    return _export_measured(work / "engine", measured)


def _export_measured(engine_dir: Path, measured: dict):
    manifest = read_manifest(engine_dir).raw
    measured["precision"] = manifest["precision"]
    for name, graph in manifest["graphs"].items():
        if graph.get("parity"):
            measured[f"{name}_rel_l2_err"] = graph["parity"].get("rel_l2_err")
    return engine_dir, measured


def _unet_backends(cfg, report, run_dir, engine_dir, inputs, flops):
    """Each backend timed in its own process (bench/step_worker.py); accuracy against PyTorch fp32 here."""
    from tav.export.parity import no_tf32
    from tav.tuner.tuned_weights import load_tuned

    from .unet_backends import torch_step

    text_dim = inputs.text.shape[-1]
    outputs = {}
    for backend in cfg.backends:
        row = {"backend": backend}
        args = {"backend": backend, "device": cfg.device, "run_dir": str(run_dir),
                "engine_dir": str(engine_dir) if engine_dir else None,
                "frames": cfg.frames, "latent_hw": list(inputs.sample.shape[-2:]), "text_dim": int(text_dim),
                "warmup": cfg.warmup, "repeats": cfg.repeats}
        measured = _step_worker(args, run_dir.parent / f"step_{backend}.npy")
        if "error" in measured:
            row["note"] = f"not run: {measured['error']}"
        else:
            row.update(measured)
            row["dtype"] = _dtype_name(backend, cfg.device, engine_dir)
            row["achieved_tflops"] = flops / (row["unet_step_ms"] * 1e-3) / 1e12
            row["fraction_of_matmul"] = row["achieved_tflops"] / report["device"]["matmul_tflops"]
            outputs[backend] = np.load(run_dir.parent / f"step_{backend}.npy")
        report["results"].append(row)
    # The reference last, in this process: true fp32 (no TF32), as the exporter's parity check.
    with no_tf32():
        _, reference = torch_step(load_tuned(run_dir).unet, inputs, cfg.device, torch.float32)
    torch_ms = next((r["unet_step_ms"] for r in report["results"] if r["backend"] == "torch" and "unet_step_ms" in r),
                    None)
    for row in report["results"]:
        if row["backend"] in outputs:
            row.update(accuracy(outputs[row["backend"]], reference))
        if torch_ms and row.get("unet_step_ms"):
            row["speedup_vs_torch"] = torch_ms / row["unet_step_ms"]


def _step_worker(args: dict, out_path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "tav.bench.step_worker", json.dumps(args), str(out_path)],
                          capture_output=True, text=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("TAV_STEP ")), None)
    if line is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"error": f"worker exited {done.returncode}: {tail}"}
    return json.loads(line[len("TAV_STEP "):])


def _dtype_name(backend, device, engine_dir):
    if backend.startswith("torch"):
        return "float16" if device == "cuda" else "float32"
    manifest = read_manifest(engine_dir).raw
    return {"fp16": "float16", "fp32": "float32"}[manifest["precision"]]
