"""Issue 32's cases through the commands that meet them: run.json fields tav-invert used to crash on, a base model
gone with a garbled source, hostile torch files (an official output's inv_latents, a resume's optimizer.pt),
10**9 frames asked of a 4-frame clip, and FIFOs given where a file is read.

Each is one line and leaves nothing behind. What could allocate without bound runs in a child process with a
memory cap; what could block runs under an alarm.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_long_video import cli

from tav.runtime.video_output import write_video
from tav.tuner.cli.invert import main as tav_invert
from tav.tuner.cli.sample import main as tav_sample
from tav.tuner.cli.tune import main as tav_tune
from tav.tuner.demo.synthetic_video import make_clip
from tav.tuner.model.torch_files import UnsafeTorchFile
from tav.tuner.official_config import OfficialConfigError, read_official_config
from tav.tuner.run_record import RunRecordError, read_run_record
from tav.tuner.tuned_weights import load_tuned
from tav.tuner.tuning.resume_state import load_checkpoint
from tav.tuner.tuning.video_input import VideoInputError, load_clip

from fixtures.refusals import HANG_LIMIT_S, ROOT, within

BILLION = 1_000_000_000
MARKER = "/tmp/tav-issue32-pickle-ran"


class RunsCode:
    """Pickles as a call of os.mkdir: unpickled without weights_only, it would leave MARKER behind."""

    def __reduce__(self):
        return os.mkdir, (MARKER,)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """The same 4-frame clip as gif, mp4 and a folder of PNG frames."""
    root, frames = tmp_path_factory.mktemp("clips"), make_clip(frames=4, size=64, seed=3)
    made = {suffix: write_video(frames, root / f"clip.{suffix}") for suffix in ("gif", "mp4")}
    made["frames"] = write_video(frames, root / "frames")
    return made


def run_copy(random_run: Path, tmp_path: Path, **changes) -> Path:
    """A copy of the random RUN_DIR with run.json's fields changed (None removes one)."""
    run = Path(shutil.copytree(random_run, tmp_path / "run"))
    meta = json.loads((run / "run.json").read_text())
    meta.update(changes)
    (run / "run.json").write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    return run


def one_line_exit_2(code, err, prog: str) -> str:
    assert code == 2 and err.startswith(f"{prog}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# --- run.json through tav-invert and tav-sample -----------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"stride": "2"}, "stride is '2', expected a positive integer"),
    ({"start": "0"}, "start is '0', expected an integer >= 0"),
    ({"tuned_frames": [3]}, "tuned_frames is [3], expected a positive integer"),
    ({"tuned_frames": 0, "temporal_window": None}, "tuned_frames is 0, expected a positive integer"),
], ids=["stride-string", "start-string", "tuned-frames-list", "tuned-frames-zero"])
def test_tav_invert_refuses_a_garbled_run_json_in_one_line_and_writes_nothing(random_run, clips, tmp_path, capsys,
                                                                             changes, message):
    run = run_copy(random_run, tmp_path, **changes)
    out = tmp_path / "new"
    code, _, err = cli(tav_invert, ["--weights", str(run), "--video", str(clips["gif"]), "--frames", "4",
                                    "--out", str(out), "--quiet"], capsys)
    assert message in one_line_exit_2(code, err, "tav-invert") and str(run / "run.json") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no RUN_DIR, no staging folder


def test_a_run_whose_base_is_gone_and_whose_source_is_a_string_is_one_line(random_run, tmp_path, capsys):
    run = run_copy(random_run, tmp_path, pretrained_model_path=str(tmp_path / "gone"),
                   pretrained_model_source="tiny-org/tiny-sd")
    with pytest.raises(RunRecordError) as err:
        load_tuned(run)
    assert "pretrained_model_source is 'tiny-org/tiny-sd', expected an object" in str(err.value)
    code, _, err = cli(tav_sample, ["--weights", str(run), "--prompt", "x", "--out", str(tmp_path / "v.npy")], capsys)
    assert "pretrained_model_source is 'tiny-org/tiny-sd'" in one_line_exit_2(code, err, "tav-sample")


@pytest.mark.parametrize("config, message", [
    ("- pretrained_model_path: ./sd\n", "the top level is a list, expected an object"),
    ("train_data: {n_sample_frames: eight}\n", "train_data.n_sample_frames is 'eight', expected a positive integer"),
    ("learning_rate: fast\n", "learning_rate is 'fast', expected a positive number"),
], ids=["list", "frames-text", "lr-text"])
def test_tav_tune_refuses_a_garbled_config_in_one_line(tmp_path, capsys, config, message):
    path = tmp_path / "config.yaml"
    path.write_text(config)
    code, _, err = cli(tav_tune, ["--config", str(path)], capsys)
    assert message in one_line_exit_2(code, err, "tav-tune") and str(path) in err


# --- hostile torch files ------------------------------------------------------------------------------------------


def test_an_official_output_with_a_hostile_inv_latents_file_is_one_line_and_runs_nothing(official_output, tmp_path):
    folder = Path(shutil.copytree(official_output, tmp_path / "official"))
    torch.save({"latents": RunsCode()}, folder / "inv_latents" / "ddim_latent-60.pt")
    with pytest.raises(UnsafeTorchFile) as err:
        load_tuned(folder)
    text = str(err.value)
    assert text.startswith(f"{folder / 'inv_latents' / 'ddim_latent-60.pt'} is not a safe torch file (")
    assert "GLOBAL posix.mkdir" in text and "\n" not in text and "weights_only" not in text
    assert not Path(MARKER).exists()


@pytest.mark.parametrize("name", ["optimizer.pt", "rng.pt"])
def test_a_resume_whose_torch_state_is_hostile_is_one_line_and_runs_nothing(tmp_path, name):
    checkpoint = tmp_path / "run.partial" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"step": 1, "losses": [0.5], "eval_loss_before": 0.6,
                                                       "train_time_s": 1.0, "python_random": [], "numpy_random": []}))
    save_file({"w": torch.zeros(1)}, str(checkpoint / "trainable.safetensors"))
    torch.save({"optimizer": {}, "scaler": {}}, checkpoint / "optimizer.pt")
    torch.save({"torch_cpu": torch.get_rng_state(), "torch_cuda": [], "generator": torch.get_rng_state()},
               checkpoint / "rng.pt")
    torch.save({"optimizer": RunsCode()}, checkpoint / name)
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "run.partial", None, None, None)
    text = str(err.value)
    assert f"cannot resume from {checkpoint}: {checkpoint / name} is not a safe torch file (" in text
    assert "delete" in text and "\n" not in text and not Path(MARKER).exists()


def test_a_resume_whose_state_json_is_garbled_is_one_line(tmp_path):
    checkpoint = tmp_path / "run.partial" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"step": "1"}))
    with pytest.raises(ValueError, match=r"cannot resume from .*: step is '1', expected an integer >= 0") as err:
        load_checkpoint(tmp_path / "run.partial", None, None, None)
    assert "\n" not in str(err.value)


# --- sizes bounded by the clip before anything is allocated -------------------------------------------------------


@pytest.mark.parametrize("kind", ["gif", "mp4", "frames"])
def test_a_billion_frames_of_a_four_frame_clip_are_refused_from_its_length(clips, kind):
    with pytest.raises(VideoInputError) as err:
        load_clip(clips[kind], BILLION, 64, 64, stride=1, start=0)
    assert f"has 4 frames, but {BILLION} frames" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("frames, stride, start", [("8", 1, 0), (8, 1.5, 0), (8, 1, None), (True, 1, 0)])
def test_clip_settings_of_the_wrong_type_are_one_line(clips, frames, stride, start):
    with pytest.raises(VideoInputError, match="need integers frames >= 1, stride >= 1, start >= 0"):
        load_clip(clips["gif"], frames, 64, 64, stride, start)


def capped(module: str, *args, data_bytes: int = 3 << 29) -> tuple:
    """(exit status, stderr) of ``python -m module args`` with 1.5 GB of data memory: 10**9 frame indices in a list
    would need 36 GB, so a regression fails here instead of filling the shared machine."""
    def cap():
        import resource
        resource.setrlimit(resource.RLIMIT_DATA, (data_bytes, data_bytes))

    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, preexec_fn=cap)
    return done.returncode, done.stderr.strip()


def test_a_billion_frames_are_refused_in_one_line_within_5_s_and_1_gb(random_run, clips, tmp_path):
    """Refused by the flag's own bound when parsed: before torch loads, before the clip is read."""
    for module, args in (("tav.tuner.cli.tune", ["--video", clips["mp4"], "--prompt", "a disc", "--out",
                                                 tmp_path / "tuned"]),
                         ("tav.tuner.cli.invert", ["--weights", random_run, "--video", clips["mp4"], "--out",
                                                   tmp_path / "inverted"])):
        started = time.monotonic()
        code, err = capped(module, *args, "--frames", BILLION, "--quiet", data_bytes=1 << 30)
        assert time.monotonic() - started < 5, module
        assert code == 2 and "\n" not in err and f"--frames {BILLION} is not a whole number from 1 to 10000" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_more_frames_than_the_clip_holds_are_refused_from_its_length(tiny_sd, random_run, clips, tmp_path):
    """Within the flag's bound (5000), the clip's length refuses them: a count, never a list of indices."""
    code, err = capped("tav.tuner.cli.tune", "--pretrained", tiny_sd, "--video", clips["mp4"], "--prompt", "a disc",
                       "--out", tmp_path / "tuned", "--frames", 5000, "--quiet")
    assert code == 2 and "\n" not in err and "has 4 frames, but 5000 frames" in err, err
    code, err = capped("tav.tuner.cli.invert", "--weights", random_run, "--video", clips["mp4"], "--frames", 5000,
                       "--out", tmp_path / "inverted", "--quiet")
    assert code == 2 and "\n" not in err and "has 4 frames, but 5000 frames" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- special files are never opened for reading ---------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_a_fifo_clip_is_refused_instead_of_blocking(tiny_sd, fifo, tmp_path, capsys):
    clip = fifo.rename(tmp_path / "clip.mp4")
    with within(HANG_LIMIT_S):
        with pytest.raises(VideoInputError, match="is a FIFO \\(named pipe\\), not a regular file"):
            load_clip(clip, 2, 64, 64)
        code, _, err = cli(tav_tune, ["--pretrained", str(tiny_sd), "--video", str(clip), "--prompt", "x",
                                      "--out", str(tmp_path / "run"), "--frames", "2", "--quiet"], capsys)
    assert "is a FIFO (named pipe)" in one_line_exit_2(code, err, "tav-tune")  # refused by the flag's check


def test_a_fifo_among_a_clips_frames_is_refused_instead_of_blocking(clips, tmp_path):
    frames = Path(shutil.copytree(clips["frames"], tmp_path / "frames"))
    second = sorted(frames.iterdir())[1]
    second.unlink()
    os.mkfifo(second)
    with within(HANG_LIMIT_S), pytest.raises(VideoInputError, match=f"{second.name} is a FIFO"):
        load_clip(frames, 4, 64, 64)


def test_a_fifo_config_or_run_json_is_refused_instead_of_blocking(fifo, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "run.json")
    with within(HANG_LIMIT_S):
        with pytest.raises(OfficialConfigError, match="is a FIFO"):
            read_official_config(fifo)
        with pytest.raises(RunRecordError, match="run.json is a FIFO \\(named pipe\\), not a regular file"):
            read_run_record(run)
