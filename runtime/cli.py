"""tav-run: generate a video from an ENGINE_DIR and a prompt, without torch."""

import os
import sys
import time
from pathlib import Path

from . import flag_types as flags
from .backends import BACKENDS, DEVICES
from .command import CommandParser, run_command
from .sampling_limits import ETA_MAX, ETA_MIN, MAX_DDIM_STEPS, MAX_GUIDANCE, MAX_PROMPT_CHARS
from .video_output import MAX_FPS, MIN_FPS

PROG = "tav-run"


def build_parser() -> CommandParser:
    parser = CommandParser(PROG, __doc__)
    parser.add_argument("--engine", required=True, type=flags.existing_dir("an ENGINE_DIR written by tav-export"),
                        help="ENGINE_DIR written by tav-export (a full one, or a base with --video)")
    parser.add_argument("--video", type=flags.existing_file("a NAME.tavpack file"),
                        help="NAME.tavpack to sample with a base ENGINE_DIR (tav-export --pack-for)")
    parser.add_argument("--prompt", required=True, type=flags.text("what the video shows", MAX_PROMPT_CHARS))
    parser.add_argument("--negative-prompt", default="", help="the unconditional text for guidance (default: empty)")
    parser.add_argument("--steps", type=flags.whole(1, MAX_DDIM_STEPS), default=50, help="DDIM steps (default 50)")
    parser.add_argument("--guidance", type=flags.finite_float(0, MAX_GUIDANCE), default=12.5,
                        help="classifier-free guidance scale; 1 disables it (default 12.5)")
    parser.add_argument("--seed", type=flags.seed, default=0)
    parser.add_argument("--init", choices=("inverted", "noise"), default="inverted",
                        help="start from the tuned video's inverted latents (keeps its motion) or from seeded noise")
    parser.add_argument("--eta", type=flags.finite_float(ETA_MIN, ETA_MAX), default=0.0,
                        help="DDIM eta: 0 deterministic, 1 DDPM-like")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--device", choices=DEVICES, default=None,
                        help="default: cuda if a GPU backend is available, else cpu")
    parser.add_argument("--out", required=True, type=flags.out_path("a .mp4, .gif or .npy file or a folder"),
                        help=".mp4, .gif, .npy (uint8 [F,H,W,3]) or a folder for PNG frames")
    parser.add_argument("--fps", type=flags.finite_float(MIN_FPS, MAX_FPS), default=8,
                        help="frames per second of .mp4/.gif (default 8, as the official GIFs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file (or folder of PNG frames)")
    parser.add_argument("--trust-plugin", action="store_true",
                        help="load the ENGINE_DIR's KVGather TensorRT plugin library "
                             "(native code: only for folders you trust; plugin-mode TensorRT plans need it)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no timings; print only the output path")
    return parser


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


def run(args):
    # Imported here so `tav-run --help` answers without loading onnxruntime.
    from .backend_ort import PROFILE_ENV
    from .pipeline import VideoPipeline
    from .plugin_library import PLUGIN_ENV
    from .video_output import check_output_path, write_video

    # A bad --out (suffix, missing folder, clash, unwritable) fails in a second, not after minutes of sampling.
    check_output_path(args.out, args.overwrite, "--out")
    try:
        # One call: each graph is loaded for its stage only, so the peak is the largest graph's, not all three.
        pipe = VideoPipeline.load(args.engine, backend=args.backend, device=args.device,
                                  allow_plugin=args.trust_plugin, keep_graphs=False,
                                  plugin_library=os.environ.get(PLUGIN_ENV),
                                  ort_profile_dir=os.environ.get(PROFILE_ENV))
    except ModuleNotFoundError as err:  # `pip install .` without an extra has no ONNX Runtime
        if err.name != "onnxruntime":
            raise
        raise RuntimeError('onnxruntime is not installed (pip install "tav-runtime[cpu]", '
                           'or [gpu] for onnxruntime-gpu)') from None
    with pipe:
        video = None
        if pipe.manifest.base and not args.video:
            raise ValueError(f"{args.engine} is a base ENGINE_DIR: pass --video NAME.tavpack "
                             "(made with tav-export --pack-for)")
        if args.video:
            video = Path(args.video).stem
            pipe.add_video(video, args.video)
        result = pipe(args.prompt, args.negative_prompt, steps=args.steps, guidance=args.guidance, seed=args.seed,
                      init=args.init, eta=args.eta, progress=not args.quiet, video=video)
    start = time.perf_counter()
    path = write_video(result.frames, args.out, fps=args.fps, overwrite=args.overwrite)
    result.timings["write"] = time.perf_counter() - start
    if not args.quiet:
        print(format_timings(pipe, result.timings, args.steps), file=sys.stderr)
    print(path)


def format_timings(pipe, timings: dict, steps: int) -> str:
    rows = [("load", pipe.load_seconds), ("tokenize", timings["tokenize"]), ("text encoder", timings["text_encoder"]),
            (f"denoise ({steps} steps)", timings["denoise"]), ("  per step", timings["denoise_per_step"]),
            ("decode", timings["decode"]), ("write", timings["write"])]
    lines = [f"tav-run: {pipe.backend} on {pipe.device}, {pipe.manifest.frames} frames "
             f"{pipe.manifest.width}x{pipe.manifest.height}, {pipe.manifest.precision}"]
    lines += [f"  {name:<20} {seconds * 1000:10.1f} ms" for name, seconds in rows]
    return "\n".join(lines)
