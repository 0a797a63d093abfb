"""``tav-invert``: invert a clip of any length with tuned weights, into a new RUN_DIR for tav-sample / tav-export.

The new RUN_DIR holds the run's tuned weights (unchanged) and the N-frame DDIM-inverted latents of
``--video``; tav-sample, tav-export and packs take it like any RUN_DIR. N may be more or fewer frames
than the run was tuned on; temporal attention then sees a window of the tuned frame count around each
frame (``--temporal-window`` sets another, 1..N; N is full attention).
"""

from tav.runtime import flag_types as flags
from tav.runtime.command import CommandParser, run_command
from tav.runtime.flag_types import MAX_FRAMES
from tav.runtime.sampling_limits import MAX_DDIM_STEPS

from .flags import torch_device

PROG = "tav-invert"


def build_parser() -> CommandParser:
    p = CommandParser(PROG, __doc__)
    a = p.add_argument
    a("--weights", required=True, metavar="RUN_DIR", type=flags.existing_dir("a RUN_DIR or an official output folder"),
      help="RUN_DIR from tav-tune (or tav-invert), or an official Tune-A-Video output folder")
    a("--video", required=True, metavar="CLIP", type=flags.existing_file_or_dir("a video file or a folder of images"),
      help="clip to invert: mp4/webm/mov/gif or a folder of images "
      "(resized and centre-cropped to the run's size, as tav-tune does)")
    a("--frames", required=True, type=flags.positive_int(MAX_FRAMES),
      help="frames to take from the clip: the new run's frame count N")
    a("--stride", type=flags.positive_int(MAX_FRAMES), help="take every S-th frame (default: the run's, else 2)")
    a("--start", type=flags.non_negative_int(100 * MAX_FRAMES), help="first frame index (default: the run's, else 0)")
    a("--out", required=True, metavar="NEW_RUN_DIR", type=flags.out_path("the new RUN_DIR's path", "folder"),
      help="RUN_DIR to create (must not exist, or be empty)")
    a("--temporal-window", type=flags.positive_int(MAX_FRAMES), metavar="W",
      help="frames each frame's temporal attention sees, 1..N "
      "(default: the frame count the weights were tuned on, at most N)")
    a("--inversion-steps", type=flags.positive_int(MAX_DDIM_STEPS),
      help="DDIM inversion steps (default: the run's, else 50)")
    a("--height", type=flags.multiple_of_8(),
      help="must equal the run's height if given (clips are inverted at the tuned size)")
    a("--width", type=flags.multiple_of_8(), help="must equal the run's width if given")
    a("--device", default="auto", type=torch_device, help="auto (default), cpu, cuda, cuda:N")
    a("--quiet", action="store_true", help="no stage lines or progress bar on stderr")
    return p


def run(args):
    from ..progress import Progress
    from ..tuning.invert_clip import invert_run  # torch: after parsing, so --help answers at once
    from .library_noise import quiet_loaded_libraries

    quiet_loaded_libraries()
    print(invert_run(args.weights, args.video, args.frames, args.out, args.stride, args.start, args.temporal_window,
                     args.inversion_steps, args.height, args.width, args.device, shown=Progress(PROG, not args.quiet)))


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    main()
