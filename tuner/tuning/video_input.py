"""Reading the clip to tune on: a video file (mp4/webm/mov/gif) or a folder of images -> pixels in [-1, 1].

Frames ``start + stride * k`` (k < frames) are taken, each resized so its
shorter side fits the target (aspect kept) and centre-cropped to H x W.
The official code instead squashes every frame to H x W (decord's resize),
which distorts non-square clips; on square clips (all official examples) the
two agree up to the resampling filter.

Video files are decoded in order and decoding stops at the last needed frame,
so a long clip costs only what the request reaches; a request past the clip's end is refused
from its length before any frame is decoded. Only regular files are opened (a FIFO would block).
"""

import re
import stat
from pathlib import Path

import numpy as np
from PIL import Image

from tav.runtime.command import first_line
from tav.runtime.regular_files import NotRegularFile, describe_kind, open_regular

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class VideoInputError(ValueError):
    """A clip that cannot be used as asked; the message is one line saying what to do."""


def check_size(height: int, width: int):
    if not (_is_int(height) and _is_int(width) and height > 0 and width > 0 and not height % 8 and not width % 8):
        raise VideoInputError(
            f"height and width must be positive multiples of 8 (the VAE downsamples by 8), got {height!r}x{width!r}"
        )


def load_clip(path, frames: int, height: int, width: int, stride: int = 1, start: int = 0) -> np.ndarray:
    """float32 [F, 3, H, W] in [-1, 1]: frames start + stride * k of the clip, resized and centre-cropped."""
    check_size(height, width)
    if not (_is_int(frames) and _is_int(stride) and _is_int(start) and frames >= 1 and stride >= 1 and start >= 0):
        raise VideoInputError(f"need integers frames >= 1, stride >= 1, start >= 0; "
                              f"got frames={frames!r}, stride={stride!r}, start={start!r}")
    # A range, not a list: 10**9 frames asked of a 20-frame clip cost nothing before the clip refuses them.
    wanted = range(start, start + stride * frames, stride)
    raw = read_frames(Path(path), wanted)
    pixels = np.stack([resize_and_crop(frame, height, width) for frame in raw]).astype(np.float32)
    return (pixels / np.float32(127.5) - 1).transpose(0, 3, 1, 2).copy()


def read_frames(path: Path, indices) -> list:
    """uint8 RGB frames [h, w, 3] at ``indices`` (increasing: a range or a list) of a video file or an image folder.

    Nothing that is not a regular file is opened (a FIFO would block, a device never end), and a clip
    shorter than the frames asked is refused from a cheap count before any frame is decoded.
    """
    if not path.exists():
        raise VideoInputError(f"{path} does not exist; pass a video file (mp4/webm/mov/gif) or a folder of images")
    if path.is_dir():
        return _read_image_folder(path, indices)
    _refuse_special(path)
    _refuse_past_the_end(path, indices)
    frames, seen = {}, 0
    try:
        for i, frame in enumerate(_iter_video(path)):
            seen = i + 1
            if i in indices:
                frames[i] = _to_rgb(frame)
            if i >= indices[-1]:
                break
    except VideoInputError:
        raise
    except Exception as err:  # imageio/ffmpeg/pillow raise many types for undecodable data
        raise VideoInputError(f"cannot decode {path}: {first_line(err, with_type=True)}; "
                              "pass an mp4/webm/mov/gif video or a folder of images") from None
    if seen == 0:
        raise VideoInputError(f"cannot decode {path}: no video frames found; "
                              "pass an mp4/webm/mov/gif video or a folder of images")
    if len(frames) < len(indices):
        raise _too_few(path, seen, indices)
    return [frames[i] for i in indices]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_special(path: Path) -> None:
    """VideoInputError unless ``path`` is a regular file (stat follows links and never blocks, unlike open)."""
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise VideoInputError(f"{path} is {describe_kind(mode)}, not a regular file; "
                              "pass a video file (mp4/webm/mov/gif) or a folder of images")


def _refuse_past_the_end(path: Path, indices) -> None:
    """Refuse a request that ends past the clip's last frame, from its header's length (no frame decoded).

    The header's duration x fps is an estimate, so past it the container's frames are counted exactly
    (ffmpeg copies packets, decoding nothing). Any failure here leaves the decoder to say what is wrong.
    """
    last = indices[-1]
    try:
        if path.suffix.lower() == ".gif":
            with Image.open(path) as image:
                count = image.n_frames
        else:
            import imageio.v3 as iio

            meta = iio.immeta(path, plugin="FFMPEG")
            estimate = float(meta.get("duration") or 0) * float(meta.get("fps") or 0)
            if last < estimate * 1.02 + 2:
                return
            import imageio_ffmpeg

            count, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception:  # undecodable, or no header length: the decoding loop reports it
        return
    if last >= count:
        raise _too_few(path, count, indices)


def resize_and_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale so the frame covers H x W with its aspect kept, then take the centre H x W."""
    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    image = Image.fromarray(frame)
    if (new_h, new_w) != (h, w):
        # PIL's bicubic widens its kernel when shrinking, so downscaling is antialiased.
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.asarray(image)[top : top + height, left : left + width]


def _iter_video(path: Path):
    import imageio.v3 as iio

    if path.suffix.lower() == ".gif":
        yield from iio.imiter(path, plugin="pillow", mode="RGB")
    else:
        # The ffmpeg plugin streams frames from a subprocess; leaving the loop early stops it.
        yield from iio.imiter(path, plugin="FFMPEG")


def _read_image_folder(path: Path, indices: range) -> list:
    files = sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not files:
        raise VideoInputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                              "pass a video file or a folder of frames")
    if indices[-1] >= len(files):
        raise _too_few(path, len(files), indices)
    for i in indices:
        _refuse_special(files[i])
    frames = [_read_image_rgb(files[i]) for i in indices]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise VideoInputError(f"images in {path} differ in size ({', '.join(map(str, sorted(sizes)))}); "
                              "use frames of one size")
    return frames


def _read_image_rgb(path: Path) -> np.ndarray:
    """uint8 RGB [h, w, 3] of an 8-bit image in any colour mode (grey, grey+alpha, palette, RGBA, CMYK, YCbCr).

    PIL converts by the mode's meaning; keeping "the first three channels" would read CMYK's C, M, Y
    as R, G, B and give grey+alpha two channels."""
    try:
        with open_regular(path) as file, Image.open(file) as image:
            image.load()
            if image.mode.startswith(("I", "F")):  # 16/32-bit integer or float pixels
                raise VideoInputError(f"{path} has {image.mode} pixels; frames must be 8-bit images")
            return np.asarray(image.convert("RGB"))
    except VideoInputError:
        raise
    except NotRegularFile as err:
        raise VideoInputError(f"{err}: frames must be image files") from None
    except Exception as err:  # PIL raises many types for undecodable data
        raise VideoInputError(f"cannot decode {path}: {first_line(err, with_type=True)}") from None


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """A decoded video frame (the decoders are asked for RGB) as contiguous uint8 [h, w, 3]."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise VideoInputError(f"frames must be 8-bit, got {frame.dtype}")
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    return np.ascontiguousarray(frame[..., :3])  # drop alpha


def _too_few(path: Path, available: int, indices: range) -> VideoInputError:
    step = indices[1] - indices[0] if len(indices) > 1 else 1
    return VideoInputError(
        f"{path} has {available} frames, but {len(indices)} frames taken every {step} from frame {indices[0]} "
        f"need {indices[-1] + 1}; lower --frames, --stride or --start, or use a longer clip"
    )


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]
