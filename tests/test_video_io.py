"""Clip reading (frame choice, resize + centre crop, errors) and video writing (formats, atomicity, errors)."""

import os
import signal
import subprocess
import sys
import time
import tracemalloc

import imageio.v3 as iio
import numpy as np
import pytest

from tav.runtime.video_output import VideoOutputError, frames_to_uint8, write_video
from tav.tuner.demo.synthetic_video import main as make_clip_main
from tav.tuner.demo.synthetic_video import make_clip
from tav.tuner.tuning.video_input import VideoInputError, load_clip, resize_and_crop


def frames_of(clip, n):
    return [frame for _, frame in zip(range(n), iio.imiter(clip, plugin="FFMPEG"), strict=False)]


def test_clip_frames_are_start_plus_stride_k_in_minus_one_to_one(skiing_clip):
    pixels = load_clip(skiing_clip, frames=3, height=64, width=64, stride=2, start=1)
    assert pixels.shape == (3, 3, 64, 64) and pixels.dtype == np.float32
    assert -1 <= pixels.min() < pixels.max() <= 1
    decoded = frames_of(skiing_clip, 6)
    for k, index in enumerate((1, 3, 5)):
        expected = resize_and_crop(decoded[index], 64, 64).astype(np.float32) / 127.5 - 1
        np.testing.assert_array_equal(pixels[k], expected.transpose(2, 0, 1))


def test_non_square_frames_are_resized_by_the_shorter_side_and_centre_cropped():
    frame = np.zeros((40, 120, 3), np.uint8)  # 3:1, three vertical bands: red | green | blue
    frame[:, :40, 0], frame[:, 40:80, 1], frame[:, 80:, 2] = 255, 255, 255
    out = resize_and_crop(frame, 16, 16)
    assert out.shape == (16, 16, 3)
    assert (out[..., 1] > 200).all() and (out[..., 0] < 50).all()  # only the centre (green) band is kept, unstretched


def test_gif_and_image_folder_inputs_in_natural_order(tmp_path):
    clip = make_clip(frames=12, size=32, seed=1)
    write_video(clip, tmp_path / "clip.gif")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(clip):
        iio.imwrite(folder / f"f{i}.png", frame)  # f10 sorts before f2 as text, not naturally
    from_folder = load_clip(folder, frames=4, height=32, width=32, stride=3)
    np.testing.assert_array_equal(from_folder, clip[::3][:4].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
    from_gif = load_clip(tmp_path / "clip.gif", frames=4, height=32, width=32, stride=3)
    assert from_gif.shape == (4, 3, 32, 32)
    assert np.abs(from_gif - from_folder).mean() < 0.1  # gif palettes are lossy


def test_clip_errors_are_one_line_and_say_what_to_do(tmp_path, skiing_clip):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    cases = [
        ((bad, 4, 64, 64), "cannot decode"),
        ((skiing_clip, 60, 64, 64, 2), "has 91 frames, but 60 frames taken every 2"),
        ((skiing_clip, 4, 60, 64), "multiples of 8"),
        ((tmp_path / "missing.mp4", 4, 64, 64), "does not exist"),
        ((tmp_path, 4, 64, 64), "holds no images"),
    ]
    for args, expected in cases:
        with pytest.raises(VideoInputError, match=expected) as err:
            load_clip(*args)
        assert "\n" not in str(err.value)


def test_a_billion_frames_are_refused_by_the_clip_length_at_once_without_allocating_for_them(tmp_path, skiing_clip):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(make_clip(frames=3, size=16)):
        iio.imwrite(folder / f"{i}.png", frame)
    started = time.perf_counter()
    tracemalloc.start()
    try:
        for clip, length in ((skiing_clip, 91), (folder, 3)):
            with pytest.raises(VideoInputError, match=f"has {length} frames, but 1000000000 frames"):
                load_clip(clip, frames=10**9, height=64, width=64, stride=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5 and peak < 2**30  # an index list alone would take 8 GB


def test_a_fifo_is_refused_unopened_as_the_clip_or_as_a_frame(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    folder = tmp_path / "frames"
    folder.mkdir()
    os.mkfifo(folder / "0.png")
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("opened the FIFO and blocked"))
    signal.alarm(10)
    try:
        with pytest.raises(VideoInputError, match="pipe.mp4 is a FIFO \\(named pipe\\), not a regular file"):
            load_clip(tmp_path / "pipe.mp4", frames=1, height=16, width=16)
        with pytest.raises(VideoInputError, match="0.png is a FIFO \\(named pipe\\)"):
            load_clip(folder, frames=1, height=16, width=16)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_written_formats_read_back(tmp_path):
    frames = make_clip(frames=5, size=48, seed=2)
    mp4 = iio.imread(write_video(frames, tmp_path / "v.mp4"), plugin="FFMPEG")
    assert mp4.shape == frames.shape and np.abs(mp4.astype(int) - frames).mean() < 8  # lossy H.264
    gif = iio.imread(write_video(frames, tmp_path / "v.gif", fps=8), index=None)
    assert gif.shape == frames.shape
    assert iio.immeta(tmp_path / "v.gif")["duration"] in (120, 130)  # 1000 / 8 ms, in GIF's 10 ms units
    np.testing.assert_array_equal(np.load(write_video(frames, tmp_path / "v.npy")), frames)
    for target in (tmp_path / "pngs", f"{tmp_path}/pngs2/"):
        folder = write_video(frames, target)
        assert sorted(p.name for p in folder.iterdir()) == [f"frame_{i:04d}.png" for i in range(5)]
        np.testing.assert_array_equal(iio.imread(folder / "frame_0003.png"), frames[3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pngs", "pngs2", "v.gif", "v.mp4", "v.npy"]  # no temp files


def test_write_errors_are_clear_and_leave_nothing(tmp_path):
    frames = make_clip(frames=2, size=16)
    cases = [
        (frames, tmp_path / "v.avi", "unknown suffix"),
        (frames.astype(np.float32), tmp_path / "v.npy", "uint8 array"),
        (frames[..., 0], tmp_path / "v.npy", "uint8 array"),
        (frames, tmp_path / "no" / "such" / "v.gif", "does not exist"),
        (frames[:, :15], tmp_path / "v.mp4", "even height and width"),
    ]
    for array, path, expected in cases:
        with pytest.raises(VideoOutputError, match=expected):
            write_video(array, path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(VideoOutputError, match="not an empty folder"):
        write_video(frames, tmp_path / "full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_uint8_conversion_follows_the_contract():
    images = np.array([-1.5, -1.0, 0.0, 1 / 255, 1.0, 2.0], np.float32).reshape(1, 1, 1, 6).repeat(3, axis=1)
    out = frames_to_uint8(images)
    assert out.shape == (1, 1, 6, 3)
    # round(clip((x + 1) / 2, 0, 1) * 255), half to even as numpy rounds: 127.5 -> 128
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 0, 128, 128, 255, 255])


def test_synthetic_clip_is_seeded_and_moves(tmp_path, capsys):
    a, b = make_clip(frames=6, size=32, seed=3), make_clip(frames=6, size=32, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[-1])
    make_clip_main([str(tmp_path / "c.mp4"), "--frames", "6", "--size", "32"])
    assert iio.imread(tmp_path / "c.mp4", plugin="FFMPEG").shape == (6, 32, 32, 3)


def test_video_writer_is_torch_free():
    """The torch-free runtime imports it: importing it must not pull in torch."""
    code = "import sys, tav.runtime.video_output; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
