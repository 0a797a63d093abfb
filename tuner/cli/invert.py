"""``tav-invert``: invert a clip of any length with tuned weights, into a new RUN_DIR for tav-sample / tav-export.

The new RUN_DIR holds the run's tuned weights (unchanged) and the N-frame DDIM-inverted latents of
``--video``; tav-sample, tav-export and packs take it like any RUN_DIR. N may be more or fewer frames
than the run was tuned on; temporal attention then sees a window of the tuned frame count around each
frame (``--temporal-window`` sets another, 1..N; N is full attention).
"""

import argparse

from tav.runtime.help_format import DefaultsHelpFormatter

from .common import run_cli

PROG = "tav-invert"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].replace("``", ""),
                                formatter_class=DefaultsHelpFormatter)
    a = p.add_argument
    a("--weights", required=True, metavar="RUN_DIR",
      help="RUN_DIR from tav-tune (or tav-invert), or an official Tune-A-Video output folder")
    a("--video", required=True, metavar="CLIP",
      help="clip to invert: mp4/webm/mov/gif or a folder of images "
      "(resized and centre-cropped to the run's size, as tav-tune does)")
    a("--frames", required=True, type=int, help="frames to take from the clip: the new run's frame count N")
    a("--stride", type=int, help="take every S-th frame (default: the run's, else 2)")
    a("--start", type=int, help="first frame index (default: the run's, else 0)")
    a("--out", required=True, metavar="NEW_RUN_DIR", help="RUN_DIR to create (must not exist, or be empty)")
    a("--temporal-window", type=int, metavar="W", help="frames each frame's temporal attention sees, 1..N "
      "(default: the frame count the weights were tuned on, at most N)")
    a("--inversion-steps", type=int, help="DDIM inversion steps (default: the run's, else 50)")
    a("--height", type=int, help="must equal the run's height if given (clips are inverted at the tuned size)")
    a("--width", type=int, help="must equal the run's width if given")
    a("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    a("--quiet", action="store_true", help="no stage lines or progress bar on stderr")
    return p


def main_args(argv=None):
    args = build_parser().parse_args(argv)
    from ..progress import Progress
    from ..tuning.invert_clip import invert_run  # torch: after parsing, so --help answers at once

    print(invert_run(args.weights, args.video, args.frames, args.out, args.stride, args.start, args.temporal_window,
                     args.inversion_steps, args.height, args.width, args.device, shown=Progress(PROG, not args.quiet)))


def main(argv=None):
    return run_cli(PROG, main_args, argv)


if __name__ == "__main__":
    main()
