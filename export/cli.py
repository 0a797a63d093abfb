"""``tav-export``: tuned weights (RUN_DIR or official Tune-A-Video output) -> ENGINE_DIR of ONNX graphs/TensorRT plans.

Many videos on one base: ``--base MODEL`` exports a base ENGINE_DIR whose UNet takes the tuned
tensors as inputs, and ``--weights RUN_DIR --pack-for BASE_DIR --out NAME.tavpack`` writes a video's pack.
"""

import argparse
import logging
import os
import sys

from tav.runtime.help_format import DefaultsHelpFormatter
from tav.runtime.host_memory import map_large_blocks
from tav.runtime.one_line import first_line
from tav.runtime.plugin_library import PLUGIN_ENV
from tav.tuner.cli.common import quiet_environment


def build_parser() -> argparse.ArgumentParser:
    summary = __doc__.split(": ", 1)[1].split("\n")[0]
    parser = argparse.ArgumentParser(prog="tav-export", description=summary[0].upper() + summary[1:],
                                     formatter_class=DefaultsHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--weights", help="RUN_DIR from tav-tune, or an official Tune-A-Video output folder "
                                          "(required unless --base or --clean-stale)")
    source.add_argument("--base", help="a base Stable Diffusion 1.x model (diffusers folder, .safetensors/.ckpt file "
                                       "or hub ORG/NAME): export a base ENGINE_DIR for per-video packs "
                                       "(needs --frames, --height, --width)")
    parser.add_argument("--pack-for", metavar="BASE_DIR",
                        help="with --weights: write the video's pack for this base "
                             "ENGINE_DIR to --out NAME.tavpack instead of an ENGINE_DIR")
    parser.add_argument("--out", required=True,
                        help="ENGINE_DIR to create (must not exist, or be empty), or NAME.tavpack with --pack-for")
    parser.add_argument("--frames", type=int, help="frame count (default: the run's; must match its inverted latents)")
    parser.add_argument("--temporal-window", type=int, metavar="W",
                        help="frames each frame's temporal attention sees, 1..F, baked into the graphs "
                             "(default: the run's window from run.json, the frame count it was tuned on; "
                             "--base: F, full attention)")
    parser.add_argument("--height", type=int, help="video height in pixels, a multiple of 8 (default: the run's)")
    parser.add_argument("--width", type=int, help="video width in pixels, a multiple of 8 (default: the run's)")
    parser.add_argument("--precision", choices=("fp32", "fp16"),
                        help="fp16: half-precision graphs and I/O (timestep stays fp32, norms compute in fp32); "
                             "default fp32")
    parser.add_argument("--backend", choices=("onnx", "tensorrt", "all"), default="onnx",
                        help="onnx: ONNX graphs only; tensorrt: also a TensorRT plan per graph "
                             "(the graphs stay: plans are built from them and the manifest pins them); "
                             "all: tensorrt where a GPU is present, "
                             "else onnx (plans run only on a GPU; name tensorrt to build them anyway)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    parser.add_argument("--kv-gather", choices=("onnx", "plugin"), default="onnx",
                        help="sparse-causal KV gather as standard ops (default) or as cpp_ext's KVGather plugin node")
    parser.add_argument("--attention", choices=("fused", "standard"), default="fused",
                        help="fused (default): ONNX Runtime graphs run each attention as one MultiHeadAttention node "
                             "(flash attention, no score tensor); TensorRT plans are built from a standard-op twin. "
                             "standard: one plain MatMul-Softmax-MatMul graph for every consumer")
    parser.add_argument("--optimization-level", type=int, default=3,
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


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="tav-export: %(message)s", stream=sys.stderr)
    logging.getLogger("tav.export").setLevel(level)  # also where logging was set up before (a host program, tests)
    if args.clean_stale:
        return clean_stale(args.out)
    if not (args.weights or args.base):
        parser.error("one of the arguments --weights --base is required")
    quiet_environment()
    # This process is the exporter's own: large blocks go back to the system as soon as they are freed.
    map_large_blocks()
    try:
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
    except KeyboardInterrupt:  # the ENGINE_DIR is swapped in with signals held, so an interrupt came before it
        print("tav-export: error: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)
    except (OSError, ValueError, RuntimeError) as err:
        # ExportError, ParityError, TensorRTError, GraphError, load errors
        message = first_line(err, None)
        sys.exit(f"tav-export: error: {message}")
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
    from .errors import ExportError
    from .pack_writer import write_pack

    if args.base:
        raise ExportError("--pack-for takes --weights RUN_DIR (the tuned video), not --base")
    fixed = [f"--{name.replace('_', '-')}" for name in ("frames", "height", "width", "precision", "temporal_window")
             if getattr(args, name) is not None]
    if fixed:
        raise ExportError(f"{', '.join(fixed)}: a pack takes frames, size and precision (and the temporal window) "
                          f"from its base {args.pack_for}; drop them")
    return write_pack(args.weights, args.pack_for, args.out, overwrite=args.overwrite)


def clean_stale(out):
    from .stale_exports import clean, leftovers

    try:
        done = clean(out)
    except OSError as err:
        sys.exit(f"tav-export: error: cannot clean next to {out}: {err.strerror or err}")
    for line in done:
        print(f"tav-export: {line}")
    for path, state in leftovers(out):  # what is left was not provably abandoned
        why = ("its export is running" if state == "in use"
               else "no owner recorded; remove it by hand if no export runs")
        print(f"tav-export: kept {path} ({why})")


if __name__ == "__main__":
    main()
