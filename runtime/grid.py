"""tav-grid: put videos one above the other in one video, to compare them by eye (e.g. tav-sample's and tav-run's).

Reads what tav-run and tav-sample write (runtime/video_reading.py) and writes with ``write_video``; torch-free.
The videos must have the same frame count and size: rows are stacked as they are, never resized.
"""

import argparse
import sys

import numpy as np

from .help_format import DefaultsHelpFormatter


def stack_rows(videos: list, names: list) -> np.ndarray:
    """uint8 [F, sum of H, W, 3]: each video [F, H, W, 3] a row, the first on top; one-line ValueError on a mismatch."""
    shapes = [video.shape[:3] for video in videos]
    if len(set(shapes)) > 1:
        described = ", ".join(f"{name}: {f} frames {w}x{h}" for name, (f, h, w) in zip(names, shapes, strict=True))
        raise ValueError(f"the videos differ in frame count or size ({described}); "
                         "rows are stacked as they are, so give videos of one frame count and size")
    return np.concatenate(videos, axis=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tav-grid", description=__doc__.splitlines()[0].split(": ", 1)[1],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("videos", nargs="+", metavar="VIDEO",
                        help=".gif, .mp4, .npy or a folder of PNG frames; each becomes a row, the first on top")
    parser.add_argument("--out", required=True, help=".gif, .mp4, .npy or a folder for PNG frames")
    parser.add_argument("--fps", type=float, default=8, help="frames per second of .mp4/.gif")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .video_output import check_fps, check_output_path, write_video
    from .video_reading import read_video

    try:
        check_output_path(args.out, args.overwrite)  # before reading: a bad --out fails at once
        check_fps(args.fps)
        grid = stack_rows([read_video(path) for path in args.videos], args.videos)
        path = write_video(grid, args.out, fps=args.fps, overwrite=args.overwrite)
    except (ValueError, OSError) as err:  # VideoReadError, VideoOutputError and a mismatch are ValueErrors
        sys.exit(f"tav-grid: error: {' '.join(str(err).split())}")
    print(path)


if __name__ == "__main__":
    main()
