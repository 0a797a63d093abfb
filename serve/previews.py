"""A video's preview: a small gif of the frames a tuning job tuned on, shown in listings (the studio's gallery)."""

import numpy as np
from PIL import Image

from tav.runtime.video_output import write_video

PREVIEW_SIDE = 192  # pixels on the longer side: a gallery tile, a few hundred KB at most for 24 frames
PREVIEW_FPS = 8  # the official GIFs' rate


def write_preview(pixels: np.ndarray, path) -> None:
    """``pixels``: the tuner's float [F, 3, H, W] in [-1, 1] (tav.tuner.tuning.video_input.load_clip).

    Written atomically (write_video renames a temp file into place), so a listing never reads half a gif.
    """
    frames = np.clip((pixels.transpose(0, 2, 3, 1) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    height, width = frames.shape[1:3]
    scale = min(1.0, PREVIEW_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1:
        frames = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS)) for f in frames])
    write_video(frames, path, fps=PREVIEW_FPS, overwrite=True)
