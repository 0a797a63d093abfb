"""tav-run over exported graphs reproduces the PyTorch reference sampler, and runs without torch.

The suite's shared random RUN_DIR (perturbed tuned tensors, so every tuned path, temporal attention
included, matters; random inverted latents) and its shared fp32 ONNX ENGINE_DIR (tests/fixtures:
3 frames at 64x64), sampled with 4 DDIM steps.

Tolerances: ORT's fp32 kernels differ from torch's in summation order (GEMM blocking,
fused attention/LayerNorm), about 1e-6 relative per UNet call; CFG at 12.5 amplifies the
difference of the two halves and the DDIM steps carry it forward. Measured: latents max abs
error <= 6e-5 at |latents| ~ 15-40 (4 and 20 steps; 3.6e-5 on the shared 3-frame run), frames
differ by at most 1 level in a handful of pixels. The asserted 1e-3 / 2 levels leave ~15x headroom
for other CPUs' kernels.
"""

import json
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import onnx
import pytest

from tav.export import export_engine
from tav.runtime import VideoPipeline
from tav.tuner.sampler import PipelineParts, sample
from tav.tuner.tuned_weights import load_tuned

from fixtures.run_dirs import FRAMES, HEIGHT, WIDTH

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tracing and the PyTorch references: tiny ops

F, H, W = FRAMES, HEIGHT, WIDTH
STEPS = 4
LATENT_TOL = 1e-3
FRAME_TOL = 2


@pytest.fixture(scope="module")
def run_dir(random_run):
    return random_run


@pytest.fixture(scope="module")
def engine_dir(baked_engine):
    return baked_engine  # random_run exported by tav-export's defaults: fp32 ONNX graphs, fused attention


@pytest.fixture(scope="module")
def reference(run_dir):
    tuned = load_tuned(run_dir)
    parts = PipelineParts.load(tuned.base_dir)
    return lambda prompt, **kw: sample(tuned, prompt, parts=parts, **kw)


@pytest.fixture(scope="module")
def pipe(engine_dir):
    with VideoPipeline.load(engine_dir, backend="onnxruntime", device="cpu") as pipeline:
        yield pipeline


def assert_close(got, want):
    latent_err = float(np.abs(got.latents - want.latents).max())
    frame_err = int(np.abs(got.frames.astype(np.int16) - want.frames.astype(np.int16)).max())
    assert got.frames.shape == want.frames.shape == (F, H, W, 3)
    assert latent_err <= LATENT_TOL, f"latents max abs err {latent_err:.2e}"
    assert frame_err <= FRAME_TOL, f"frames max diff {frame_err}"


@pytest.mark.parametrize("guidance", [12.5, 1.0])
@pytest.mark.parametrize("init", ["inverted", "noise"])
def test_runtime_reproduces_the_pytorch_sampler(pipe, reference, guidance, init):
    kw = dict(negative_prompt="", steps=STEPS, guidance=guidance, seed=3, init=init)
    assert_close(pipe("a man is skiing", **kw), reference("a man is skiing", **kw))


def test_runtime_reproduces_the_sampler_with_eta_and_a_negative_prompt(pipe, reference):
    kw = dict(negative_prompt="blurry, low quality", steps=STEPS, guidance=7.5, seed=11, init="noise", eta=0.6)
    assert_close(pipe("spider man is skiing on the beach, cartoon style", **kw),
                 reference("spider man is skiing on the beach, cartoon style", **kw))


def test_four_threads_on_exported_graphs_give_the_sequential_results(pipe):
    prompts = ["a man is skiing", "", "a rabbit eating a watermelon", "a car turning"]
    sequential = [pipe(p, steps=2, seed=i).frames for i, p in enumerate(prompts)]
    results = [None] * 4
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, pipe(prompts[i], steps=2, seed=i).frames))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, sequential, strict=True):
        np.testing.assert_array_equal(got, want)


# --- fused attention: against the standard-op graphs, older ENGINE_DIRs, ORTs without the op -----------


@pytest.fixture(scope="module")
def standard_engine_dir(run_dir, tmp_path_factory):
    return export_engine(run_dir, tmp_path_factory.mktemp("standard") / "engine", precision="fp32",
                         attention="standard")


def test_fused_graphs_sample_what_the_standard_op_graphs_sample(pipe, engine_dir, standard_engine_dir, reference):
    fused = json.loads((engine_dir / "manifest.json").read_text())["graphs"]
    plain = json.loads((standard_engine_dir / "manifest.json").read_text())["graphs"]
    assert (fused["unet"]["attention"]["fused"], plain["unet"]["attention"]["fused"]) == (30, 0)
    kw = dict(steps=STEPS, guidance=12.5, seed=3, init="noise")
    with VideoPipeline.load(standard_engine_dir, backend="onnxruntime", device="cpu") as standard:
        unfused = standard("a man is skiing", **kw)
    assert_close(pipe("a man is skiing", **kw), unfused)
    assert_close(unfused, reference("a man is skiing", **kw))


def _rewrite_manifest(root, edit):
    data = json.loads((root / "manifest.json").read_text())
    edit(data)
    (root / "manifest.json").write_text(json.dumps(data))


def test_schema_1_engine_dirs_from_before_fused_attention_still_load(standard_engine_dir, tmp_path, reference, caplog):
    old = tmp_path / "old"
    shutil.copytree(standard_engine_dir, old)

    def as_schema_1(data):  # what tav-export wrote before issue 10: no attention fields
        data["schema_version"] = 1
        data.pop("attention")
        for graph in data["graphs"].values():
            graph.pop("attention")

    _rewrite_manifest(old, as_schema_1)
    kw = dict(steps=STEPS, guidance=12.5, seed=3, init="noise")
    with caplog.at_level("WARNING", logger="tav.runtime"), VideoPipeline.load(old, device="cpu") as legacy:
        assert_close(legacy("a man is skiing", **kw), reference("a man is skiing", **kw))
    assert "re-export" in caplog.text


def test_an_onnxruntime_without_the_fused_op_is_refused_in_one_line(engine_dir, tmp_path):
    """A build without contrib ops cannot load MultiHeadAttention; here the node names an op no ORT has."""
    from tav.runtime.manifest import file_sha256

    broken = tmp_path / "engine"
    shutil.copytree(engine_dir, broken)
    model = onnx.load(str(broken / "unet.onnx"))
    for node in model.graph.node:
        if node.op_type == "MultiHeadAttention":
            node.op_type = "MultiHeadAttentionFromTheFuture"
    onnx.save(model, str(broken / "unet.onnx"))
    _rewrite_manifest(broken, lambda data: data["graphs"]["unet"].update(sha256=file_sha256(broken / "unet.onnx")))
    with pytest.raises(RuntimeError, match=r"cannot load its 30 fused attention nodes") as err:
        VideoPipeline.load(broken, backend="onnxruntime", device="cpu")
    assert "\n" not in str(err.value) and "tav-export --attention standard" in str(err.value)


LEAN_RUN = textwrap.dedent("""
    import importlib.abc, sys
    HEAVY = ("torch", "diffusers", "transformers")

    class Forbid(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ImportError(f"{name} must not be imported by the runtime")

    sys.meta_path.insert(0, Forbid())
    from tav.runtime.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit as exit:
        if exit.code not in (None, 0):
            raise
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    assert not loaded, loaded
    print("LEAN OK")
""")


def test_tav_run_never_imports_torch_diffusers_or_transformers(engine_dir, pipe, tmp_path):
    out = tmp_path / "video.npy"
    argv = ["--engine", str(engine_dir), "--prompt", "a man is skiing", "--steps", "2", "--seed", "5", "--quiet",
            "--out", str(out)]
    done = subprocess.run([sys.executable, "-c", LEAN_RUN, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LEAN OK" in done.stdout
    frames = np.load(out)
    expected = pipe("a man is skiing", steps=2, seed=5).frames
    assert frames.dtype == np.uint8 and frames.shape == (F, H, W, 3)
    assert np.abs(frames.astype(np.int16) - expected).max() <= 1  # another process, same ORT kernels


# --- on a GPU (the lent machine; skipped elsewhere) ---------------------------------------------------


def _ort_cuda_ready() -> bool:
    from tav.runtime import backend_ort, cuda_rt

    return backend_ort.cuda_available() and cuda_rt.gpu_count() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not _ort_cuda_ready(), reason="needs onnxruntime-gpu and a CUDA GPU")
def test_onnxruntime_cuda_with_a_cuda_graph_matches_the_cpu_run(engine_dir, pipe):
    with VideoPipeline.load(engine_dir, backend="onnxruntime", device="cuda") as gpu:
        assert gpu._graphs.graphs["unet"].cuda_graph, "the UNet should run as a captured CUDA graph"
        kw = dict(steps=STEPS, guidance=12.5, seed=3, init="noise")
        first, again = gpu("a man is skiing", **kw), gpu("a man is skiing", **kw)  # capture, then replay
        np.testing.assert_array_equal(first.latents, again.latents)
        cpu = pipe("a man is skiing", **kw)
        # cuDNN/cuBLAS may use TF32 for fp32 convolutions and GEMMs: looser than the CPU-vs-torch bound.
        assert np.abs(first.latents - cpu.latents).max() <= 5e-2
        assert np.abs(first.frames.astype(np.int16) - cpu.frames).max() <= 8
        other = gpu("a rabbit", **{**kw, "seed": 4})  # new inputs through the same bound buffers
        assert not np.array_equal(other.latents, first.latents)
