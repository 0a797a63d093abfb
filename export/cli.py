"""``tav-export``: tuned weights (RUN_DIR or an official Tune-A-Video output) -> ENGINE_DIR of ONNX graphs / TensorRT plans.

Many videos on one base: ``--base SD_FOLDER`` exports a base ENGINE_DIR whose UNet takes the tuned
tensors as inputs, and ``--weights RUN_DIR --pack-for BASE_DIR --out NAME.tavpack`` writes a video's pack.
"""

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    summary = __doc__.split(": ", 1)[1].split("\n")[0]
    parser = argparse.ArgumentParser(prog="tav-export", description=summary[0].upper() + summary[1:])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="RUN_DIR from tav-tune, or an official Tune-A-Video output folder")
    source.add_argument("--base", help="a base Stable Diffusion 1.x folder: export a base ENGINE_DIR for per-video packs "
                                       "(needs --frames, --height, --width)")
    parser.add_argument("--pack-for", metavar="BASE_DIR", help="with --weights: write the video's pack for this base "
                                                                "ENGINE_DIR to --out NAME.tavpack instead of an ENGINE_DIR")
    parser.add_argument("--out", required=True, help="ENGINE_DIR to create (must not exist, or be empty), or NAME.tavpack with --pack-for")
    parser.add_argument("--frames", type=int, help="frame count (default: the run's; must match its inverted latents)")
    parser.add_argument("--height", type=int, help="video height in pixels, a multiple of 8 (default: the run's)")
    parser.add_argument("--width", type=int, help="video width in pixels, a multiple of 8 (default: the run's)")
    parser.add_argument("--precision", choices=("fp32", "fp16"),
                        help="fp16: half-precision graphs and I/O (timestep stays fp32, norms compute in fp32); default fp32")
    parser.add_argument("--backend", choices=("onnx", "tensorrt", "all"), default="onnx",
                        help="onnx: ONNX graphs only; tensorrt or all: also a TensorRT plan per graph "
                             "(the graphs stay: plans are built from them and the manifest pins them)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    parser.add_argument("--kv-gather", choices=("onnx", "plugin"), default="onnx",
                        help="sparse-causal KV gather as standard ops (default) or as cpp_ext's KVGather plugin node")
    parser.add_argument("--attention", choices=("fused", "standard"), default="fused",
                        help="fused (default): ONNX Runtime graphs run each attention as one MultiHeadAttention node "
                             "(flash attention, no score tensor); TensorRT plans are built from a standard-op twin. "
                             "standard: one plain MatMul-Softmax-MatMul graph for every consumer")
    parser.add_argument("--optimization-level", type=int, default=3, help="TensorRT builder optimisation level 0-5 (default 3)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing ENGINE_DIR (or pack) at --out")
    parser.add_argument("--quiet", action="store_true", help="no per-stage progress lines")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="tav-export: %(message)s", stream=sys.stderr)
    try:
        import onnxruntime

        import diffusers
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
                args.weights or args.base, args.out, args.frames, args.height, args.width, args.precision or "fp32", args.backend,
                args.opset, args.kv_gather, attention=args.attention, optimization_level=args.optimization_level,
                overwrite=args.overwrite, base=args.base is not None,
            )
    except KeyboardInterrupt:
        sys.exit("tav-export: interrupted; nothing was written")
    except (OSError, ValueError, RuntimeError) as err:  # ExportError, ParityError, TensorRTError, GraphError, load errors
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        sys.exit(f"tav-export: error: {message}")
    print(out)


def _write_pack(args):
    from .errors import ExportError
    from .pack_writer import write_pack

    if args.base:
        raise ExportError("--pack-for takes --weights RUN_DIR (the tuned video), not --base")
    fixed = [f"--{name}" for name in ("frames", "height", "width", "precision") if getattr(args, name) is not None]
    if fixed:
        raise ExportError(f"{', '.join(fixed)}: a pack takes frames, size and precision from its base {args.pack_for}; drop them")
    return write_pack(args.weights, args.pack_for, args.out, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
