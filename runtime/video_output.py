"""Writing generated frames: mp4, gif, npy or a folder of PNGs, chosen by the path. numpy + imageio only.

Shared by the PyTorch reference sampler (``tav-sample``) and the torch-free
runtime (``tav-run``), so both turn decoder output into bytes the same way.
Every write is atomic (runtime/atomic_files.py): a temp file (or temp folder) next to the target,
renamed into place, so a crash never leaves a half-written video under the real name.
"""

import os
import re
from pathlib import Path

import numpy as np

from .atomic_files import atomic_file, atomic_folder, temp_path
from .mp4_writer import NoMp4Encoder, mp4_encoder, write_mp4

FORMATS = (".mp4", ".gif", ".npy", "a folder of PNGs (a path without suffix, or ending in /)")
MAX_FPS = 1000  # a GIF frame lasts a whole number of milliseconds
MIN_FPS = 0.01  # a frame of 100 s; GIF's frame delay (hundredths of a second in 16 bits) ends at 655 s
PNG_FRAME = re.compile(r"frame_\d{4,}\.png")


class VideoOutputError(ValueError):
    """A bad frame array or output path; the message is one line saying what to do."""


def frames_to_uint8(images: np.ndarray) -> np.ndarray:
    """Decoder output [F, 3, H, W] in [-1, 1] -> uint8 [F, H, W, 3]: round(clip((x + 1) / 2, 0, 1) * 255).

    The conversion of docs/CONTRACTS.md, done in float32 numpy so the reference sampler
    and the runtime produce identical bytes from identical decoder output.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise VideoOutputError(f"decoder images must be [F, 3, H, W], got shape {images.shape}")
    pixels = np.round(np.clip((images + np.float32(1)) / np.float32(2), 0, 1) * np.float32(255))
    return pixels.astype(np.uint8).transpose(0, 2, 3, 1).copy()


def output_kind(path) -> str:
    """'mp4' | 'gif' | 'npy' | 'png_dir' for an output path; a clear error for anything else."""
    text = os.fspath(path)
    if text.strip() in ("", "-"):
        raise VideoOutputError(f"cannot write to {text!r}: videos are not written to stdout; "
                               "give a file or folder path")
    name = Path(text).name
    if name.startswith(".") and name not in (".", "..") and Path(name).suffix == "":
        # Python reads ".mp4" as a hidden name without suffix: it would become a folder of PNGs called ".mp4".
        better = "video" + name if name.lower() in (".mp4", ".gif", ".npy") else name.lstrip(".") or "video"
        raise VideoOutputError(f"cannot write {text}: {name!r} has no name before its suffix; "
                               f"name the output, e.g. {Path(text).with_name(better)}")
    if text.endswith(("/", os.sep)) or Path(text).suffix == "":
        return "png_dir"
    suffix = Path(text).suffix.lower()
    if suffix in (".mp4", ".gif", ".npy"):
        return suffix[1:]
    raise VideoOutputError(f"cannot write {text}: unknown suffix {suffix!r}; use one of {', '.join(FORMATS)}")


def check_fps(fps) -> float:
    """Frames per second a GIF (integer milliseconds per frame) and an mp4 can both carry."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not (
            MIN_FPS <= fps <= MAX_FPS):
        raise VideoOutputError(f"fps must be a number from {MIN_FPS:g} to {MAX_FPS}, got {fps!r}")
    return float(fps)


def check_frames(frames) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", type(frames).__name__)
        raise VideoOutputError(f"frames must be a uint8 array [F, H, W, 3], got {dtype} of shape {shape}")
    if 0 in frames.shape:
        raise VideoOutputError(f"frames must not be empty, got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def check_output_path(path, overwrite: bool = False, flag: str | None = None) -> Path:
    """The absolute target of ``path`` if it can be written (known format, writable folder, nothing in the way);
    else a clear error, which names ``flag`` (the command's option) when given. ``overwrite`` allows replacing
    an existing file, or a folder of our PNG frames.

    Callers that compute for minutes before writing call this first.
    """
    if flag is not None:
        try:
            return check_output_path(path, overwrite)
        except VideoOutputError as err:
            raise VideoOutputError(f"{flag}: {err}") from None
    kind = output_kind(path)
    if kind == "mp4":
        try:  # a lean install may have no mp4 encoder: say so before sampling, not after
            mp4_encoder()
        except NoMp4Encoder as err:
            raise VideoOutputError(str(err)) from None
    target = Path(os.fspath(path).rstrip("/" + os.sep) or ".").absolute()
    parent = target.parent
    if not parent.is_dir():
        raise VideoOutputError(f"cannot write {target}: folder {parent} does not exist; create it first")
    if kind == "png_dir":
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            if not (overwrite and _is_png_frames_folder(target)):
                hint = "" if overwrite else " (--overwrite replaces a folder of frame_NNNN.png only)"
                raise VideoOutputError(f"cannot write PNG frames to {target}: "
                                       f"it exists and is not an empty folder{hint}")
    elif target.is_dir():
        raise VideoOutputError(f"cannot write {target}: a folder of that name exists")
    elif (target.exists() or target.is_symlink()) and not overwrite:
        raise VideoOutputError(f"cannot write {target}: it exists; "
                               "pass --overwrite to replace it, or choose another name")
    probe = temp_path(target, ".probe")
    try:  # writable? (permissions, read-only mounts): find out now, not after minutes of sampling
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        probe.unlink()
    except OSError as err:
        raise VideoOutputError(f"cannot write {target}: {err.strerror or err}") from None
    return target


def write_video(frames: np.ndarray, path, fps: float = 8, overwrite: bool = False) -> Path:
    """Write uint8 frames [F, H, W, 3] to ``path`` (format from the suffix); returns the final path.

    ``overwrite``: replace an existing file (or a folder of our PNG frames); otherwise that is an error.
    """
    frames = check_frames(frames)
    kind = output_kind(path)
    fps = check_fps(fps)
    if kind == "mp4" and (frames.shape[1] % 2 or frames.shape[2] % 2):
        # H.264 in yuv420p (the format every player reads) needs even sizes.
        raise VideoOutputError(f"mp4 needs an even height and width, got {frames.shape[2]}x{frames.shape[1]}; "
                               "write .gif, .npy or PNGs")
    target = check_output_path(path, overwrite)
    try:
        return _write_png_dir(frames, target) if kind == "png_dir" else _write_file(frames, target, kind, fps)
    except OSError as err:
        raise VideoOutputError(f"cannot write {target}: {err.strerror or err}") from None


def _is_png_frames_folder(folder: Path) -> bool:
    return folder.is_dir() and not folder.is_symlink() and all(
        PNG_FRAME.fullmatch(f.name) and f.is_file() and not f.is_symlink() for f in folder.iterdir())


def _write_file(frames, target: Path, kind: str, fps: float) -> Path:
    with atomic_file(target, suffix=f".{kind}") as tmp:  # the writers choose the format by the extension
        if kind == "npy":
            np.save(tmp, frames, allow_pickle=False)
        elif kind == "gif":
            import imageio.v3 as iio

            # GIF stores per-frame durations in ms; loop=0 repeats forever, as the official GIFs do.
            iio.imwrite(tmp, frames, extension=".gif", plugin="pillow", duration=1000.0 / fps, loop=0)
        else:
            write_mp4(frames, tmp, fps)  # whichever encoder this install has (tav.runtime.mp4_writer)
    return target


def _write_png_dir(frames, target: Path) -> Path:
    import imageio.v3 as iio

    # What is at ``target`` is empty, or (with overwrite) only our frames: checked above. It is moved aside
    # while the new folder is renamed in, so a failure keeps it.
    with atomic_folder(target, replace=True) as staging:
        for i, frame in enumerate(frames):
            iio.imwrite(staging / f"frame_{i:04d}.png", frame, extension=".png")
    return target
