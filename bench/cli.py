"""``tav-bench``: measured speed, memory and accuracy of the UNet step, tuning, export and tav-run.

Everything is measured in one process on one device, so the ratios between
backends are meaningful even on a busy CPU; absolute numbers mean something
only on a GPU. Results print as a table and go to ``--json``.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from tav.runtime.atomic_files import write_json_atomic
from tav.runtime.help_format import DefaultsHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tav-bench", description=__doc__.splitlines()[0].replace("``", ""),
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "small", "sd15"], default="small")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=None, help="default: 256 for small, 512 for sd15, 64 for tiny")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=None,
                        help="DDIM steps end to end (default 50 on cuda, 5 on cpu)")
    parser.add_argument("--tune-steps", type=int, default=None,
                        help="tuning steps timed (default 30 on cuda, 3 on cpu)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed UNet steps per backend (default 20 cuda, 3 cpu)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed UNet steps per backend before timing (default 2)")
    parser.add_argument("--backends", default="torch,torch-compile,onnxruntime,tensorrt")
    parser.add_argument("--skip", default="", help="comma list of stages to skip: tune (then a random untuned RUN_DIR "
                        "of the same size is exported: SD-1.5 sizes on a CPU), export, packs, e2e")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder, removed)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--real-size", action="store_true",
                        help="instead of the suite: run every stage (tune, export fp32/fp16, tav-run, tav-sample) "
                        "as its own command and report each one's peak RSS and time "
                        "(docs/PERF.md 'Real size'; use --work to keep files)")
    parser.add_argument("--scaling", default=None, metavar="N,N,...",
                        help="instead of the suite: tav-run's time and memory "
                        "per frame at these frame counts (e.g. 8,16,32), ONNX Runtime fp32 on the CPU")
    parser.add_argument("--temporal-window", type=int, default=None, metavar="W",
                        help="temporal window of the random run (with --skip tune; default: all frames) "
                             "or, with --scaling, of every run (default: the smallest frame count)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from tav.tuner.cli.common import quiet_environment

    quiet_environment()
    if args.real_size:
        return _real_size(args)
    from .report import print_table  # torch: after parsing, so --help answers at once
    from .scaling import print_scaling
    from .suite import run_suite

    config = _suite_config(args)
    counts = _frame_counts(args.scaling) if args.scaling else None
    if not counts and args.temporal_window is not None:
        if "tune" not in config.skip or not 1 <= args.temporal_window <= config.frames:
            sys.exit(f"tav-bench: error: --temporal-window {args.temporal_window} needs --skip tune "
                     f"(it sets the random run's window) and must be from 1 to --frames {config.frames}")
    with tempfile.TemporaryDirectory(prefix="tav_bench_") as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        if counts:
            report = _scaling(config, counts, args.temporal_window or counts[0], work)
        else:
            report = run_suite(config, work)
    if counts:
        print_scaling(report["scaling"])
    else:
        print_table(report)
    if args.json:
        write_json_atomic(args.json, report)
        print(f"results: {args.json}")


def _suite_config(args):
    """The flags as a BenchConfig, with the device's defaults; exits on a size or device it cannot run."""
    from .suite import BenchConfig

    default_hw = {"tiny": 64, "small": 256, "sd15": 512}[args.model]
    gpu = args.device == "cuda"
    config = BenchConfig(
        model=args.model,
        frames=args.frames,
        height=args.height or default_hw,
        width=args.width or default_hw,
        device=args.device,
        steps=args.steps or (50 if gpu else 5),
        tune_steps=args.tune_steps or (30 if gpu else 3),
        repeats=args.repeats or (20 if gpu else 3),
        backends=[b for b in args.backends.split(",") if b],
        warmup=args.warmup,
        skip={s for s in args.skip.split(",") if s},
        temporal_window=args.temporal_window,
    )
    if config.height % 8 or config.width % 8:
        sys.exit("tav-bench: error: --height and --width must be multiples of 8")
    if gpu:
        import torch

        if not torch.cuda.is_available():
            sys.exit("tav-bench: error: --device cuda but torch sees no CUDA GPU; use --device cpu")
    return config


def _real_size(args) -> None:
    from .real_size import print_real_size, run_real_size, write_json

    height, width = args.height or 256, args.width or 256
    with tempfile.TemporaryDirectory(prefix="tav_bench_") as scratch:
        report = run_real_size(args.model, args.frames, height, width, Path(args.work or scratch),
                               steps=args.steps or 2, tune_steps=args.tune_steps or 2)
    print_real_size(report)
    if args.json:
        write_json(report, args.json)


def _frame_counts(text: str) -> list:
    try:
        counts = sorted({int(n) for n in text.split(",") if n.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1:
        sys.exit(f"tav-bench: error: --scaling {text!r} must be positive frame counts separated by commas, "
                 "e.g. 8,16,32")
    return counts


def _scaling(config, counts: list, window: int, work: Path) -> dict:
    from tav.tuner.demo.tiny_model import make_tiny

    from .scaling import run_scaling

    if not 1 <= window <= counts[0]:
        sys.exit(f"tav-bench: error: --temporal-window {window} must be from 1 to the smallest frame count {counts[0]}")
    if config.device != "cpu":
        sys.exit("tav-bench: error: --scaling measures ONNX Runtime on the CPU; drop --device cuda")
    sd_dir = work / f"sd_{config.model}"
    if not sd_dir.exists():
        make_tiny(sd_dir, seed=0, size=config.model)
    report = run_scaling(sd_dir, counts, window, config.height, config.width, config.steps, work)
    return {"config": {"model": config.model, "temporal_window": window}, "scaling": report}


if __name__ == "__main__":
    main()
