"""tav-tune --eval-pairs N (issue 31): N UNet passes of loss evaluation before and after tuning, each shown as a bar;
0 skips both, and run.json then records no evaluation loss (every reader of it copes).

The runs are tiny: 2 frames of a synthetic 64x64 clip, 1 step, 2 inversion steps.
"""

import json

import pytest

from tav.serve.schemas import TuneOptions
from tav.tuner.cli.tune import main as tune_main
from tav.tuner.cli.tune import summary

from fixtures.commands import error_of
from fixtures.tune_cli import tune_argv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_eval_pairs_0_skips_the_evaluation_and_run_json_records_no_loss(tiny_sd, disc_gif, tmp_path, capsys):
    tune_main(tune_argv(tiny_sd, disc_gif, tmp_path / "run", "--eval-pairs", "0"))
    out, err = capsys.readouterr()
    assert "evaluat" not in err, err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["eval_pairs"] == 0 and "eval_loss_before" not in run and "eval_loss_after" not in run
    assert "eval loss not evaluated (--eval-pairs 0)" in out


def test_the_evaluation_shows_a_bar_of_its_unet_passes(tiny_sd, disc_gif, tmp_path, capsys):
    tune_main(tune_argv(tiny_sd, disc_gif, tmp_path / "run", "--eval-pairs", "2"))
    out, err = capsys.readouterr()
    for when in ("before", "after"):
        assert f"tav-tune: evaluating the loss {when} tuning (2 UNet passes)" in err, err
    assert err.count("tav-tune evaluation: 100%") >= 2 and "2/2" in err, err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["eval_pairs"] == 2 and {"eval_loss_before", "eval_loss_after"} <= set(run)
    assert f"eval loss {run['eval_loss_before']:.4f} -> {run['eval_loss_after']:.4f}" in out


@pytest.mark.parametrize("value", ["-1", "65", "1.5", "many"])
def test_eval_pairs_out_of_range_is_refused_before_any_work(tiny_sd, disc_gif, tmp_path, value):
    line = error_of(tune_main, tune_argv(tiny_sd, disc_gif, tmp_path / "run", "--eval-pairs", value), "tav-tune", 2)
    assert line.startswith(f"tav-tune: error: --eval-pairs {value} ") and not (tmp_path / "run.partial").exists()


def test_the_summary_reads_a_run_with_one_or_no_evaluation_loss():
    run = dict(steps=3, frames=2, width=64, height=64, resolved_device="cpu", resolved_precision="float32",
               wall_time_s=1.0, train_time_s=0.5, steps_per_s=6.0, inversion_time_s=0.1, peak_memory_bytes=2**30,
               peak_memory_kind="process_peak_rss")
    assert summary(run).endswith("eval loss not evaluated (--eval-pairs 0)")
    assert summary(dict(run, eval_loss_after=0.5)).endswith("eval loss ? -> 0.5000")  # resumed with --eval-pairs N


def test_the_service_accepts_eval_pairs_0():
    assert TuneOptions(video_id="v", prompt="a disc moves", eval_pairs=0).eval_pairs == 0
