"""``tav-bench``: measured speed, memory and accuracy of the UNet step, tuning, export and tav-run.

Everything is measured in one process on one device, so the ratios between
backends are meaningful even on a busy CPU; absolute numbers mean something
only on a GPU. Results print as a table and go to ``--json``.
"""

import tempfile
from pathlib import Path

from tav.runtime import flag_types as flags
from tav.runtime.atomic_files import write_json_atomic
from tav.runtime.command import CommandParser, UsageError, run_command
from tav.runtime.flag_types import MAX_FRAMES
from tav.runtime.sampling_limits import MAX_DDIM_STEPS

PROG = "tav-bench"
BACKENDS = ("torch", "torch-compile", "onnxruntime", "tensorrt")
STAGES = ("tune", "export", "packs", "e2e")  # what --skip can leave out
MAX_REPEATS = 10_000


def build_parser() -> CommandParser:
    parser = CommandParser(PROG, __doc__)
    parser.add_argument("--model", choices=["tiny", "small", "sd15"], default="small")
    parser.add_argument("--frames", type=flags.positive_int(MAX_FRAMES), default=8)
    parser.add_argument("--height", type=flags.multiple_of_8(), default=None,
                        help="default: 256 for small, 512 for sd15, 64 for tiny")
    parser.add_argument("--width", type=flags.multiple_of_8(), default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=flags.positive_int(MAX_DDIM_STEPS), default=None,
                        help="DDIM steps end to end (default 50 on cuda, 5 on cpu)")
    parser.add_argument("--tune-steps", type=flags.positive_int(MAX_REPEATS), default=None,
                        help="tuning steps timed (default 30 on cuda, 3 on cpu)")
    parser.add_argument("--repeats", type=flags.positive_int(MAX_REPEATS), default=None,
                        help="timed UNet steps per backend (default 20 cuda, 3 cpu)")
    parser.add_argument("--warmup", type=flags.non_negative_int(MAX_REPEATS), default=2,
                        help="untimed UNet steps per backend before timing (default 2)")
    parser.add_argument("--backends", type=flags.comma_list(BACKENDS, "backends"), default=list(BACKENDS),
                        help=f"comma list of backends to time (default {','.join(BACKENDS)})")
    parser.add_argument("--skip", type=flags.comma_list(STAGES, "stages"), default=[],
                        help="comma list of stages to skip: tune (then a random untuned RUN_DIR "
                        "of the same size is exported: SD-1.5 sizes on a CPU), export, packs, e2e")
    parser.add_argument("--work", type=flags.folder_to_use("a folder for scratch files"), default=None,
                        help="scratch folder (default: a temp folder, removed)")
    parser.add_argument("--json", type=flags.out_path("a .json file to write"), default=None,
                        help="write the results here")
    parser.add_argument("--real-size", action="store_true",
                        help="instead of the suite: run every stage (tune, export fp32/fp16, tav-run, tav-sample) "
                        "as its own command and report each one's peak RSS and time "
                        "(docs/PERF.md 'Real size'; use --work to keep files)")
    parser.add_argument("--scaling", type=frame_counts, default=None, metavar="N,N,...",
                        help="instead of the suite: tav-run's time and memory "
                        "per frame at these frame counts (e.g. 8,16,32), ONNX Runtime fp32 on the CPU")
    parser.add_argument("--temporal-window", type=flags.positive_int(MAX_FRAMES), default=None, metavar="W",
                        help="temporal window of the random run (with --skip tune; default: all frames) "
                             "or, with --scaling, of every run (default: the smallest frame count)")
    return parser


def frame_counts(text: str) -> list:
    """--scaling's "8,16,32": distinct frame counts, smallest first."""
    try:
        counts = sorted({int(n) for n in text.split(",") if n.strip()})
    except ValueError:
        counts = []
    if not counts or counts[0] < 1 or counts[-1] > MAX_FRAMES:
        raise flags.refused(text, f"is not frame counts from 1 to {MAX_FRAMES}",
                            "pass them separated by commas, e.g. 8,16,32")
    return counts


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


def run(args):
    if args.json:
        _check_json_path(args.json)
    if args.real_size:
        return _real_size(args)
    if args.scaling and args.device != "cpu":
        raise UsageError("--scaling measures ONNX Runtime on the CPU; drop --device cuda")
    window = args.temporal_window
    if args.scaling and window is not None and not 1 <= window <= args.scaling[0]:
        raise UsageError(f"--temporal-window {window} must be from 1 to the smallest frame count {args.scaling[0]}")
    if not args.scaling and window is not None and ("tune" not in args.skip or window > args.frames):
        raise UsageError(f"--temporal-window {window} needs --skip tune (it sets the random run's window) "
                         f"and must be from 1 to --frames {args.frames}")
    from .report import print_table  # torch: after parsing, so --help answers at once
    from .scaling import print_scaling
    from .suite import run_suite

    config = _suite_config(args)
    with tempfile.TemporaryDirectory(prefix="tav_bench_") as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        if args.scaling:
            report = _scaling(config, args.scaling, window or args.scaling[0], work)
        else:
            report = run_suite(config, work)
    if args.scaling:
        print_scaling(report["scaling"])
    else:
        print_table(report)
    if args.json:
        write_json_atomic(args.json, report)
        print(f"results: {args.json}")


def _check_json_path(path: str):
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise UsageError(f"--json {path}: folder {folder} does not exist; create it first")
    if Path(path).is_dir():
        raise UsageError(f"--json {path} is a folder; pass a file name such as results.json")


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
        backends=args.backends,
        warmup=args.warmup,
        skip=set(args.skip),
        temporal_window=args.temporal_window,
    )
    if gpu:
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda but torch sees no CUDA GPU; use --device cpu")
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


def _scaling(config, counts: list, window: int, work: Path) -> dict:
    from tav.tuner.demo.tiny_model import make_tiny

    from .scaling import run_scaling

    sd_dir = work / f"sd_{config.model}"
    if not sd_dir.exists():
        make_tiny(sd_dir, seed=0, size=config.model)
    report = run_scaling(sd_dir, counts, window, config.height, config.width, config.steps, work)
    return {"config": {"model": config.model, "temporal_window": window}, "scaling": report}


if __name__ == "__main__":
    main()
