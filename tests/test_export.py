"""tav-export on the tiny pipeline: graphs that match PyTorch, are static and plain, and an ENGINE_DIR per contract.

Expensive exports are module fixtures shared by the tests that read them. Parity is
checked twice: the manifest's numbers, and recomputed here against PyTorch models
loaded independently of the exporter (load_tuned, the base folder's text encoder / VAE).
"""

import json

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file

from tav.export import export_engine
from tav.export.parity import TOLERANCE_REL_L2
from tav.tuner.model.sd_folder import file_sha256, folder_hash, load_text_encoder, load_vae
from tav.tuner.tuned_weights import load_tuned

from fixtures.run_dirs import FRAMES, HEIGHT, WIDTH

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tracing and the PyTorch references: tiny ops

GRAPHS = ("text_encoder", "unet", "vae_decoder")
D = 32  # the tiny text encoder's width


def _has_tensorrt_rtx():
    try:
        import tensorrt_rtx  # noqa: F401  (importable is what counts)
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def run_dir(random_run):
    return random_run


@pytest.fixture(scope="module")
def fp32_engine(baked_engine):
    return baked_engine


@pytest.fixture(scope="module")
def fp16_engine(run_dir, tmp_path_factory):
    """fp16, with every weight in external data files (the >2 GB path, forced by a zero threshold)
    and TensorRT-RTX plans when the wheel is here: one export proves all three, as the tiny
    suite must stay fast on two shared cores."""
    backend = "all" if _has_tensorrt_rtx() else "onnx"
    out = tmp_path_factory.mktemp("fp16") / "engine"
    return export_engine(run_dir, out, precision="fp16", backend=backend, external_data_threshold=0)


@pytest.fixture(scope="module")
def torch_models(run_dir):
    """The PyTorch fp32 models, loaded without the exporter's code."""
    tuned = load_tuned(run_dir)
    return tuned.unet.eval(), load_text_encoder(tuned.base_dir), load_vae(tuned.base_dir)


def manifest(engine_dir) -> dict:
    return json.loads((engine_dir / "manifest.json").read_text())


def independent_inputs(seed=7) -> dict:
    # Not the exporter's seeded inputs: a different seed, realistic token ids and a late timestep.
    rng = np.random.default_rng(seed)
    ids = np.full((2, 77), 49407, dtype=np.int64)
    ids[:, 0] = 49406
    ids[:, 1:9] = rng.integers(0, 49406, (2, 8))
    return {
        "text_encoder": {"input_ids": ids},
        "unet": {
            "sample": rng.standard_normal((2, 4, FRAMES, HEIGHT // 8, WIDTH // 8), dtype=np.float32),
            "timestep": np.array([901.0], dtype=np.float32),
            "encoder_hidden_states": rng.standard_normal((2, 77, D), dtype=np.float32),
        },
        "vae_decoder": {"latents": 3 * rng.standard_normal((FRAMES, 4, HEIGHT // 8, WIDTH // 8), dtype=np.float32)},
    }


@torch.no_grad()
def torch_reference(torch_models, name, feeds):
    unet, text_encoder, vae = torch_models
    t = {k: torch.from_numpy(v.astype(np.int64 if v.dtype == np.int64 else np.float32)) for k, v in feeds.items()}
    if name == "text_encoder":
        return text_encoder(t["input_ids"]).last_hidden_state.numpy()
    if name == "unet":
        return unet(t["sample"], t["timestep"], t["encoder_hidden_states"]).sample.numpy()
    return vae.decode(t["latents"]).sample.numpy()


def rel_l2(output, reference):
    output, reference = output.astype(np.float64), reference.astype(np.float64)
    return np.linalg.norm(output - reference) / np.linalg.norm(reference)


def run_onnx(path, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    types = {i.name: np.float16 if "float16" in i.type else None for i in session.get_inputs()}
    feeds = {k: v.astype(types[k]) if types[k] else v for k, v in feeds.items()}
    return session.run(None, feeds)[0].astype(np.float32)


def test_fp32_graphs_match_pytorch_in_manifest_and_recomputed(fp32_engine, torch_models):
    graphs = manifest(fp32_engine)["graphs"]
    for name, feeds in independent_inputs().items():
        parity = graphs[name]["parity"]
        assert parity["tolerance_rel_l2"] == 1e-4 and parity["rel_l2_err"] <= 1e-4, (name, parity)
        recomputed = rel_l2(run_onnx(fp32_engine / f"{name}.onnx", feeds), torch_reference(torch_models, name, feeds))
        assert recomputed <= 1e-4, (name, recomputed)


def test_fp16_graphs_are_fp16_and_within_documented_tolerance(fp16_engine, torch_models):
    tolerance = TOLERANCE_REL_L2["fp16"]
    data = manifest(fp16_engine)
    assert data["precision"] == "fp16"
    for name, feeds in independent_inputs().items():
        graph = data["graphs"][name]
        dtypes = {t["name"]: t["dtype"] for t in graph["inputs"] + graph["outputs"]}
        assert all(d == ("int64" if n == "input_ids" else "float32" if n == "timestep" else "float16")
                   for n, d in dtypes.items())
        assert graph["parity"]["rel_l2_err"] <= tolerance
        # Reference on the same fp16-rounded inputs: the error is the graph's arithmetic alone.
        rounded = {k: v.astype(np.float16) if v.dtype == np.float32 and k != "timestep" else v
                   for k, v in feeds.items()}
        output = run_onnx(fp16_engine / f"{name}.onnx", rounded)
        assert np.isfinite(output).all()
        assert rel_l2(output, torch_reference(torch_models, name, rounded)) <= tolerance, name


def test_graphs_are_static_without_forbidden_ops(fp32_engine, fp16_engine):
    for engine in (fp32_engine, fp16_engine):
        data = manifest(engine)
        for name in GRAPHS:
            model = onnx.load(str(engine / f"{name}.onnx"))
            assert model.opset_import[0].version >= 17
            ops = {n.op_type for n in model.graph.node}
            assert not ops & {"ScatterND", "Loop", "If"}, (name, ops)
            specs = data["graphs"][name]["inputs"] + data["graphs"][name]["outputs"]
            for value, spec in zip([*model.graph.input, *model.graph.output], specs, strict=True):
                dims = value.type.tensor_type.shape.dim
                assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), (name, value.name)
                assert (value.name, [d.dim_value for d in dims]) == (spec["name"], spec["shape"])


def test_contract_names_and_shapes(fp32_engine):
    graphs = manifest(fp32_engine)["graphs"]
    io = {name: [(t["name"], tuple(t["shape"]), t["dtype"]) for t in g["inputs"] + g["outputs"]]
          for name, g in graphs.items()}
    latents = (2, 4, FRAMES, HEIGHT // 8, WIDTH // 8)
    assert io["text_encoder"] == [("input_ids", (2, 77), "int64"), ("last_hidden_state", (2, 77, D), "float32")]
    assert io["unet"] == [
        ("sample", latents, "float32"),
        ("timestep", (1,), "float32"),
        ("encoder_hidden_states", (2, 77, D), "float32"),
        ("noise_pred", latents, "float32"),
    ]
    assert io["vae_decoder"] == [
        ("latents", (FRAMES, 4, HEIGHT // 8, WIDTH // 8), "float32"),
        ("images", (FRAMES, 3, HEIGHT, WIDTH), "float32"),
    ]


def _softmax_in_attention(model, softmax) -> bool:
    """Independent of the exporter's checker: a MatMul within 4 ops upstream, only MatMuls (past Casts) downstream."""
    producer = {o: n for n in model.graph.node for o in n.output}
    node = softmax
    for _ in range(4):
        node = next((producer[i] for i in node.input if i in producer and producer[i].op_type != "Constant"), None)
        if node is None or node.op_type == "MatMul":
            break
    readers, frontier = [], [softmax.output[0]]
    while frontier:
        name = frontier.pop()
        for n in model.graph.node:
            if name in n.input:
                (frontier.append(n.output[0]) if n.op_type == "Cast" else readers.append(n.op_type))
    return node is not None and node.op_type == "MatMul" and readers and set(readers) == {"MatMul"}


def _multihead_attention_nodes(model):
    return [n for n in model.graph.node if (n.domain, n.op_type) == ("com.microsoft", "MultiHeadAttention")]


def test_onnxruntime_graphs_run_every_unet_and_vae_attention_as_one_fused_node(fp32_engine, fp16_engine):
    # Tiny: 10 transformer blocks x (attn1, attn2, attn_temp); 1 VAE mid-block attention; CLIP (2 layers) stays plain.
    fused = {"unet": 30, "text_encoder": 0, "vae_decoder": 1}
    for engine in (fp32_engine, fp16_engine):
        graphs = manifest(engine)["graphs"]
        for name, count in fused.items():
            model = onnx.load(str(engine / f"{name}.onnx"))
            nodes = _multihead_attention_nodes(model)
            softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
            assert len(nodes) == count and graphs[name]["attention"]["fused"] == count, name
            assert len(softmaxes) == (2 if name == "text_encoder" else 0), name
            assert all(_softmax_in_attention(model, s) for s in softmaxes), name
            # SDPA's default scale: 1/sqrt(head size), the head size read off each node's query width.
            widths = _last_dims(model)
            for node in nodes:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                assert attrs["num_heads"] == (4 if name == "unet" else 1), name  # the tiny UNet has 4 heads; VAE 1
                head_size = widths[node.input[0]] / attrs["num_heads"]
                assert attrs["scale"] == pytest.approx(head_size**-0.5, rel=1e-6), name


def _scaled_before_first_matmul(model, softmax) -> bool:
    """TensorRT's attention fusion wants the scale on Q and/or K before the first MatMul, not on the scores:
    the Softmax reads the MatMul directly, and both its inputs are a Mul by a constant (here d^-1/4 each)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    scores = producer.get(softmax.input[0])
    if scores is None or scores.op_type != "MatMul":
        return False
    sides = [producer.get(i) for i in scores.input]
    return all(side is not None and side.op_type == "Mul" and set(side.input) & constants for side in sides)


def _last_dims(model) -> dict:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input]
    return {v.name: v.type.tensor_type.shape.dim[-1].dim_value for v in values if v.type.tensor_type.shape.dim}


@pytest.mark.trt
def test_tensorrt_plans_are_built_from_pinned_standard_op_twins(fp16_engine, torch_models):
    """TensorRT's parser has no com.microsoft ops: its source graphs keep MatMul-Softmax-MatMul, pinned and checked."""
    graphs = manifest(fp16_engine)["graphs"]
    for name, softmax_count in {"unet": 30, "vae_decoder": 1}.items():
        source = graphs[name]["tensorrt"]["onnx"]
        path = fp16_engine / source["onnx"]
        assert source["onnx"] == f"{name}.trt.onnx" and source["sha256"] == file_sha256(path)
        assert source["parity"]["rel_l2_err"] <= TOLERANCE_REL_L2["fp16"]
        model = onnx.load(str(path))
        softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
        assert not _multihead_attention_nodes(model) and len(softmaxes) == softmax_count
        assert all(_softmax_in_attention(model, s) for s in softmaxes), name
        assert all(_scaled_before_first_matmul(model, s) for s in softmaxes), name
    # The text encoder is not fused, so its one graph serves both backends.
    assert "onnx" not in graphs["text_encoder"]["tensorrt"]


def test_manifest_hashes_every_file_and_pins_the_sources(fp32_engine, run_dir, tiny_sd):
    data = manifest(fp32_engine)
    assert data["schema_version"] == 2 and data["kv_gather"] == "onnx" and data["attention"] == "fused"
    assert (data["frames"], data["height"], data["width"], data["batch"], data["precision"]) == (
        FRAMES, HEIGHT, WIDTH, 2, "fp32")
    assert (data["text_max_length"], data["text_dim"], data["latent_channels"], data["vae_scaling_factor"]) == (
        77, D, 4, 0.18215)
    assert data["source"]["weights_hash"] == file_sha256(run_dir / "tuned.safetensors")
    assert data["source"]["base_model_hash"] == folder_hash(tiny_sd)
    assert data["tools"]["tensorrt"] is None and data["tools"]["onnx"] == onnx.__version__
    listed = dict(data["files"])
    for graph in data["graphs"].values():
        assert graph["tensorrt"] is None and graph["external_data"] == []
        listed[graph["onnx"]] = graph["sha256"]
    on_disk = {p.relative_to(fp32_engine).as_posix() for p in fp32_engine.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == set(listed)
    assert {"tokenizer/tokenizer.json", "scheduler_config.json", "inverted_latents.npy"} <= set(listed)
    assert all(file_sha256(fp32_engine / f) == sha for f, sha in listed.items())


def test_assets_are_the_runs_own(fp32_engine, run_dir, tiny_sd):
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(fp32_engine / "tokenizer" / "tokenizer.json")).encode("a photo of a cat").ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    latents = np.load(fp32_engine / "inverted_latents.npy")
    recorded = load_file(str(run_dir / "inverted_latents.safetensors"))["latents"].numpy()
    assert latents.dtype == np.float32 and np.array_equal(latents, recorded)
    base = json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())
    assert json.loads((fp32_engine / "scheduler_config.json").read_text()) == base


def test_external_data_files_are_listed_checked_and_hold_the_weights(fp16_engine):
    data = manifest(fp16_engine)
    for name in GRAPHS:
        graph, path = data["graphs"][name], fp16_engine / f"{name}.onnx"
        external = fp16_engine / f"{name}.onnx.data"
        assert graph["external_data"] == [{"file": external.name, "sha256": file_sha256(external)}]
        onnx.checker.check_model(str(path))
        # Only tensors under 1 KB stay inline; the fp16 parity test above ran these files from their paths.
        assert external.stat().st_size > 2 * path.stat().st_size, name


@pytest.mark.trt
def test_tensorrt_rtx_builds_unet_text_encoder_and_vae(fp16_engine):
    import tensorrt_rtx

    data = manifest(fp16_engine)
    assert data["tools"]["tensorrt"]["flavour"] == "tensorrt_rtx"
    for name in GRAPHS:
        trt = data["graphs"][name]["tensorrt"]
        plan = fp16_engine / f"{name}.plan"
        assert trt["plan"] == plan.name and plan.stat().st_size > 100_000 and trt["sha256"] == file_sha256(plan)
        assert (trt["flavour"], trt["version"]) == ("tensorrt_rtx", tensorrt_rtx.__version__)
        assert trt["gpu"] is None and trt["compute_capability"] is None  # built on a machine without a GPU
        assert trt["strongly_typed"] and trt["builder_optimization_level"] == 3
    # TensorRT-RTX has no timing cache (its calls are no-ops): none is written, and the manifest says so.
    assert not (fp16_engine / "timing.cache").exists() and data["tools"]["tensorrt"]["timing_cache"] is False


def _check_plugin_engine(engine):
    data = manifest(engine)
    assert data["kv_gather"] == "plugin"
    model = onnx.load(str(engine / "unet.onnx"))
    nodes = [n for n in model.graph.node if n.op_type == "KVGather"]
    assert len(nodes) == 10 and all(n.domain == "tav" and len(n.output) == 2 for n in nodes)
    assert all(onnx.helper.get_attribute_value(n.attribute[0]) == FRAMES for n in nodes)
    unet = data["graphs"]["unet"]
    if unet["parity"] is None:  # ORT has no KVGather kernel: the standard-op twin was checked instead
        assert "KVGather" in unet["parity_skipped"] and unet["parity_standard_op_twin"]["rel_l2_err"] <= 1e-4
    for name in ("text_encoder", "vae_decoder"):
        assert data["graphs"][name]["parity"]["rel_l2_err"] <= 1e-4


def _kv_gather_trt_plugin_built() -> bool:
    try:
        from tav.cpp_ext import tensorrt_plugin
    except ImportError:
        return False
    return _has_tensorrt_rtx() and tensorrt_plugin.library_path().is_file()


def test_kv_gather_plugin_export(run_dir, tmp_path):
    """The UNet's gathers as cpp_ext's tav::KVGather nodes; and through TensorRT-RTX with cpp_ext's KVGather plugin
    library when that is built."""
    with_trt = _kv_gather_trt_plugin_built()
    engine = export_engine(run_dir, tmp_path / "engine", kv_gather="plugin", backend="tensorrt" if with_trt else "onnx")
    _check_plugin_engine(engine)
    if with_trt:
        graphs = manifest(engine)["graphs"]
        assert graphs["unet"]["tensorrt"]["plugins"] == ["kv_gather_plugin.so"]
        assert (engine / "unet.plan").stat().st_size > 0
        assert graphs["vae_decoder"]["tensorrt"]["plugins"] == []
        # The library travels with the plans, pinned like every other file.
        assert manifest(engine)["files"]["kv_gather_plugin.so"] == file_sha256(engine / "kv_gather_plugin.so")


def test_official_output_folder_is_accepted_with_its_frames_and_size(tiny_sd, run_dir, tmp_path, monkeypatch):
    """An official Tune-A-Video output (full pipeline, 3D unet/ with attn_temp, config.yaml, inv_latents/)
    reaches tracing with the run's shapes; stopped there, as loading is what differs from a RUN_DIR."""
    import shutil

    import yaml
    from safetensors.torch import save_file

    import tav.export.pipeline

    official = tmp_path / "official"
    shutil.copytree(tiny_sd, official)
    tuned = load_tuned(run_dir)
    save_file({k: v.contiguous() for k, v in tuned.unet.state_dict().items()},
              str(official / "unet" / "diffusion_pytorch_model.safetensors"))
    train_data = {"n_sample_frames": FRAMES, "height": HEIGHT, "width": WIDTH}
    (official / "config.yaml").write_text(yaml.safe_dump({"train_data": train_data}))
    (official / "inv_latents").mkdir()
    torch.save(tuned.inverted_latents, official / "inv_latents" / "ddim_latent-50.pt")
    seen = {}

    def stop_at_trace(spec, *args):
        if spec.name != "unet":
            return {"external_files": [], "tensorrt": None, "parity": None}
        seen["inputs"] = [t.shape for t in spec.inputs]
        ours, theirs = spec.module.unet.state_dict(), tuned.unet.state_dict()
        seen["same_weights"] = ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
        raise KeyboardInterrupt  # the rest is the RUN_DIR path, tested above

    monkeypatch.setattr(tav.export.pipeline, "export_graph", stop_at_trace)
    with pytest.raises(KeyboardInterrupt):
        export_engine(official, tmp_path / "engine")
    assert seen["inputs"] == [(2, 4, FRAMES, HEIGHT // 8, WIDTH // 8), (1,), (2, 77, D)] and seen["same_weights"]
    assert not (tmp_path / "engine").exists() and not list(tmp_path.glob(".engine.*"))


def test_feed_forward_parts_at_sd15_sizes():
    """SD 1.5's GEGLU widths per level (2560, 5120, 10240, 10240) at 64x64 / 32x32 latents, CFG batch 2."""
    from tav.export.feed_forward_chunks import FEED_FORWARD_PART_BYTES, frames_per_part

    widths = (2560, 5120, 10240, 10240)
    official = [frames_per_part(24, 2, (64 >> level) ** 2, width) for level, width in enumerate(widths)]
    assert official == [6, 12, 24, None]  # 8, 4 and 2 parts of the 48-row input; the mid block whole
    for level, part in enumerate(official[:3]):
        assert 24 % part == 0 and part * (64 >> level) ** 2 * widths[level] * 4 <= FEED_FORWARD_PART_BYTES
    # The default clip is not split: its graphs are the ones exported before parts existed.
    assert [frames_per_part(8, 2, (32 >> level) ** 2, width) for level, width in enumerate(widths)] == [None] * 4
    assert frames_per_part(7, 2, 4096, 2560, budget=1) == 1  # nothing fits: one frame a part


def test_decode_batch_bounds_frames_and_pixels():
    from tav.export.graphs import decode_batch

    assert decode_batch(FRAMES, HEIGHT, WIDTH) == FRAMES
    assert [decode_batch(f, 256, 256) for f in (7, 8, 31, 32, 48)] == [7, 8, 8, 8, 8]
    assert decode_batch(24, 512, 512) == 2 and decode_batch(1, 512, 512) == 1
    assert decode_batch(8, 256, 320) == 4  # 6 fit; 4 + 4 pads nothing, 6 + 6 would decode 4 copies


@pytest.fixture(scope="module")
def parted_engine(run_dir, tmp_path_factory):
    """The fp32 export with every transformer block's feed-forward split into one-frame parts."""
    import tav.export.feed_forward_chunks as parts

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parts, "FEED_FORWARD_PART_BYTES", 1)
        return export_engine(run_dir, tmp_path_factory.mktemp("parted") / "engine")


def test_feed_forward_parts_trace_to_split_graphs_with_the_same_output(parted_engine, fp32_engine, torch_models):
    model = onnx.load(parted_engine / "unet.onnx")
    blocks = sum(type(m).__name__ == "VideoTransformerBlock" for m in torch_models[0].modules())
    # Each block's feed-forward: static Slices of its input into 2 x FRAMES one-frame rows, one GEGLU per part,
    # a Concat; plain ops (no sequence ops, which TensorRT lacks).
    whole = onnx.load(fp32_engine / "unet.onnx", load_external_data=False)
    concats, matmuls = ([sum(n.op_type == op for n in m.graph.node) for m in (model, whole)]
                        for op in ("Concat", "MatMul"))
    assert concats[0] - concats[1] == blocks
    assert not {n.op_type for n in model.graph.node} & {"SplitToSequence", "SequenceAt", "Loop"}
    assert matmuls[0] - matmuls[1] == blocks * 2 * (2 * FRAMES - 1)  # two Linears per part
    parity = manifest(parted_engine)["graphs"]["unet"]["parity"]
    assert parity["rel_l2_err"] <= 1e-4, parity
    feeds = independent_inputs()["unet"]
    output = run_onnx(parted_engine / "unet.onnx", feeds)
    assert rel_l2(output, torch_reference(torch_models, "unet", feeds)) <= 1e-4
    assert rel_l2(output, run_onnx(fp32_engine / "unet.onnx", feeds)) <= 1e-5  # same maths, per-token GEMM order
