"""tav-bench smoke test: the whole suite runs on CPU and writes its JSON (no timing is asserted)."""

import json

import pytest

from tav.bench.cli import main

from fixtures.commands import error_of


def test_bench_runs_every_stage_on_cpu_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["--model", "tiny", "--frames", "2", "--device", "cpu", "--steps", "2", "--tune-steps", "1",
          "--repeats", "1", "--backends", "torch,onnxruntime,tensorrt", "--json", str(out)])
    report = json.loads(out.read_text())
    assert set(report) >= {"device", "config", "results", "flops", "stages"}
    rows = {r["backend"]: r for r in report["results"]}
    assert rows["torch"]["unet_step_ms"] > 0 and rows["onnxruntime"]["unet_step_ms"] > 0
    assert rows["onnxruntime"]["rel_l2_err"] < 1e-4  # the fp32 graph against the fp32 PyTorch model
    assert "not run" in rows["tensorrt"]["note"]  # no GPU here: recorded with its reason, not faked
    for stage in ("tune", "export", "packs", "e2e"):
        assert "error" not in report["stages"][stage], report["stages"][stage]
    packs = report["stages"]["packs"]
    assert packs["unet_step_ms_inputs"] > 0 and packs["unet_step_ms_baked"] > 0 and packs["add_video_ms"] > 0
    assert packs["inputs_vs_baked_rel_l2_err"] <= 1e-5  # the same maths, tuned tensors fed instead of baked
    assert packs["switch_ms"] >= 0 and packs["pack_file_bytes"] > packs["pack_tensor_bytes"] > 0
    sd15_fp16 = report["pack_sizes"][0]
    # SD-1.5's architecture: ~74M of ~909M UNet parameters are tuned (attn1/attn2 to_q, attn_temp).
    assert (sd15_fp16["model"], sd15_fp16["precision"]) == ("sd15", "fp16")
    assert 73e6 < sd15_fp16["tunable_params"] < 76e6 and 900e6 < sd15_fp16["unet_params"] < 920e6
    assert sd15_fp16["videos_per_80gb_weights_only"] * sd15_fp16["pack_payload_bytes"] < 80e9
    for backend in ("torch", "onnxruntime"):  # each backend's own peak, measured around its set-up and steps
        # At the tiny size a step may fit in memory freed earlier: "above start" can be 0, never negative.
        assert rows[backend]["peak_rss_above_start_bytes"] >= 0 and rows[backend]["peak_rss_bytes"] > 0
    e2e = report["stages"]["e2e"]
    assert e2e["tav_run_peak_rss_bytes"] > 0 and e2e["tav_sample_peak_rss_bytes"] > 0
    assert e2e["frames_max_level_diff"] <= 2  # the two CLIs' videos agree (docs/CONTRACTS.md's tolerance)
    assert report["flops"]["unet_step_flop"] > 0
    assert "onnxruntime" in capsys.readouterr().out


def test_child_peak_is_the_childs_own_not_the_parents(tmp_path):
    """A parent holding 600 MB starts /bin/true: its peak is the launcher's few MB, not the parent's.

    The plain way (Popen + this process's wait4) reports the parent's resident set for the child
    (the kernel folds the pre-exec address space's high-water mark in at exec); shown here too,
    so the test proves the launcher is what fixes it.
    """
    import os
    import subprocess

    import numpy as np

    from tav.bench.memory import child_peak

    held = np.ones(600 * 2**20 // 8)  # touched: resident
    naive = subprocess.Popen(["/bin/true"])
    _, _, usage = os.wait4(naive.pid, 0)
    measured = child_peak(["/bin/true"])
    assert held.sum() > 0 and usage.ru_maxrss * 1024 > 500 * 2**20  # the old method's figure: the parent's
    assert measured["returncode"] == 0 and measured["peak_rss_bytes"] < 64 * 2**20


def test_child_peak_reports_a_missing_command_as_a_failure():
    from tav.bench.memory import child_peak

    result = child_peak(["/nonexistent/tool"])
    assert result["returncode"] != 0 and "nonexistent" in result["stderr_tail"]


def test_bench_scaling_reports_time_and_memory_per_frame_at_each_frame_count(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    main(["--model", "tiny", "--height", "32", "--width", "32", "--steps", "2", "--scaling", "2,4",
          "--temporal-window", "2", "--json", str(out)])
    report = json.loads(out.read_text())["scaling"]
    rows = {r["frames"]: r for r in report["rows"]}
    assert sorted(rows) == [2, 4] and report["frame_counts"] == [2, 4]
    assert rows[2]["temporal_window"] == rows[4]["temporal_window"] == 2  # baked into each export
    for row in rows.values():
        assert row["denoise_step_ms_per_frame"] > 0 and row["decode_ms_per_frame"] > 0
        assert row["steady_decode_ms_per_frame"] > 0
        assert row["first_step_ms_per_frame"] > 0 and row["steady_step_ms_per_frame"] > 0  # 2 steps: one of each
        assert row["peak_rss_bytes"] >= row["rss_after_load_bytes"] > 0
        assert row["peak_rss_per_frame_bytes"] == pytest.approx(row["peak_rss_bytes"] / row["frames"])
    ratios = report["ratios_vs_smallest"]
    assert ratios["2"]["denoise_step_ms_per_frame"] == 1.0 and ratios["4"]["denoise_step_ms_per_frame"] > 0
    assert set(ratios["linear"]) == {"denoise_step_ms_per_frame", "steady_step_ms_per_frame", "decode_ms_per_frame",
                                     "steady_decode_ms_per_frame", "peak_above_load_per_frame_bytes"}
    assert "linear within 1.25x" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--scaling", "8,x"], "--scaling 8,x is not frame counts from 1 to"),
    (["--scaling", "4,8", "--temporal-window", "5"],
     "--temporal-window 5 must be from 1 to the smallest frame count 4"),
    (["--temporal-window", "4"], "--temporal-window 4 needs --skip tune"),
])
def test_bench_refuses_bad_frame_counts_and_windows_in_one_line(args, message):
    assert message in error_of(main, ["--model", "tiny", *args], "tav-bench", code=2)
