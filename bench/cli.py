"""``tav-bench``: measured speed, memory and accuracy of the UNet step, tuning, export and tav-run.

Everything is measured in one process on one device, so the ratios between
backends are meaningful even on a busy CPU; absolute numbers mean something
only on a GPU. Results print as a table and go to ``--json``.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tav.runtime.help_format import DefaultsHelpFormatter


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tav-bench", description=__doc__.splitlines()[0].replace("``", ""),
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "small", "sd15"], default="small")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=None, help="default: 256 for small, 512 for sd15, 64 for tiny")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps end to end (default 50 on cuda, 5 on cpu)")
    parser.add_argument("--tune-steps", type=int, default=None, help="tuning steps timed (default 30 on cuda, 3 on cpu)")
    parser.add_argument("--repeats", type=int, default=None, help="timed UNet steps per backend (default 20 cuda, 3 cpu)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed UNet steps per backend before timing (default 2)")
    parser.add_argument("--backends", default="torch,torch-compile,onnxruntime,tensorrt")
    parser.add_argument("--skip", default="", help="comma list of stages to skip: tune (then a random untuned RUN_DIR "
                        "of the same size is exported: SD-1.5 sizes on a CPU), export, packs, e2e")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp folder, removed)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    from tav.tuner.cli_common import quiet_environment

    quiet_environment()
    from .report import print_table  # torch: after parsing, so --help answers at once
    from .suite import BenchConfig, run_suite

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
    )
    if config.height % 8 or config.width % 8:
        sys.exit("tav-bench: error: --height and --width must be multiples of 8")
    if gpu:
        import torch

        if not torch.cuda.is_available():
            sys.exit("tav-bench: error: --device cuda but torch sees no CUDA GPU; use --device cpu")

    with tempfile.TemporaryDirectory(prefix="tav_bench_") as scratch:
        work = Path(args.work or scratch)
        work.mkdir(parents=True, exist_ok=True)
        report = run_suite(config, work)
    print_table(report)
    if args.json:
        tmp = Path(args.json).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, args.json)
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()
