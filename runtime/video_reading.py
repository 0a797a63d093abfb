"""Reading a video back: what ``write_video`` writes (.gif, .mp4, .npy, a folder of PNGs) -> uint8 [F, H, W, 3].

numpy + imageio only, as the writer (runtime/video_output.py). An .mp4 needs a decoder: imageio-ffmpeg (the tune
and serve extras bring it) or PyAV (the ``video`` extra). GIF frames come back as the GIF stores them: quantised
to its palette, so a GIF round trip is close to the frames written, not equal.
"""

import importlib.util
import re
from pathlib import Path

import numpy as np

from .command import first_line

MOVIE_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")
READABLE = ".gif, .mp4, .npy or a folder of PNG frames"
NO_DECODER = ("reading .mp4 needs a decoder: pip install imageio-ffmpeg, or 'tav-runtime[video]' (PyAV); "
              f"or give {READABLE.replace('.mp4, ', '')}")


class VideoReadError(ValueError):
    """A video that cannot be read; the message is one line saying what to do."""


def read_video(path) -> np.ndarray:
    """uint8 frames [F, H, W, 3] of the video at ``path``; VideoReadError in one line if it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise VideoReadError(f"{path} does not exist; give {READABLE}")
    suffix = path.suffix.lower()
    if not path.is_dir() and suffix not in (".gif", ".npy", *MOVIE_SUFFIXES):
        raise VideoReadError(f"cannot read {path}: unknown suffix {suffix!r}; give {READABLE}")
    try:
        if path.is_dir():
            frames = _read_png_folder(path)
        elif suffix == ".npy":
            frames = np.load(path, allow_pickle=False)
        elif suffix == ".gif":
            import imageio.v3 as iio

            frames = np.stack(list(iio.imiter(path, plugin="pillow", mode="RGB")))
        else:
            frames = _read_movie(path)
    except VideoReadError:
        raise
    except Exception as err:  # numpy, pillow and ffmpeg raise many types for unreadable data
        raise VideoReadError(f"cannot read {path}: {first_line(err, with_type=True)}") from None
    return _checked(frames, path)


def _read_movie(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        frames = list(iio.imiter(path, plugin="FFMPEG"))
    elif importlib.util.find_spec("av") is not None:
        frames = list(iio.imiter(path, plugin="pyav", format="rgb24"))
    else:
        raise VideoReadError(NO_DECODER)
    if not frames:
        raise VideoReadError(f"cannot read {path}: no video frames in it")
    return np.stack(frames)


def _natural_key(file: Path) -> list:
    """frame_2 before frame_10: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", file.name)]


def _read_png_folder(folder: Path) -> np.ndarray:
    import imageio.v3 as iio

    files = sorted((f for f in folder.iterdir() if f.suffix.lower() == ".png"), key=_natural_key)
    if not files:
        raise VideoReadError(f"{folder} holds no .png frames; give {READABLE}")
    frames = [iio.imread(f, plugin="pillow", mode="RGB") for f in files]
    sizes = sorted({f"{frame.shape[1]}x{frame.shape[0]}" for frame in frames})
    if len(sizes) > 1:
        raise VideoReadError(f"the PNG frames in {folder} differ in size ({', '.join(sizes)})")
    return np.stack(frames)


def _checked(frames, path: Path) -> np.ndarray:
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
            and frames.shape[-1] == 3 and 0 not in frames.shape):
        shape, dtype = getattr(frames, "shape", None), getattr(frames, "dtype", type(frames).__name__)
        raise VideoReadError(f"{path} holds {dtype} of shape {shape}, not uint8 frames [F, H, W, 3] "
                             "(what tav-run and tav-sample write)")
    return frames
