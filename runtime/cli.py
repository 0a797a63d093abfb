"""tav-run: generate a video from an ENGINE_DIR and a prompt, without torch."""

import argparse
import os
import sys
import time
from pathlib import Path

from .backends import BACKENDS, DEVICES
from .help_format import DefaultsHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tav-run", description=__doc__.splitlines()[0].strip("`"),
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--engine", required=True,
                        help="ENGINE_DIR written by tav-export (a full one, or a base with --video)")
    parser.add_argument("--video", help="NAME.tavpack to sample with a base ENGINE_DIR (tav-export --pack-for)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default="", help="the unconditional text for guidance (default: empty)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--guidance", type=float, default=12.5,
                        help="classifier-free guidance scale; 1 disables it (default 12.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", choices=("inverted", "noise"), default="inverted",
                        help="start from the tuned video's inverted latents (keeps its motion) or from seeded noise")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 DDPM-like")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--device", choices=DEVICES, default=None,
                        help="default: cuda if a GPU backend is available, else cpu")
    parser.add_argument("--out", required=True, help=".mp4, .gif, .npy (uint8 [F,H,W,3]) or a folder for PNG frames")
    parser.add_argument("--fps", type=float, default=8,
                        help="frames per second of .mp4/.gif (default 8, as the official GIFs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file (or folder of PNG frames)")
    parser.add_argument("--trust-plugin", action="store_true",
                        help="load the ENGINE_DIR's KVGather TensorRT plugin library "
                             "(native code: only for folders you trust; plugin-mode TensorRT plans need it)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no timings; print only the output path")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    # Imported here so `tav-run --help` answers without loading onnxruntime.
    from .backend_ort import PROFILE_ENV
    from .manifest import EngineDirError
    from .pipeline import NonFiniteError, VideoPipeline
    from .plugin_library import PLUGIN_ENV
    from .video_output import VideoOutputError, check_fps, check_output_path, write_video
    from .video_registry import UnknownVideoError

    try:
        # Everything that can be checked without the engines is, before loading them: a bad --out (suffix,
        # missing, clashing or unwritable), --fps, --steps, --eta fail in a second, not after minutes of sampling.
        check_output_path(args.out, args.overwrite)
        check_fps(args.fps)
        if args.steps < 1:
            raise ValueError(f"--steps must be a positive integer, got {args.steps}")
        if not 0 <= args.eta <= 1:
            raise ValueError(f"--eta must be between 0 (deterministic DDIM) and 1 (DDPM-like), got {args.eta}")
        # One call: each graph is loaded for its stage only, so the peak is the largest graph's, not all three.
        pipe = VideoPipeline.load(args.engine, backend=args.backend, device=args.device, allow_plugin=args.trust_plugin,
                                  keep_graphs=False, plugin_library=os.environ.get(PLUGIN_ENV),
                                  ort_profile_dir=os.environ.get(PROFILE_ENV))
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
    except KeyboardInterrupt:
        print("tav-run: error: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)
    except ModuleNotFoundError as err:  # `pip install .` without an extra has no ONNX Runtime
        hint = ' (pip install "tav-runtime[cpu]", or [gpu] for onnxruntime-gpu)' if err.name == "onnxruntime" else ""
        sys.exit(f"tav-run: error: {err.name} is not installed{hint}")
    except (EngineDirError, VideoOutputError, NonFiniteError, UnknownVideoError,
            ValueError, RuntimeError, OSError) as err:
        sys.exit(f"tav-run: error: {' '.join(str(err).split()) or type(err).__name__}")
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
