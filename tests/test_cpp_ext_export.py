"""kv_gather in ONNX export (standard ops, or the tav::KVGather plugin node) and the TensorRT plugin library."""

import io
import os
import subprocess
import sys
import textwrap
import warnings

import onnx
import pytest
import torch

import tav.cpp_ext as ext
from tav.cpp_ext import tensorrt_plugin


class _Gather(torch.nn.Module):
    def __init__(self, num_frames, plugin=False):
        super().__init__()
        self.num_frames, self.plugin = num_frames, plugin

    def forward(self, k, v):
        k2, v2 = ext.kv_gather(k, v, self.num_frames, plugin=self.plugin)
        return k2 * 2, v2 + 1


def _export(k, v, num_frames, plugin: bool) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Gather(num_frames, plugin), (k, v), buffer, dynamo=False, opset_version=17,
            custom_opsets={ext.ONNX_DOMAIN: ext.ONNX_OPSET}, input_names=["k", "v"], output_names=["k2", "v2"],
        )
    return onnx.load_from_string(buffer.getvalue())


def test_default_export_is_standard_onnx_that_runs_anywhere():
    import onnxruntime as ort

    k, v = torch.randn(6, 4, 8), torch.randn(6, 4, 8)
    model = _export(k, v, 3, plugin=False)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    k2, v2 = session.run(None, {"k": k.numpy(), "v": v.numpy()})
    expected = ext.kv_gather_reference(k, v, 3)
    torch.testing.assert_close(torch.from_numpy(k2), expected[0] * 2)
    torch.testing.assert_close(torch.from_numpy(v2), expected[1] + 1)


def test_plugin_mode_exports_one_kvgather_node_with_static_shapes():
    model = _export(torch.randn(8, 64, 32), torch.randn(8, 64, 16), 4, plugin=True)
    nodes = [n for n in model.graph.node if n.op_type == ext.ONNX_OP]
    assert len(nodes) == 1 and nodes[0].domain == ext.ONNX_DOMAIN
    assert [(a.name, a.i) for a in nodes[0].attribute] == [("num_frames", 4)]
    assert list(nodes[0].input) == ["k", "v"]
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.value_info}
    assert [shapes[name] for name in nodes[0].output] == [[8, 128, 32], [8, 128, 16]]
    assert any(o.domain == ext.ONNX_DOMAIN and o.version == ext.ONNX_OPSET for o in model.opset_import)
    # Without the argument, standard ops.
    plain = _export(torch.randn(4, 2, 2), torch.randn(4, 2, 2), 2, False)
    assert not any(n.op_type == ext.ONNX_OP for n in plain.graph.node)


def _plugin_library():
    """The built plugin library, or a skip: building needs nvcc and TensorRT headers (not shipped here)."""
    path = tensorrt_plugin.library_path()
    if path.is_file():
        return path
    include = os.environ.get(tensorrt_plugin.INCLUDE_ENV)  # as the build command reads it
    if tensorrt_plugin.find_include_dir(include) is None or tensorrt_plugin.find_nvcc() is None:
        pytest.skip("TensorRT plugin not built and cannot be: needs nvcc and NvInferRuntime.h "
                    f"(${tensorrt_plugin.INCLUDE_ENV})")
    return tensorrt_plugin.build(include)


def test_tensorrt_rtx_parses_the_node_into_the_plugin_and_builds_an_engine(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    library = _plugin_library()
    model = _export(torch.randn(8, 64, 32), torch.randn(8, 64, 32), 4, plugin=True)
    # fp16 too: the same node on half tensors.
    half = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("KVGather", ["k", "v"], ["k2", "v2"], domain="tav", num_frames=2)],
            "half",
            [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT16, [4, 16, 8]) for n in ("k", "v")],
            [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT16, [4, 32, 8]) for n in ("k2", "v2")],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("tav", 1)],
    )
    # A subprocess: a TensorRT failure inside the parser can abort the whole process.
    script = textwrap.dedent(
        """
        import sys
        import tensorrt_rtx as trt
        from tav.cpp_ext import tensorrt_plugin
        tensorrt_plugin.register(trt, sys.argv[1])
        logger = trt.Logger(trt.Logger.WARNING)
        for path in sys.argv[2:]:
            builder = trt.Builder(logger)
            network = builder.create_network(0)
            parser = trt.OnnxParser(network, logger)
            assert parser.parse(open(path, "rb").read()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
            layer = network.get_layer(0)
            assert layer.type == trt.LayerType.PLUGIN_V3, layer.type
            shapes = [tuple(network.get_output(i).shape) for i in range(network.num_outputs)]
            plan = builder.build_serialized_network(network, builder.create_builder_config())
            assert plan is not None and plan.nbytes > 0
            print(layer.type, shapes)
        """
    )
    paths = [str(tmp_path / "float.onnx"), str(tmp_path / "half.onnx")]
    onnx.save(model, paths[0])
    onnx.save(half, paths[1])
    result = subprocess.run([sys.executable, "-c", script, str(library), *paths], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "LayerType.PLUGIN_V3 [(8, 128, 32), (8, 128, 32)]",
        "LayerType.PLUGIN_V3 [(4, 32, 8), (4, 32, 8)]",
    ]


def test_plugin_mode_refuses_the_dynamo_exporter(caplog):
    # It would trace through the autograd.Function and silently write standard ops instead.
    with pytest.raises(Exception):  # noqa: B017 (any failure will do, as long as it fails)
        torch.onnx.export(_Gather(2, plugin=True), (torch.randn(4, 3, 8), torch.randn(4, 3, 8)), dynamo=True)
    assert "dynamo=False" in caplog.text
