"""VideoPipeline and tav-run on a synthetic ENGINE_DIR: checks, errors, threads, NaN; no exporter needed.

The synthetic graphs (tests/fixtures/synthetic_engine_dir.py) are tiny hand-built ONNX models with the contract's
exact I/O, so these tests exercise the runtime alone in well under a second per run. Parity with the PyTorch
sampler on real exported graphs is in test_runtime_parity.py.
"""

import threading
from pathlib import Path

import numpy as np
import pytest

from tav.runtime import NonFiniteError, VideoPipeline
from tav.runtime.cli import main as tav_run
from tav.runtime.manifest import EngineDirError, file_sha256

from fixtures.commands import error_of
from fixtures.synthetic_engine_dir import D, F, H, W, edited_copy, h, w, write_engine_dir


@pytest.fixture(scope="module")
def engine_dir(tiny_sd, tmp_path_factory) -> Path:
    return write_engine_dir(tmp_path_factory.mktemp("synthetic") / "engine", tiny_sd / "tokenizer")


@pytest.fixture(scope="module")
def pipe(engine_dir):
    with VideoPipeline.load(engine_dir, backend="auto", device="cpu") as pipeline:
        yield pipeline


# --- a run --------------------------------------------------------------------------------------------


def test_run_returns_frames_latents_and_timings(pipe):
    result = pipe("a man is skiing", steps=3)
    assert result.frames.dtype == np.uint8 and result.frames.shape == (F, H, W, 3)
    assert result.latents.dtype == np.float32 and result.latents.shape == (1, 4, F, h, w)
    assert {"tokenize", "text_encoder", "denoise", "denoise_per_step", "decode", "total"} <= set(result.timings)
    assert pipe.backend == "onnxruntime" and pipe.device == "cpu"


def test_callback_sees_each_denoising_step_and_the_final_latents(pipe):
    seen = []
    result = pipe("a man is skiing", steps=3, callback=lambda i, total, t, x: seen.append((i, total, int(t), x.copy())))
    assert [(i, total, t) for i, total, t, _ in seen] == [
        (i, 3, int(t)) for i, t in enumerate(pipe.scheduler.timesteps(3))]
    np.testing.assert_array_equal(seen[-1][3], result.latents)


def test_ort_threads_sets_each_sessions_intra_op_threads_and_bad_counts_are_refused(engine_dir):
    with VideoPipeline.load(engine_dir, device="cpu", ort_threads=1) as one:
        assert {n: g.session.get_session_options().intra_op_num_threads for n, g in one._graphs.graphs.items()} == {
            "text_encoder": 1, "unet": 1, "vae_decoder": 1}
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="ort_threads must be a positive integer or None"):
            VideoPipeline.load(engine_dir, device="cpu", ort_threads=bad)


def test_fp16_graphs_get_fp16_inputs_and_give_float32_latents(engine_dir, tiny_sd, tmp_path, pipe):
    with VideoPipeline.load(write_engine_dir(tmp_path / "fp16", tiny_sd / "tokenizer", "fp16"), device="cpu") as pipe16:
        assert pipe16.float_dtype == np.float16
        half = pipe16("a man is skiing", steps=3, guidance=7.5)
    full = pipe("a man is skiing", steps=3, guidance=7.5)
    assert half.latents.dtype == np.float32 and half.frames.dtype == np.uint8
    np.testing.assert_allclose(half.latents, full.latents, atol=0.05)  # fp16 rounding of the graph I/O only


@pytest.mark.parametrize("chunk", [1, 2])
def test_frames_decode_in_chunks_of_the_decoders_batch_and_equal_one_batch_of_all(tiny_sd, tmp_path, pipe, chunk):
    """F = 3 frames through a decoder graph of batch 1 (three runs) or 2 (two runs, the last padded): the frames
    of one F-frame decoder run, byte for byte (the synthetic decoder, like the VAE's, maps each frame on its own)."""
    root = write_engine_dir(tmp_path / "chunked", tiny_sd / "tokenizer", decode_batch=chunk)
    with VideoPipeline.load(root, device="cpu") as chunked:
        decoder, runs = chunked._graphs.graphs["vae_decoder"], []
        real_run = decoder.run
        decoder.run = lambda feeds, *a, **k: runs.append(feeds["latents"].shape[0]) or real_run(feeds, *a, **k)
        got = chunked("a cat", init="noise", seed=4, steps=2)
    want = pipe("a cat", init="noise", seed=4, steps=2)
    assert runs == [chunk] * -(-F // chunk)
    np.testing.assert_array_equal(got.latents, want.latents)
    np.testing.assert_array_equal(got.frames, want.frames)
    np.testing.assert_array_equal(pipe.decode(got.latents), want.frames)  # decode alone: a result's latents again


def test_an_engine_dir_from_before_chunked_decoding_decodes_all_frames_in_one_run(engine_dir, tmp_path, pipe):
    root = edited_copy(engine_dir, tmp_path, lambda root, manifest: manifest.pop("decode_batch"))
    with VideoPipeline.load(root, device="cpu") as old:
        assert old.manifest.decode_batch == F
        np.testing.assert_array_equal(old("a cat", steps=2).frames, pipe("a cat", steps=2).frames)


def test_decode_refuses_latents_of_another_shape(pipe):
    with pytest.raises(ValueError, match=rf"latents of shape \[1, 4, {F + 1}, {h}, {w}\] cannot be decoded"):
        pipe.decode(np.zeros((1, 4, F + 1, h, w), np.float32))


def test_empty_prompt_works(pipe):
    assert pipe("", steps=2).frames.shape == (F, H, W, 3)


def test_same_arguments_give_identical_results_and_seed_matters(pipe):
    a = pipe("a cat", init="noise", seed=5, steps=3, eta=0.5)
    b = pipe("a cat", init="noise", seed=5, steps=3, eta=0.5)
    c = pipe("a cat", init="noise", seed=6, steps=3, eta=0.5)
    assert np.array_equal(a.latents, b.latents) and not np.array_equal(a.latents, c.latents)


def test_loop_is_ddim_with_cfg_over_the_graphs(pipe, engine_dir):
    """The runtime's loop equals a hand-written loop over the same ONNX graphs (contract conventions)."""
    import onnxruntime as ort

    from tav.runtime.ddim import DDIMConfig, DDIMScheduler

    run = {n: ort.InferenceSession(str(engine_dir / f"{n}.onnx")) for n in ("text_encoder", "unet", "vae_decoder")}
    ids = pipe.tokenizer(["ugly", "a dog"])
    text = run["text_encoder"].run(None, {"input_ids": ids})[0]
    sched = DDIMScheduler(DDIMConfig.from_file(engine_dir / "scheduler_config.json"))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, F, h, w), dtype=np.float32)
    for t in sched.timesteps(4):
        u, c = run["unet"].run(None, {"sample": np.concatenate([x, x]), "timestep": np.array([t], np.float32),
                                      "encoder_hidden_states": text})[0][:, None]
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        x = sched.step(u + np.float32(7.5) * (c - u), int(t), x, 4, eta=0.3, noise=noise)
    result = pipe("a dog", negative_prompt="ugly", steps=4, guidance=7.5, seed=3, init="noise", eta=0.3)
    np.testing.assert_array_equal(result.latents, x)


def test_guidance_one_uses_the_prompt_only(pipe):
    """At guidance 1 the negative prompt cannot matter: eps_u + 1 * (eps_c - eps_u) = eps_c."""
    a = pipe("a dog", negative_prompt="ugly", guidance=1.0, steps=3)
    b = pipe("a dog", negative_prompt="something else", guidance=1.0, steps=3)
    np.testing.assert_array_equal(a.latents, b.latents)


# --- argument errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_non_positive_steps_are_rejected(pipe, steps):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        pipe("a dog", steps=steps)


def test_bad_init_and_eta_are_rejected(pipe):
    with pytest.raises(ValueError, match="init must be one of"):
        pipe("a dog", init="video", steps=1)
    with pytest.raises(ValueError, match="starting latents must have shape"):
        pipe("a dog", init=np.zeros((1, 4, F + 1, h, w), np.float32), steps=1)
    with pytest.raises(ValueError, match="eta must be between 0"):
        pipe("a dog", eta=-0.1, steps=1)


def test_inverted_init_without_inverted_latents_is_a_clear_error(engine_dir, tmp_path):
    def drop_latents(root, manifest):
        (root / "inverted_latents.npy").unlink()
        del manifest["files"]["inverted_latents.npy"]

    with VideoPipeline.load(edited_copy(engine_dir, tmp_path, drop_latents), device="cpu") as pipe:
        with pytest.raises(ValueError, match="no inverted_latents.npy.*init='noise'"):
            pipe("a dog", steps=1)
        assert pipe("a dog", steps=1, init="noise").frames.shape == (F, H, W, 3)


# --- NaN / Inf ----------------------------------------------------------------------------------------


def test_nan_starting_latents_are_refused(pipe):
    start = np.zeros((1, 4, F, h, w), np.float32)
    start[0, 1, 1, 1, 1] = np.nan
    with pytest.raises(NonFiniteError, match="starting latents contain NaN"):
        pipe("a dog", init=start, steps=2)


def test_nan_inverted_latents_file_is_refused(engine_dir, tmp_path):
    def poison(root, manifest):
        latents = np.load(root / "inverted_latents.npy")
        latents[0, 0, 0, 0, 0] = np.nan
        np.save(root / "inverted_latents.npy", latents)
        manifest["files"]["inverted_latents.npy"] = file_sha256(root / "inverted_latents.npy")  # a "valid" bad export

    with VideoPipeline.load(edited_copy(engine_dir, tmp_path, poison), device="cpu") as pipe:
        with pytest.raises(NonFiniteError, match="NaN"):
            pipe("a dog", steps=2)


def test_overflowing_unet_raises_instead_of_writing_a_black_video(pipe, monkeypatch):
    unet = pipe._graphs.graphs["unet"]
    monkeypatch.setattr(unet, "run",
                        lambda feeds, *_, **__: {"noise_pred": np.full(feeds["sample"].shape, np.inf, np.float32)})
    with pytest.raises(NonFiniteError, match=r"step 1/3.*fp16"):
        pipe("a dog", steps=3)
    monkeypatch.setattr(pipe, "manifest", pipe.manifest.__class__(**{**pipe.manifest.__dict__, "precision": "fp16"}))
    with pytest.raises(NonFiniteError, match=r"--precision fp32"):
        pipe("a dog", steps=3)


# --- manifest checks ----------------------------------------------------------------------------------


def _edit_file_bytes(relative):
    def edit(root, manifest):
        path = root / relative
        path.write_bytes(path.read_bytes() + b" ")
    return edit


def _set(key, value):
    def edit(root, manifest):
        manifest[key] = value
    return edit


def _remove_graph_file(root, manifest):
    (root / "unet.onnx").unlink()


def _declare_other_unet_io(root, manifest):
    """A manifest consistent with the contract (frames + 1, the decoder's batch kept) that unet.onnx does not match."""
    manifest["frames"] = F + 1
    for graph in manifest["graphs"].values():
        for tensor in graph["inputs"] + graph["outputs"]:
            if tensor["name"] in ("sample", "noise_pred"):
                tensor["shape"][2] = F + 1
    manifest["files"].pop("inverted_latents.npy")  # its [.., F, ..] shape would be refused first


@pytest.mark.parametrize("edit, message", [
    (_edit_file_bytes("tokenizer/tokenizer.json"), "tokenizer/tokenizer.json does not match its sha256"),
    (_edit_file_bytes("scheduler_config.json"), "scheduler_config.json does not match its sha256"),
    (_edit_file_bytes("unet.onnx"), "unet.onnx does not match its sha256"),
    (_edit_file_bytes("inverted_latents.npy"), "inverted_latents.npy does not match its sha256"),
    (_set("frames", F + 2), r"unet graph declares sample float32\[2, 4, 3"),
    (_set("schema_version", 3), "schema_version is 3"),
    (_set("precision", "int8"), "precision is 'int8', expected one of 'fp32', 'fp16'"),
    (_remove_graph_file, "unet.onnx is missing"),
    (_declare_other_unet_io,
     r"unet.onnx has sample float32\[2, 4, 3, 4, 6\] instead of sample float32\[2, 4, 4, 4, 6\]"),
    (_set("decode_batch", F + 1), f"decode_batch {F + 1} is more than its {F} frames"),
    (_set("decode_batch", 0), "decode_batch is 0, expected a positive integer"),
    (_set("decode_batch", 2),
     r"vae_decoder graph declares latents float32\[3, 4, 4, 6\] instead of latents float32\[2, 4"),
], ids=["tokenizer-hash", "scheduler-hash", "graph-hash", "latents-hash", "wrong-frames", "schema", "precision",
        "missing-graph", "declared-io-vs-onnx", "decode-batch-over-frames", "decode-batch-zero",
        "decode-batch-vs-graph"])
def test_tampered_engine_dir_is_refused_in_one_line(engine_dir, tmp_path, edit, message):
    root = edited_copy(engine_dir, tmp_path, edit)
    with pytest.raises(EngineDirError, match=message) as err:
        VideoPipeline.load(root, device="cpu")
    assert "\n" not in str(err.value) and "tav-export --weights RUN_DIR --out" in str(err.value)


def test_not_an_engine_dir_is_refused(tmp_path):
    with pytest.raises(EngineDirError, match="no manifest.json"):
        VideoPipeline.load(tmp_path, device="cpu")


# --- concurrency --------------------------------------------------------------------------------------


def test_four_threads_on_one_pipeline_give_the_sequential_results(pipe):
    jobs = [dict(prompt=f"prompt {i}", seed=i, init="noise" if i % 2 else "inverted", eta=0.2 * i, steps=4)
            for i in range(4)]
    sequential = [pipe(**job).latents for job in jobs]
    results, errors = [None] * 4, []

    def worker(i):
        try:
            for _ in range(3):  # repeat so calls really interleave
                results[i] = pipe(**jobs[i]).latents
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, sequential, strict=True):
        np.testing.assert_array_equal(got, want)


# --- CLI ----------------------------------------------------------------------------------------------


def test_cli_writes_npy_and_prints_timings(engine_dir, tmp_path, capsys):
    out = tmp_path / "video.npy"
    tav_run(["--engine", str(engine_dir), "--prompt", "a man is skiing", "--steps", "2", "--device", "cpu",
             "--out", str(out)])
    frames = np.load(out)
    assert frames.dtype == np.uint8 and frames.shape == (F, H, W, 3)
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    for stage in ("tokenize", "text encoder", "denoise (2 steps)", "per step", "decode", "write"):
        assert stage in captured.err


def test_cli_writes_gif_quietly(engine_dir, tmp_path, capsys):
    out = tmp_path / "video.gif"
    tav_run(["--engine", str(engine_dir), "--prompt", "x", "--steps", "1", "--quiet", "--out", str(out), "--fps", "4"])
    assert out.stat().st_size > 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps 0 is not a whole number from 1 to 1000"),
    (["--out", "video.avi"], "unknown suffix"),
    (["--backend", "tensorrt"], "cannot use TensorRT"),
    (["--device", "cuda"], "cannot run on cuda"),
])
def test_cli_errors_are_one_line(engine_dir, tmp_path, args, message):
    argv = ["--engine", str(engine_dir), "--prompt", "x", "--out", str(tmp_path / "v.npy"), *args]
    assert message in error_of(tav_run, argv, "tav-run")


# --- the IOBinding path (CUDA's) exercised on the CPU ------------------------------------------------


def test_io_bound_graph_equals_plain_run_and_results_never_alias(engine_dir):
    from tav.runtime.backend_ort import OrtGraph

    plain = OrtGraph(engine_dir / "unet.onnx")
    bound = OrtGraph(engine_dir / "unet.onnx", io_binding=True)
    rng = np.random.default_rng(0)
    feeds = [{"sample": rng.standard_normal((2, 4, F, h, w), dtype=np.float32), "timestep": np.array([t], np.float32),
              "encoder_hidden_states": rng.standard_normal((2, 77, D), dtype=np.float32)} for t in (981, 1)]
    first = bound.run(feeds[0])["noise_pred"]
    first_copy = first.copy()
    second = bound.run(feeds[1])["noise_pred"]
    np.testing.assert_array_equal(first, first_copy)  # the second run did not overwrite the first result
    np.testing.assert_array_equal(second, plain.run(feeds[1])["noise_pred"])
    assert bound.inputs == plain.inputs and [s.dtype for s in bound.outputs] == ["float32"]


def test_cpu_sessions_plan_no_memory_pattern_and_repeat_runs_exactly(engine_dir):
    """Without the pattern a second UNet step reuses the arena's blocks instead of allocating one more block of all
    activations beside them (SD-1.5 8x256x256: 7.35 GB -> 5.51 GB peak, docs/PERF.md "Real size")."""
    from tav.runtime.backend_ort import OrtGraph

    graph = OrtGraph(engine_dir / "unet.onnx")
    assert graph.session.get_session_options().enable_mem_pattern is False
    rng = np.random.default_rng(1)
    feeds = {"sample": rng.standard_normal((2, 4, F, h, w), dtype=np.float32), "timestep": np.array([500], np.float32),
             "encoder_hidden_states": rng.standard_normal((2, 77, D), dtype=np.float32)}
    runs = [graph.run(feeds)["noise_pred"] for _ in range(3)]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def test_profile_dir_gets_the_sessions_per_node_trace(engine_dir, tmp_path):
    from tav.runtime.backend_ort import OrtGraph

    graph = OrtGraph(engine_dir / "vae_decoder.onnx", profile_dir=tmp_path)
    graph.run({s.name: np.zeros(s.shape, np.float32) for s in graph.inputs})
    graph.close()
    assert [p.name.startswith("vae_decoder") and p.suffix == ".json" for p in tmp_path.iterdir()] == [True]
    assert not OrtGraph(engine_dir / "vae_decoder.onnx").session.get_session_options().enable_profiling


def test_a_closed_pipeline_says_so(engine_dir):
    pipe = VideoPipeline.load(engine_dir, device="cpu")
    pipe.close()
    with pytest.raises(RuntimeError, match="closed"):
        pipe("a dog", steps=1)


def test_auto_falls_back_to_onnxruntime_when_tensorrt_cannot_load_the_plans(engine_dir, monkeypatch, caplog):
    import tav.runtime.pipeline as pipeline_module
    from tav.runtime.backends import BackendChoice, LoadedGraphs, choose_backend

    def choose(manifest, backend, device, allow_plugin=False):
        trt = backend in ("auto", "tensorrt")
        return BackendChoice("tensorrt", "cuda", "test") if trt else choose_backend(manifest, backend, "cpu")

    def load(manifest, choice, allow_plugin=False, keep_loaded=True, **options):
        if choice.name == "tensorrt":
            raise RuntimeError("TensorRT could not deserialize unet.plan")
        return LoadedGraphs(manifest, choice, keep_loaded=keep_loaded, **options)

    monkeypatch.setattr(pipeline_module, "choose_backend", choose)
    monkeypatch.setattr(pipeline_module, "verify_files", lambda manifest, backend: None)
    monkeypatch.setattr(pipeline_module, "LoadedGraphs", load)
    with VideoPipeline.load(engine_dir) as pipe:
        assert (pipe.backend, pipe.device) == ("onnxruntime", "cpu")
    assert "falling back to ONNX Runtime" in caplog.text
    with pytest.raises(RuntimeError, match="deserialize"):
        VideoPipeline.load(engine_dir, backend="tensorrt")
