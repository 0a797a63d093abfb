"""tav-grid and the runtime's video reading: what tav-run and tav-sample write reads back, and stacks in rows."""

import subprocess
import sys

import numpy as np
import pytest

from tav.runtime.grid import main as tav_grid
from tav.runtime.mp4_writer import NoMp4Encoder, mp4_encoder
from tav.runtime.video_output import write_video
from tav.runtime.video_reading import VideoReadError, read_video


def _few_colours(frames=3, height=16, width=24, seed=0) -> np.ndarray:
    """Frames of 4 colours: a GIF palette holds them exactly, so a GIF round trip is exact too."""
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [250, 250, 250]], np.uint8)
    return palette[np.random.default_rng(seed).integers(0, 4, (frames, height, width))]


def _smooth(frames=4, height=32, width=48) -> np.ndarray:
    """Gradients that move: what H.264 keeps well, for a lossy mp4 round trip."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([np.stack([(x * 5 + 8 * f) % 256, (y * 7) % 256, np.full_like(x, 128)], -1)
                     for f in range(frames)]).astype(np.uint8)


def _has_mp4() -> bool:
    try:
        mp4_encoder()
    except NoMp4Encoder:
        return False
    return True


def _grid(argv, capsys) -> tuple:
    """(exit status, and for a failure its stderr: the one error line; for a success, what was printed)."""
    try:
        tav_grid([str(a) for a in argv])
    except SystemExit as done:
        assert done.code == 2, done.code  # bad input, by the shared runner's rule
        return capsys.readouterr().err.strip(), None
    return 0, capsys.readouterr()


@pytest.mark.parametrize("name", ["v.npy", "v.gif", "frames"])
def test_written_frames_read_back_exactly(tmp_path, name):
    frames = _few_colours()
    np.testing.assert_array_equal(read_video(write_video(frames, tmp_path / name)), frames)


@pytest.mark.skipif(not _has_mp4(), reason="no mp4 encoder in this install")
def test_an_mp4_reads_back_close_to_what_was_written(tmp_path):
    frames = _smooth()
    back = read_video(write_video(frames, tmp_path / "v.mp4"))
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 8  # H.264 in yuv420p is lossy, not wrong


def test_two_videos_stack_one_above_the_other(tmp_path, capsys):
    top, bottom = _few_colours(seed=1), _few_colours(seed=2)
    a, b = write_video(top, tmp_path / "a.gif"), write_video(bottom, tmp_path / "b.npy")
    code, out = _grid([a, b, "--out", tmp_path / "grid.npy"], capsys)
    assert code == 0 and out.out.strip() == str(tmp_path / "grid.npy")
    grid = np.load(tmp_path / "grid.npy")
    assert grid.shape == (3, 32, 24, 3)
    np.testing.assert_array_equal(grid, np.concatenate([top, bottom], axis=1))


@pytest.mark.skipif(not _has_mp4(), reason="no mp4 encoder in this install")
def test_a_gif_and_an_mp4_make_an_mp4_grid(tmp_path, capsys):
    a, b = write_video(_smooth(), tmp_path / "ref.gif"), write_video(_smooth(), tmp_path / "engine.mp4")
    code, _ = _grid([a, b, "--out", tmp_path / "grid.mp4"], capsys)
    assert code == 0 and read_video(tmp_path / "grid.mp4").shape == (4, 64, 48, 3)


def test_videos_of_other_sizes_or_lengths_are_refused_in_one_line(tmp_path, capsys):
    a = write_video(_few_colours(frames=3), tmp_path / "a.npy")
    b = write_video(_few_colours(frames=4), tmp_path / "b.npy")
    c = write_video(_few_colours(height=8), tmp_path / "c.npy")
    for other in (b, c):
        code, out = _grid([a, other, "--out", tmp_path / "grid.gif"], capsys)
        assert code.startswith("tav-grid: error: the videos differ in frame count or size (")
        assert "\n" not in code and f"{a}: 3 frames 24x16" in code
    assert not (tmp_path / "grid.gif").exists()


def test_unreadable_inputs_and_bad_outputs_fail_in_one_line(tmp_path, capsys):
    good = write_video(_few_colours(), tmp_path / "good.npy")
    (tmp_path / "text.npy").write_bytes(b"not numpy")
    np.save(tmp_path / "floats.npy", np.zeros((2, 4, 4, 3), np.float32))
    (tmp_path / "empty").mkdir()
    cases = [([tmp_path / "missing.gif"], "does not exist"),
             ([tmp_path / "text.npy"], "cannot read"),
             ([tmp_path / "floats.npy"], "holds float32 of shape (2, 4, 4, 3), not uint8 frames"),
             ([tmp_path / "empty"], "holds no .png frames"),
             ([tmp_path / "clip.avi.txt"], "unknown suffix '.txt'")]
    (tmp_path / "clip.avi.txt").write_text("x")
    for inputs, message in cases:
        code, _ = _grid([*inputs, good, "--out", tmp_path / "out.npy"], capsys)
        assert code.startswith("tav-grid: error: ") and message in code and "\n" not in code, code
    code, _ = _grid([good, "--out", tmp_path / "out.txt"], capsys)
    assert "unknown suffix '.txt'" in code  # --out is checked before any input is read
    with pytest.raises(VideoReadError):
        read_video(tmp_path / "missing.gif")


def test_grid_and_reading_are_torch_free():
    code = ("import sys, tav.runtime.grid, tav.runtime.video_reading\n"
            "print([m for m in ('torch', 'onnxruntime') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_an_mp4_without_a_decoder_says_which_extra_reads_it(tmp_path, monkeypatch):
    (tmp_path / "v.mp4").write_bytes(b"\0" * 16)
    monkeypatch.setattr("tav.runtime.video_reading.importlib.util.find_spec", lambda name: None)
    with pytest.raises(VideoReadError, match=r"reading \.mp4 needs a decoder: pip install imageio-ffmpeg"):
        read_video(tmp_path / "v.mp4")
