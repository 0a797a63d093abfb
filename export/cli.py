"""``tav-export``: tuned weights (RUN_DIR or official Tune-A-Video output) -> ENGINE_DIR of ONNX graphs/TensorRT plans.

Many videos on one base: ``--base MODEL`` exports a base ENGINE_DIR whose UNet takes the tuned
tensors as inputs, and ``--weights RUN_DIR --pack-for BASE_DIR --out NAME.tavpack`` writes a video's pack.
"""

import logging
import os
import sys

from tav.runtime import flag_types as flags
from tav.runtime.command import CommandParser, UsageError, run_command
from tav.runtime.flag_types import MAX_FRAMES
from tav.runtime.host_memory import map_large_blocks
from tav.runtime.plugin_library import PLUGIN_ENV
from tav.tuner.cli.flags import base_model

PROG = "tav-export"


def build_parser() -> CommandParser:
    parser = CommandParser(PROG, __doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", type=flags.existing_dir("a RUN_DIR or an official Tune-A-Video output folder"),
                        help="RUN_DIR from tav-tune, or an official Tune-A-Video output folder "
                             "(required unless --base or --clean-stale)")
    source.add_argument("--base", type=base_model,
                        help="a base Stable Diffusion 1.x model (diffusers folder, .safetensors/.ckpt file "
                             "or hub ORG/NAME): export a base ENGINE_DIR for per-video packs "
                             "(needs --frames, --height, --width)")
    parser.add_argument("--pack-for", metavar="BASE_DIR", type=flags.existing_dir("a base ENGINE_DIR"),
                        help="with --weights: write the video's pack for this base "
                             "ENGINE_DIR to --out NAME.tavpack instead of an ENGINE_DIR")
    parser.add_argument("--out", required=True, type=flags.out_path("the ENGINE_DIR to create (or NAME.tavpack)"),
                        help="ENGINE_DIR to create (must not exist, or be empty), or NAME.tavpack with --pack-for")
    parser.add_argument("--frames", type=flags.positive_int(MAX_FRAMES),
                        help="frame count (default: the run's; must match its inverted latents)")
    parser.add_argument("--temporal-window", type=flags.positive_int(MAX_FRAMES), metavar="W",
                        help="frames each frame's temporal attention sees, 1..F, baked into the graphs "
                             "(default: the run's window from run.json, the frame count it was tuned on; "
                             "--base: F, full attention)")
    parser.add_argument("--height", type=flags.multiple_of_8(),
                        help="video height in pixels, a multiple of 8 (default: the run's)")
    parser.add_argument("--width", type=flags.multiple_of_8(),
                        help="video width in pixels, a multiple of 8 (default: the run's)")
    parser.add_argument("--precision", choices=("fp32", "fp16"),
                        help="fp16: half-precision graphs and I/O (timestep stays fp32, norms compute in fp32); "
                             "default fp32")
    parser.add_argument("--backend", choices=("onnx", "tensorrt", "all"), default="onnx",
                        help="onnx: ONNX graphs only; tensorrt: also a TensorRT plan per graph "
                             "(the graphs stay: plans are built from them and the manifest pins them); "
                             "all: tensorrt where a GPU is present, "
                             "else onnx (plans run only on a GPU; name tensorrt to build them anyway)")
    # torch's exporter supports fewer: the exporter checks its own bound (torch needed to know it)
    parser.add_argument("--opset", type=flags.whole(17, 99), default=17, help="ONNX opset, 17 or newer (default 17)")
    parser.add_argument("--kv-gather", choices=("onnx", "plugin"), default="onnx",
                        help="sparse-causal KV gather as standard ops (default) or as cpp_ext's KVGather plugin node")
    parser.add_argument("--attention", choices=("fused", "standard"), default="fused",
                        help="fused (default): ONNX Runtime graphs run each attention as one MultiHeadAttention node "
                             "(flash attention, no score tensor); TensorRT plans are built from a standard-op twin. "
                             "standard: one plain MatMul-Softmax-MatMul graph for every consumer")
    parser.add_argument("--optimization-level", type=flags.whole(0, 5), default=3,
                        help="TensorRT builder optimisation level 0-5 (default 3)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing ENGINE_DIR at --out "
                             "(refused if the folder holds anything its manifest does not list), "
                             "or an existing pack with --pack-for")
    parser.add_argument("--allow-base-mismatch", action="store_true",
                        help="export even if the SD folder differs from the one the run was tuned on "
                             "(run.json's hash); the tuned weights then sit on another base model")
    parser.add_argument("--clean-stale", action="store_true",
                        help="only remove hidden .<out>.partial-*/.old-* folders left next to --out by killed exports "
                             "(those whose process is gone), then exit")
    parser.add_argument("--quiet", action="store_true", help="no per-stage progress lines")
    return parser


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


def run(args):
    level = logging.WARNING if args.quiet else logging.INFO
    # Our stage lines from INFO up, other libraries' only from WARNING up (torch logs cache statistics at INFO
    # when the process exits, which shows after an interrupt that cut its import short).
    logging.basicConfig(level=logging.WARNING, format="tav-export: %(message)s", stream=sys.stderr)
    for name in ("tav", "tav.export"):  # also where logging was set up before (a host program, tests)
        logging.getLogger(name).setLevel(level)
    if args.clean_stale:
        return clean_stale(args.out)
    if not (args.weights or args.base):
        raise UsageError("one of --weights RUN_DIR or --base MODEL is required (or --clean-stale)")
    # This process is the exporter's own: large blocks go back to the system as soon as they are freed.
    map_large_blocks()
    # The ENGINE_DIR is swapped in with signals held, so Ctrl-C (exit 130) always comes before it: nothing written.
    import diffusers
    import onnxruntime
    import transformers

    # Library chatter (progress bars, per-node warnings) would drown the stage lines.
    onnxruntime.set_default_logger_severity(3)
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from .pipeline import export_engine

    if args.pack_for:
        out = _write_pack(args)
    else:
        out = export_engine(
            args.weights or args.base, args.out, args.frames, args.height, args.width, args.precision or "fp32",
            _backend_for_this_machine(args.backend),
            args.opset, args.kv_gather, attention=args.attention, optimization_level=args.optimization_level,
            overwrite=args.overwrite, allow_base_mismatch=args.allow_base_mismatch, base=args.base is not None,
            temporal_window=args.temporal_window, plugin_library=os.environ.get(PLUGIN_ENV),
        )
    print(out)


def _backend_for_this_machine(backend: str) -> str:
    """``all`` means what this machine can run: TensorRT plans only where a GPU is (docs/CONTRACTS.md, README)."""
    from tav.runtime.cuda_rt import gpu_count

    if backend != "all" or gpu_count():
        return backend
    logging.getLogger("tav.export").warning(
        "no GPU here: --backend all writes the ONNX graphs only; TensorRT plans need a GPU to run "
        "(--backend tensorrt builds them anyway, e.g. with tensorrt-rtx for another machine)")
    return "onnx"


def _write_pack(args):
    from .pack_writer import write_pack

    if args.base:
        raise UsageError("--pack-for takes --weights RUN_DIR (the tuned video), not --base")
    fixed = [f"--{name.replace('_', '-')}" for name in ("frames", "height", "width", "precision", "temporal_window")
             if getattr(args, name) is not None]
    if fixed:
        raise UsageError(f"{', '.join(fixed)}: a pack takes frames, size and precision (and the temporal window) "
                          f"from its base {args.pack_for}; drop them")
    return write_pack(args.weights, args.pack_for, args.out, overwrite=args.overwrite)


def clean_stale(out):
    from .stale_exports import clean, leftovers

    try:
        done = clean(out)
    except OSError as err:
        raise RuntimeError(f"cannot clean next to {out}: {err.strerror or err}") from None
    for line in done:
        print(f"tav-export: {line}")
    for path, state in leftovers(out):  # what is left was not provably abandoned
        why = ("its export is running" if state == "in use"
               else "no owner recorded; remove it by hand if no export runs")
        print(f"tav-export: kept {path} ({why})")


if __name__ == "__main__":
    main()
