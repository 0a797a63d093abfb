"""Writing .mp4 (H.264, yuv420p) with whichever encoder this install has, so the lean runtime needs none.

In order: imageio-ffmpeg's bundled ffmpeg (the tune/serve extras bring it; 165 MB), PyAV (the
``video`` extra; 104 MB), an ``ffmpeg`` on PATH. The base install writes .gif/.npy/PNG without
any of them; a missing encoder is a one-line error naming the three ways to get one.
"""

import importlib.util
import shutil
import subprocess

import numpy as np


class NoMp4Encoder(RuntimeError):
    """No encoder for .mp4 in this install; the message says how to get one."""


NO_ENCODER = ("writing .mp4 needs an encoder: pip install 'tav-runtime[video]' (PyAV) or imageio-ffmpeg, or put "
              "ffmpeg on PATH; or write .gif, .npy or a folder of PNG frames instead")


def mp4_encoder() -> str:
    """'imageio-ffmpeg', 'pyav' or 'ffmpeg' (on PATH); NoMp4Encoder when there is none."""
    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        return "imageio-ffmpeg"
    if importlib.util.find_spec("av") is not None:
        return "pyav"
    if shutil.which("ffmpeg"):
        return "ffmpeg"
    raise NoMp4Encoder(NO_ENCODER)


def write_mp4(frames: np.ndarray, path, fps: float, encoder: str | None = None) -> None:
    """uint8 [F, H, W, 3] -> H.264 in yuv420p at ``fps``; frames are never rescaled or padded.

    ``encoder`` (one of mp4_encoder's names) overrides the choice, for tests of each path.
    """
    encoder = encoder or mp4_encoder()
    if encoder == "imageio-ffmpeg":
        import imageio.v2 as imageio

        # macro_block_size=1: never rescale the frames (imageio's default pads to multiples of 16).
        with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
                                macro_block_size=1, ffmpeg_log_level="error") as writer:
            for frame in frames:
                writer.append_data(frame)
    elif encoder == "pyav":
        import imageio.v3 as iio

        iio.imwrite(path, frames, extension=".mp4", plugin="pyav", codec="libx264", fps=fps,
                    out_pixel_format="yuv420p")
    else:
        _write_with_system_ffmpeg(frames, path, fps)


def _write_with_system_ffmpeg(frames: np.ndarray, path, fps: float) -> None:
    count, height, width, _ = frames.shape
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p",
               "-f", "mp4", str(path)]
    done = subprocess.run(command, input=np.ascontiguousarray(frames, dtype=np.uint8).tobytes(), capture_output=True)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise RuntimeError(f"ffmpeg could not write {path}: {reason}")
