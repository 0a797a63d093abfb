"""Trace one graph to ONNX at static shapes with the TorchScript exporter.

The TorchScript exporter (``dynamo=False``) is about 10x faster than the dynamo
one on the video UNet and gives the same ops at opset 17: SDPA becomes
MatMul-Softmax-MatMul, GroupNorm becomes InstanceNormalization, LayerNorm is
native. No dynamic axes are declared, so every dimension is a number.
"""

import copy
import warnings
from contextlib import nullcontext
from pathlib import Path

import onnx
import torch

from .graphs import GraphSpec

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
PLUGIN_DOMAIN = "tav"  # cpp_ext's KVGather node lives in this ONNX domain


def trace_to_onnx(spec: GraphSpec, precision: str, opset: int, work_dir: Path, plugin_context=None) -> onnx.ModelProto:
    """The traced graph, loaded with its weights (torch writes external files itself past 2 GB)."""
    # fp16 graphs are traced from an fp16 copy, so torch (not a converter) decides which ops
    # keep float32 (e.g. the timestep embedding), exactly as the model runs in half precision.
    module = spec.module if precision == "fp32" else copy.deepcopy(spec.module).half()
    feeds = spec.seeded_inputs()
    device = next(module.parameters()).device  # CUDA when there is one: fp16 convs are very slow on CPU
    args = tuple(torch.from_numpy(feeds[t.name]).to(device, TORCH_DTYPES[t.dtype]) for t in spec.inputs)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"{spec.name}.onnx"
    with warnings.catch_warnings(), torch.no_grad(), plugin_context or nullcontext():
        warnings.simplefilter("ignore")  # TracerWarnings on shape asserts: shapes are static by design
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
            custom_opsets={PLUGIN_DOMAIN: 1} if plugin_context is not None else None,
        )
    # Shapes inferred from the file, before anything loads it: in memory, onnx cannot infer a model past
    # protobuf's 2 GB (an fp32 SD-1.5 UNet), and without shapes the folding in onnx_hygiene.optimise leaves
    # SDPA's scale and the head reshapes as Shape -> ... chains (and attention_fusion then matches nothing).
    # From the path, external weights stay on disk: one copy of them in memory, as before.
    onnx.shape_inference.infer_shapes_path(str(path), str(path))
    return onnx.load(str(path))
