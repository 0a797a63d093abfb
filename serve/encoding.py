"""Generated frames -> response bytes: mp4, gif or npy, through the runtime's own video writer."""

import tempfile
from pathlib import Path

from tav.runtime.video_output import write_video

MEDIA_TYPES = {"mp4": "video/mp4", "gif": "image/gif", "npy": "application/x-npy"}


def encode_frames(frames, fmt: str, fps: float) -> bytes:
    """uint8 [F, H, W, 3] -> the bytes of an .mp4 / .gif / .npy file (npy: exact frames, for clients that compare)."""
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"format must be one of {', '.join(MEDIA_TYPES)}, got {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="tav-serve-") as folder:
        return Path(write_video(frames, Path(folder) / f"video.{fmt}", fps=fps)).read_bytes()
