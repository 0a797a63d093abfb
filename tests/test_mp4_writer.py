"""Each .mp4 encoder path of the runtime (imageio-ffmpeg, PyAV, a system ffmpeg) writes H.264 that decodes back
to the frames: the lean install picks whichever it has, so every path must give the same video."""

import shutil

import imageio.v3 as iio
import numpy as np
import pytest

from tav.runtime.mp4_writer import write_mp4

# H.264 at its default quality on smooth frames: a few levels of error on average, far from a wrong frame
# (a shifted or swapped frame differs by ~60 levels here).
MEAN_ERROR_LEVELS = 6


def smooth_frames(count=5, size=48) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    frames = [np.stack([(x * 5 + 40 * i) % 256, (y * 5) % 256, np.full_like(x, 60 * i % 256)], -1)
              for i in range(count)]
    return np.asarray(frames, dtype=np.uint8)


def read_back(path) -> np.ndarray:
    return np.asarray(list(iio.imiter(path, plugin="pyav" if _has("av") else None)))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("encoder", ["imageio-ffmpeg", "pyav", "ffmpeg"])
def test_every_encoder_path_writes_frames_that_decode_back(encoder, tmp_path, monkeypatch):
    if encoder == "imageio-ffmpeg" and not _has("imageio_ffmpeg"):
        pytest.skip("imageio-ffmpeg not installed")
    if encoder == "pyav" and not _has("av"):
        pytest.skip("PyAV not installed (the video extra)")
    if encoder == "ffmpeg":
        if shutil.which("ffmpeg") is None:
            if not _has("imageio_ffmpeg"):
                pytest.skip("no ffmpeg on PATH")
            import imageio_ffmpeg

            (tmp_path / "bin").mkdir()
            (tmp_path / "bin" / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())  # a real ffmpeg, on PATH
            monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    frames = smooth_frames()
    path = tmp_path / "v.mp4"
    write_mp4(frames, path, fps=8, encoder=encoder)
    decoded = read_back(path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < MEAN_ERROR_LEVELS
