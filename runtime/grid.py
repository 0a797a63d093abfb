"""tav-grid: put videos one above the other in one video, to compare them by eye (e.g. tav-sample's and tav-run's).

Reads what tav-run and tav-sample write (runtime/video_reading.py) and writes with ``write_video``; torch-free.
The videos must have the same frame count and size: rows are stacked as they are, never resized.
"""

import numpy as np

from . import flag_types as flags
from .command import CommandParser, run_command
from .video_output import MAX_FPS, MIN_FPS

PROG = "tav-grid"


def stack_rows(videos: list, names: list) -> np.ndarray:
    """uint8 [F, sum of H, W, 3]: each video [F, H, W, 3] a row, the first on top; one-line ValueError on a mismatch."""
    shapes = [video.shape[:3] for video in videos]
    if len(set(shapes)) > 1:
        described = ", ".join(f"{name}: {f} frames {w}x{h}" for name, (f, h, w) in zip(names, shapes, strict=True))
        raise ValueError(f"the videos differ in frame count or size ({described}); "
                         "rows are stacked as they are, so give videos of one frame count and size")
    return np.concatenate(videos, axis=1)


def build_parser() -> CommandParser:
    parser = CommandParser(PROG, __doc__)
    parser.add_argument("videos", nargs="+", metavar="VIDEO",
                        type=flags.existing_file_or_dir("a .gif, .mp4 or .npy file or a folder of PNG frames"),
                        help=".gif, .mp4, .npy or a folder of PNG frames; each becomes a row, the first on top")
    parser.add_argument("--out", required=True, type=flags.out_path("a .gif, .mp4 or .npy file or a folder"),
                        help=".gif, .mp4, .npy or a folder for PNG frames")
    parser.add_argument("--fps", type=flags.finite_float(MIN_FPS, MAX_FPS), default=8,
                        help="frames per second of .mp4/.gif")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def run(args):
    from .video_output import check_output_path, write_video
    from .video_reading import read_video

    check_output_path(args.out, args.overwrite, "--out")  # before reading: a bad --out fails at once
    grid = stack_rows([read_video(path) for path in args.videos], args.videos)
    print(write_video(grid, args.out, fps=args.fps, overwrite=args.overwrite))


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    main()
