"""``tav-make-clip``: a small synthetic clip (a coloured disc crossing a gradient) so the demo needs no data.

Made with numpy only; the motion is smooth and clearly temporal, which is what
Tune-A-Video's temporal layers learn from.
"""

import numpy as np

from tav.runtime import flag_types as flags
from tav.runtime.command import CommandParser, run_command
from tav.runtime.video_output import MAX_FPS, MIN_FPS, check_output_path, write_video

MAX_FRAMES, MAX_SIZE = 1000, 512  # a demo clip: at most 786 MB of pixels in memory


def make_clip(frames: int = 24, size: int = 128, seed: int = 0) -> np.ndarray:
    """uint8 [frames, size, size, 3]: a disc moving left to right on a bobbing arc over a fixed gradient."""
    if frames < 1 or size < 8:
        raise ValueError(f"need frames >= 1 and size >= 8, got frames={frames}, size={size}")
    rng = np.random.default_rng(seed)
    disc_colour, top, bottom = rng.uniform(0, 255, (3, 3))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    background = top * (1 - y[..., None]) + bottom * y[..., None]  # vertical gradient, a "sky" to "ground"
    radius = size / 8
    clip = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        progress = i / max(frames - 1, 1)
        cx = size * (0.15 + 0.7 * progress)
        cy = size * (0.55 - 0.25 * np.sin(np.pi * progress))
        inside = ((x * size - cx) ** 2 + (y * size - cy) ** 2) <= radius**2
        frame = background.copy()
        frame[inside] = disc_colour
        clip[i] = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    return clip


def build_parser() -> CommandParser:
    p = CommandParser("tav-make-clip", __doc__)
    p.add_argument("out", type=flags.out_path("a .mp4, .gif or .npy file or a folder"),
                   help="output video: .mp4, .gif, .npy or a folder of PNGs")
    p.add_argument("--frames", type=flags.positive_int(MAX_FRAMES), default=24)
    p.add_argument("--size", type=flags.whole(8, MAX_SIZE), default=128, help="width and height in pixels")
    p.add_argument("--seed", type=flags.seed, default=0, help="picks the colours")
    p.add_argument("--fps", type=flags.finite_float(MIN_FPS, MAX_FPS), default=8)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p


def run(args):
    check_output_path(args.out, args.overwrite, "out")
    print(write_video(make_clip(args.frames, args.size, args.seed), args.out, fps=args.fps, overwrite=args.overwrite))


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    main()
