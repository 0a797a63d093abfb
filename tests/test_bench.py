"""tav-bench smoke test: the whole suite runs on CPU and writes its JSON (no timing is asserted)."""

import json

from tav.bench.cli import main


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
