"""Every long phase shows progress on stderr, and --quiet silences it: tav-tune, tav-sample, tav-invert, tav-export.

Sizes are the smallest that still run every phase: 3 frames at 64x64, 1 training step,
2 inversion/DDIM steps, 1 evaluation pair (--eval-pairs 1).
"""

import logging
import re

import pytest

import tav.export.pipeline
import tav.tuner.cli.tune as cli_tune
from tav.export.cli import main as export_main
from tav.runtime.cuda_rt import gpu_count
from tav.runtime.video_output import write_video
from tav.tuner.cli.invert import main as invert_main
from tav.tuner.cli.sample import INITS
from tav.tuner.cli.sample import main as sample_main
from tav.tuner.demo.synthetic_video import make_clip
from tav.tuner.sampler import INITS as SAMPLER_INITS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(random_run):
    return random_run  # read only: tav-sample and tav-export write elsewhere


def test_tav_tune_announces_and_times_loading_evaluation_inversion_and_saving(tiny_sd, tmp_path, capsys):
    clip = write_video(make_clip(frames=8, size=64), tmp_path / "clip.mp4")
    argv = ["--pretrained", str(tiny_sd), "--video", str(clip), "--prompt", "a ball", "--frames", "3", "--height", "64",
            "--width", "64", "--steps", "1", "--inversion-steps", "2", "--eval-pairs", "1"]
    cli_tune.main([*argv, "--out", str(tmp_path / "shown")])
    out, err = capsys.readouterr()
    for stage in ("loading the model", "evaluating the loss before tuning (1 UNet pass)",
                  "evaluating the loss after tuning", "inverting the clip (2 DDIM steps)", "saving to shown.partial/"):
        assert f"tav-tune: {stage}" in err, err
        assert any(line.startswith(f"tav-tune: {stage}") and line.endswith(" s") for line in err.splitlines()), stage
    assert "tav-tune inversion: 100%" in err and "2/2" in err and "evaluation loss" in err
    assert out.splitlines()[-1] == str(tmp_path / "shown")  # stdout: the summary and the RUN_DIR only

    cli_tune.main([*argv, "--out", str(tmp_path / "quiet"), "--quiet"])
    out, err = capsys.readouterr()
    assert err == "" and out.splitlines()[-1] == str(tmp_path / "quiet")


def test_tav_sample_shows_its_ddim_loop_and_quiet_silences_it(run_dir, tmp_path, capsys):
    assert INITS == SAMPLER_INITS  # the CLI keeps its own copy so that --help does not import torch
    argv = ["--weights", str(run_dir), "--prompt", "a red ball", "--steps", "2"]
    sample_main([*argv, "--out", str(tmp_path / "shown.npy")])
    out, err = capsys.readouterr()
    assert "tav-sample: loaded the tuned model in " in err and "tav-sample DDIM: 100%" in err and "2/2" in err
    assert "tav-sample: sampled 2 steps and decoded in" in err
    assert out.strip() == str(tmp_path / "shown.npy")
    sample_main([*argv, "--out", str(tmp_path / "quiet.npy"), "--quiet"])
    out, err = capsys.readouterr()
    assert err == "" and out.strip() == str(tmp_path / "quiet.npy")


@pytest.fixture
def stub_graphs(monkeypatch):
    """Graph export stubbed out: this is about what the CLI prints, not the graphs (tests/test_export*.py)."""

    def fake_graph(spec, staging, *args):
        (staging / f"{spec.name}.onnx").write_bytes(b"stub")
        return {"external_files": [], "tensorrt": None, "parity": None}

    monkeypatch.setattr(tav.export.pipeline, "export_graph", fake_graph)


def test_tav_invert_announces_its_stages_with_a_bar_and_quiet_silences_them(run_dir, tmp_path, capsys):
    clip = write_video(make_clip(frames=10, size=64), tmp_path / "clip.mp4")  # 5 frames at the run's stride 2
    argv = ["--weights", str(run_dir), "--video", str(clip), "--frames", "5", "--inversion-steps", "2"]
    invert_main([*argv, "--out", str(tmp_path / "shown")])
    out, err = capsys.readouterr()
    for stage in ("encoding the clip (5 frames) and the empty prompt",
                  "inverting the clip (2 DDIM steps)", "saving to shown/"):
        timed = [line for line in err.splitlines() if line.startswith(f"tav-invert: {stage}") and line.endswith(" s")]
        assert timed, (stage, err)
    assert "tav-invert inversion: 100%" in err and "2/2" in err
    assert out.strip() == str(tmp_path / "shown")  # stdout: the new RUN_DIR only

    invert_main([*argv, "--out", str(tmp_path / "quiet"), "--quiet"])
    out, err = capsys.readouterr()
    assert err == "" and out.strip() == str(tmp_path / "quiet")


def test_tav_export_logs_timed_stages_and_quiet_silences_them(run_dir, tmp_path, stub_graphs, caplog):
    caplog.set_level(logging.DEBUG, logger="tav.export")
    export_main(["--weights", str(run_dir), "--out", str(tmp_path / "shown")])
    stages = [r.getMessage() for r in caplog.records if r.name == "tav.export" and r.levelno == logging.INFO]
    assert any(re.match(r"load +[0-9.]+s", m) for m in stages) and any(m.startswith("done: ") for m in stages)
    caplog.clear()
    export_main(["--weights", str(run_dir), "--out", str(tmp_path / "quiet"), "--quiet"])
    assert [r for r in caplog.records if r.levelno < logging.WARNING] == []


@pytest.mark.skipif(gpu_count() > 0, reason="on a GPU machine --backend all builds the plans")
def test_backend_all_without_a_gpu_writes_the_onnx_graphs_and_says_why(run_dir, tmp_path, stub_graphs, caplog):
    export_main(["--weights", str(run_dir), "--out", str(tmp_path / "engine"), "--backend", "all", "--quiet"])
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(notes) == 1 and notes[0].startswith("no GPU here: --backend all writes the ONNX graphs only"), notes
    assert not list((tmp_path / "engine").glob("*.plan"))
