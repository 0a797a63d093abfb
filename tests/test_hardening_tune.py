"""Issue 11, tuner side: a finished run is never deleted, one run per RUN_DIR.partial, SIGTERM checkpoints like
Ctrl-C, image frames converted to RGB by their colour mode, RUN_DIR files readable like every output.

The runs are tiny (2 frames of a synthetic 64x64 clip, 1-3 steps) and driven through tav-tune's CLI.
"""

import fcntl
import importlib
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tav.tuner.cli.tune import main as tune_main
from tav.tuner.tuning.video_input import VideoInputError, load_clip

from fixtures.tune_cli import tune_argv

tune_module = importlib.import_module("tav.tuner.tuning.tune")  # tav.tuner.tuning.tune is also the function's name

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fails(args, capsys) -> tuple:
    with pytest.raises(SystemExit) as exit_info:
        tune_main(args)
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, if any
    assert err.startswith("tav-tune: error: ") and "\n" not in err, err
    return exit_info.value.code, err


# --- defect 2: a finished run survives a failed final rename -----------------------------------------


def test_a_finished_run_is_kept_when_out_fills_up_during_tuning(tiny_sd, disc_gif, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_step = tune_module.train_step

    def step_and_intrude(session):
        out.mkdir(exist_ok=True)
        (out / "intruder.txt").write_text("appeared while tuning")
        return real_step(session)

    monkeypatch.setattr(tune_module, "train_step", step_and_intrude)
    code, err = fails(tune_argv(tiny_sd, disc_gif, out), capsys)
    partial = tmp_path / "run.partial"
    assert code != 0 and f"the complete run is kept in {partial}" in err
    assert {"run.json", "tuned.safetensors", "inverted_latents.safetensors"} <= {p.name for p in partial.iterdir()}
    assert (out / "intruder.txt").read_text() == "appeared while tuning"


# --- defect 6: two runs, one RUN_DIR.partial ----------------------------------------------------------


def test_a_second_run_that_loses_the_race_for_partial_fails_and_leaves_it_alone(tiny_sd, disc_gif, tmp_path,
                                                                                  monkeypatch, capsys):
    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    real_check = tune_module._check_targets

    def check_then_the_other_run_claims(*args):
        real_check(*args)  # nothing there yet: this run goes ahead...
        partial.mkdir()  # ...and the other run, started at the same moment, creates the folder first
        (partial / "tune_config.json").write_text('{"the": "other run"}')

    monkeypatch.setattr(tune_module, "_check_targets", check_then_the_other_run_claims)
    code, err = fails(tune_argv(tiny_sd, disc_gif, out), capsys)
    assert "just created by another tav-tune run" in err
    assert json.loads((partial / "tune_config.json").read_text()) == {"the": "other run"} and not out.exists()


def test_resume_is_refused_while_another_run_holds_the_partial(tiny_sd, disc_gif, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_step, calls = tune_module.train_step, []

    def interrupted_at_step_3(session):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(session)

    monkeypatch.setattr(tune_module, "train_step", interrupted_at_step_3)
    code, err = fails(tune_argv(tiny_sd, disc_gif, out, "--steps", "3", "--checkpoint-every", "1"), capsys)
    assert code == 130 and "checkpoint" in err
    monkeypatch.setattr(tune_module, "train_step", real_step)
    fd = os.open(tmp_path / "run.partial", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as the other tav-tune process holds it while it runs
    try:
        code, err = fails(tune_argv(tiny_sd, disc_gif, out, "--steps", "3", "--resume"), capsys)
    finally:
        os.close(fd)
    assert "another tav-tune run is using" in err and (tmp_path / "run.partial" / "checkpoint" / "state.json").is_file()


# --- defect 10: SIGTERM ------------------------------------------------------------------------------


def test_sigterm_saves_a_checkpoint_like_ctrl_c_and_exits_143(tiny_sd, disc_gif, tmp_path):
    out = tmp_path / "run"
    code = ("import importlib, os, signal\n"
            "t = importlib.import_module('tav.tuner.tuning.tune')\n"
            "real = t.train_step\n"
            "def step(s):\n    loss = real(s)\n    os.kill(os.getpid(), signal.SIGTERM)\n    return loss\n"
            "t.train_step = step\n"
            "from tav.tuner.cli.tune import main\n"
            f"main({tune_argv(tiny_sd, disc_gif, out, '--steps', '50')!r})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 143, result.stderr[-2000:]  # 128 + SIGTERM, as shells report it
    assert last.startswith("tav-tune: error: interrupted at step 1/50"), result.stderr[-2000:]
    assert "--resume" in last and "Traceback" not in result.stderr
    state = json.loads((tmp_path / "run.partial" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 1 and not out.exists()


# --- defects 14, 16, 17: bad flags; the finished run's file modes -----------------------------------


@pytest.mark.parametrize("extra, message", [
    (["--device", "tpu"], "--device tpu is not supported"),
    (["--out", "-"], "is not a folder name"),
], ids=["device-tpu", "out-dash"])
def test_bad_flags_are_one_line_errors_and_leave_nothing(tiny_sd, disc_gif, tmp_path, monkeypatch, capsys, extra,
                                                          message):
    monkeypatch.chdir(tmp_path)
    code, err = fails(tune_argv(tiny_sd, disc_gif, tmp_path / "run") + extra, capsys)
    assert code == 2 and message in err and list(tmp_path.iterdir()) == []


def test_run_dir_files_follow_the_umask_like_every_other_output(tiny_sd, disc_gif, tmp_path):
    previous = os.umask(0o022)
    try:
        tune_main(tune_argv(tiny_sd, disc_gif, tmp_path / "run"))
    finally:
        os.umask(previous)
    for path in (tmp_path / "run").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path.name


# --- defect 7: image frames in any colour mode --------------------------------------------------------


def _frames_folder(tmp_path, images, suffix):
    folder = tmp_path / f"{images[0].mode}{suffix}"
    folder.mkdir()
    for i, image in enumerate(images):
        image.save(folder / f"frame_{i}{suffix}", **({"quality": 100} if suffix == ".jpg" else {}))
    return folder


def _as_uint8(pixels):
    return np.round((pixels + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def test_cmyk_frames_are_converted_not_read_as_rgb(tmp_path):
    red_in_cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    folder = _frames_folder(tmp_path, [red_in_cmyk, red_in_cmyk], ".jpg")
    pixels = _as_uint8(load_clip(folder, frames=2, height=16, width=16))
    # JPEG is lossy even at quality 100: a flat colour comes back within a few levels.
    assert np.abs(pixels.astype(int) - [255, 0, 0]).max() <= 6


def test_grey_alpha_and_palette_frames_become_grey_and_colour_rgb(tmp_path):
    grey = Image.new("LA", (16, 16), (100, 40))  # alpha is dropped, as for RGBA
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30])  # index 1 is this green
    for images, expected in (([grey, grey], [100, 100, 100]), ([palette, palette], [10, 200, 30])):
        folder = _frames_folder(tmp_path, images, ".png")
        pixels = _as_uint8(load_clip(folder, frames=2, height=16, width=16))
        assert pixels.shape == (2, 16, 16, 3) and (pixels == expected).all(), images[0].mode


def test_sixteen_bit_frames_are_refused_in_one_line(tmp_path):
    deep = Image.fromarray(np.full((16, 16), 40000, np.uint16))
    folder = _frames_folder(tmp_path, [deep, deep], ".png")
    with pytest.raises(VideoInputError, match="frames must be 8-bit"):
        load_clip(folder, frames=2, height=16, width=16)
