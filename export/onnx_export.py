"""Trace one graph to ONNX at static shapes with the TorchScript exporter, its weights streamed to one data file.

The TorchScript exporter (``dynamo=False``) is about 10x faster than the dynamo
one on the video UNet and gives the same ops at opset 17: SDPA becomes
MatMul-Softmax-MatMul, GroupNorm becomes InstanceNormalization, LayerNorm is
native. No dynamic axes are declared, so every dimension is a number.

Memory (issue 17): left to itself the exporter serialises every weight into one
protobuf message (below 2 GB), parses it back, and the caller then loads it
again: three copies of the weights beside the torch module. Here the exporter
is handed no weights (its parameter dict is captured on the way in), so it
writes the graph structure only; the captured tensors -- the module's own
parameters and the few constants torch folded -- are then written one by one to
``<name>.onnx.data`` and the graph's initializers point into that file. No
second copy of the weights exists at any time, and everything downstream
(folding, fusion, saving) works on the structure with the weights left on disk
(export/onnx_weights.py).
"""

import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import onnx
import torch

from .graphs import GraphSpec
from .onnx_weights import attach_weights

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
PLUGIN_DOMAIN = "tav"  # cpp_ext's KVGather node lives in this ONNX domain


def trace_to_onnx(spec: GraphSpec, feeds: dict, opset: int, path: Path, plugin_context=None) -> np.ndarray:
    """Trace ``spec.module`` (already in the export precision) on ``feeds`` into ``path`` + ``path.data``.

    Returns the module's output on ``feeds`` (tracing runs the model once; as float32 numpy). The graph
    file holds the structure, shapes inferred, and the small constants inline;
    ``onnx.load(path, load_external_data=False)`` reads it without the weights.
    """
    module = spec.module
    device = next(module.parameters()).device  # CUDA when there is one: fp16 convs are very slow on CPU
    args = tuple(torch.from_numpy(feeds[t.name]).to(device, TORCH_DTYPES[t.dtype]) for t in spec.inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    params, outputs = {}, []
    fp16_on_cpu = (device.type == "cpu" and next(module.parameters()).dtype == torch.float16
                   and torch.backends.mkldnn.is_available())
    fast_convs = _fp16_convs_computed_in_fp32() if fp16_on_cpu else nullcontext()
    with (warnings.catch_warnings(), torch.no_grad(), plugin_context or nullcontext(),
          _weights_captured(params, outputs), fast_convs):
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
    model = onnx.load(str(path), load_external_data=False)
    attach_weights(model, params, path)
    onnx.save_model(model, str(path))
    # Shapes inferred from the file: in memory, onnx cannot infer a model past protobuf's 2 GB, and without
    # shapes the folding in onnx_hygiene.optimise leaves SDPA's scale and the head reshapes as Shape -> ...
    # chains (and attention_fusion then matches nothing). From the path, the weights stay on disk.
    onnx.shape_inference.infer_shapes_path(str(path), str(path))
    return outputs[0].detach().float().cpu().numpy()


@contextmanager
def _fp16_convs_computed_in_fp32():
    """While tracing an fp16 module on the CPU, compute its convolutions in fp32 (and round the result to fp16).

    PyTorch has no fast fp16 convolution on CPUs without AVX512-FP16: it falls back to
    ``_slow_conv2d_forward``, which took 75% of an fp16 UNet forward here (7.5x the fp32 one; an
    SD-1.5 fp16 trace ran over 25 min). The tracer records ``aten::_convolution`` with its fp16 types
    before the CPU kernel runs, so the graph is the same; only the values computed while tracing
    change, and nothing uses them for fp16 (its reference is computed apart, in fp32). The kernel is
    registered for the trace only; destroying the library restores PyTorch's own.
    """
    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
        library.impl("_slow_conv2d_forward", _conv2d_in_fp32, "CPU")
    try:
        yield
    finally:
        library._destroy()


# fp32 bytes of one slice of a convolution's input that _conv2d_in_fp32 upcasts at a time. At 24 frames
# 512x512 a UNet conv sees [48, 640, 64, 64]: upcast whole, that is 0.5 GB in and 0.5 GB out on top of
# the trace's own memory; a few samples at a time it is tens of MB.
CONV_SLICE_BYTES = 64 << 20


def _conv2d_in_fp32(x, weight, kernel_size, bias=None, stride=(1, 1), padding=(0, 0)):
    """``_slow_conv2d_forward``'s signature (dilation 1, one group), computed by oneDNN's fp32 convolution: not
    ``F.conv2d``, which can itself choose ``_slow_conv2d_forward`` (one thread, small convs) and so land here again.
    Samples are independent, so the batch is computed a slice at a time (``CONV_SLICE_BYTES``)."""
    weight = weight.float().contiguous()
    bias = None if bias is None else bias.float()
    step = max(1, CONV_SLICE_BYTES // max(1, x[:1].numel() * 4))
    out = None
    for start in range(0, x.shape[0], step):
        part = torch.ops.aten.mkldnn_convolution(x[start:start + step].float().contiguous(), weight, bias, padding,
                                                 stride, (1, 1), 1)
        if out is None:  # the output's shape is known once a slice has run
            out = x.new_empty((x.shape[0], *part.shape[1:]))
        out[start:start + step] = part
    return out


@contextmanager
def _weights_captured(params: dict, outputs: list):
    """Hand the TorchScript exporter an empty parameter dict and keep the real one in ``params`` (and the
    traced run's output in ``outputs``).

    ``_model_to_graph`` returns (graph, {input name: tensor}, outputs) after torch's own constant
    folding; with no parameters the exporter writes them as plain graph inputs of the same names,
    which ``attach_weights`` turns back into initializers stored in the data file. A private torch
    function: if torch renames it, the export fails here at once rather than minutes later.
    """
    from torch.onnx._internal.torchscript_exporter import utils as exporter

    original = exporter._model_to_graph

    def without_weights(*args, **kwargs):
        graph, weights, result = original(*args, **kwargs)
        params.update(weights)
        outputs.append(result[0] if isinstance(result, (tuple, list)) else result)
        return graph, {}, result

    exporter._model_to_graph = without_weights
    try:
        yield
    finally:
        exporter._model_to_graph = original
