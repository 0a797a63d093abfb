"""Clean, check and save a traced graph so that TensorRT and ONNX Runtime see a small, static, plain graph.

- ``optimise``: fold constants (the traced shape arithmetic of the static
  shapes becomes plain numbers), drop no-op Casts and x*1, x/1, drop dead
  nodes, sort topologically (tiny fp32 UNet: 1936 traced nodes -> 1530).
- ``run_norms_in_fp32``: fp16 graphs compute InstanceNormalization (SD's
  GroupNorm) and LayerNormalization in float32; a variance accumulated in
  float16 overflows once activations pass ~256 (256^2 ~ fp16 max), which SD's
  VAE decoder and deep UNet blocks reach. ORT's CPU provider already runs these
  in fp32 (no accuracy change measured there); the explicit Casts make every
  backend, TensorRT included, do the same whatever its layer-precision choices.
- ``check_graph``: no ScatterND/Loop/If, exactly the contract's I/O with every
  dimension a number, and each attention layer as MatMul-Softmax-MatMul (the
  form TensorRT fuses into one attention kernel).
- ``save_onnx``: weights inline up to a threshold, else kept in the data file
  ``<name>.onnx.data`` they were traced into (export/onnx_weights.py); then
  ``onnx.checker`` by path (works past 2 GB).

Every pass here works on the graph structure: the weights stay on disk, and only
constants small enough to be stored inline (scalars, shape targets, norm
parameters) are ever read.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .onnx_weights import external_bytes, hide_weights, restore_weights, save_graph

FORBIDDEN_OPS = frozenset({"ScatterND", "ScatterElements", "Loop", "If", "Scan"})
NORM_OPS = ("InstanceNormalization", "LayerNormalization")
# Graphs with more weight bytes than this keep them in an external data file, which the exporter never
# reads into memory; smaller ones are one self-contained file. Inlining loads the weights and protobuf
# serialises another copy, so the threshold bounds that cost (64 MiB: the tiny test models stay one file).
EXTERNAL_DATA_THRESHOLD = 2**26
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64"}


class GraphError(ValueError):
    """A graph breaks a rule of the ENGINE_DIR contract."""


def optimise(model: onnx.ModelProto, precision: str = "fp32") -> onnx.ModelProto:
    """Folded and cleaned; fp16 graphs also get their norms in fp32 (``run_norms_in_fp32``)."""
    from polygraphy.backend.onnx import fold_constants
    from polygraphy.logger import G_LOGGER

    hidden = hide_weights(model)  # folding must neither read the weights nor look for them
    with G_LOGGER.verbosity(G_LOGGER.ERROR):
        # onnx's own shape inference, not ORT's symbolic one: ours are static graphs, and ORT's
        # drops sym_shape_infer_temp.onnx + a <uuid>.data into the working directory whenever
        # it meets a node it cannot infer (the KVGather custom op).
        model = fold_constants(
            model, num_passes=None, do_shape_inference=True, fold_shapes=True, error_ok=True,
            allow_onnxruntime_shape_inference=False,
        )
    graph = gs.import_onnx(model)
    _drop_identities(graph)
    graph.cleanup().toposort()
    model = restore_weights(gs.export_onnx(graph), hidden)
    return run_norms_in_fp32(model) if precision == "fp16" else model


def _drop_identities(graph) -> None:
    """Bypass Casts to the dtype a tensor already has (``.to(query.dtype)`` in attention processors)
    and Mul/Div by a constant 1 (diffusers' residual rescale factors), so the graph reads as the maths."""
    outputs = set(map(id, graph.outputs))
    for node in graph.nodes:
        x, y = node.inputs[0] if node.inputs else None, node.outputs[0]
        if id(y) in outputs or not isinstance(x, gs.Variable):
            continue
        if node.op == "Cast":
            same = x.dtype is not None and np.dtype(x.dtype) == onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"])
        elif node.op in ("Mul", "Div") and isinstance(node.inputs[1], gs.Constant) and _is_scalar(node.inputs[1]):
            one = node.inputs[1].values
            same = float(one.reshape(-1)[0]) == 1.0 and x.dtype == y.dtype and x.shape == y.shape
        else:
            continue
        if same:
            for consumer in list(y.outputs):
                for i, tensor in enumerate(consumer.inputs):
                    if tensor is y:
                        consumer.inputs[i] = x
            node.outputs.clear()


def _is_scalar(constant) -> bool:
    """From the shape alone: reading ``.values`` of a weight kept on disk would load it (or fail)."""
    return int(np.prod(constant.shape)) == 1


def run_norms_in_fp32(model: onnx.ModelProto) -> onnx.ModelProto:
    """Wrap every float16 normalisation node in Casts so it computes in float32."""
    graph = gs.import_onnx(model)
    fp32_params = {}  # scale/bias constants can be shared between nodes: convert each once
    for node in [n for n in graph.nodes if n.op in NORM_OPS]:
        x, y = node.inputs[0], node.outputs[0]
        if x.dtype != np.float16:
            continue
        node.inputs[0] = _cast(graph, x, np.float32)
        for i, param in enumerate(node.inputs[1:], start=1):
            if isinstance(param, gs.Constant):
                if param.name not in fp32_params:
                    fp32_params[param.name] = gs.Constant(f"{param.name}_fp32", param.values.astype(np.float32))
                node.inputs[i] = fp32_params[param.name]
            else:
                node.inputs[i] = _cast(graph, param, np.float32)
        y32 = gs.Variable(f"{y.name}_fp32", dtype=np.float32, shape=y.shape)
        node.outputs[0] = y32
        # The Cast back writes the original tensor, so consumers (and graph outputs) keep their names.
        graph.layer(op="Cast", inputs=[y32], outputs=[y], attrs={"to": onnx.TensorProto.FLOAT16})
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def _cast(graph, tensor, dtype):
    out = gs.Variable(f"{tensor.name}_{np.dtype(dtype).name}", dtype=dtype, shape=tensor.shape)
    to = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return graph.layer(op="Cast", inputs=[tensor], outputs=[out], attrs={"to": to})[0]


def check_graph(model: onnx.ModelProto, spec) -> dict:
    """Raise GraphError naming the first broken rule; return op counts for the record."""
    ops = Counter(node.op_type for node in model.graph.node)
    forbidden = sorted(FORBIDDEN_OPS & set(ops))
    if forbidden:
        raise GraphError(f"{spec.name}: graph contains {', '.join(forbidden)}; TensorRT needs a graph without them")
    for kind, actual, expected in (("inputs", model.graph.input, spec.inputs),
                                   ("outputs", model.graph.output, spec.outputs)):
        got = [_describe(v) for v in actual]
        want = [t.as_json() for t in expected]
        if got != want:
            raise GraphError(f"{spec.name}: graph {kind} are {got}, the contract says {want}")
    matched, softmaxes = count_attention_patterns(model)
    if matched != softmaxes or softmaxes != spec.attention_layers:
        raise GraphError(
            f"{spec.name}: {matched} of {softmaxes} Softmax nodes sit in MatMul-Softmax-MatMul; "
            f"the model has {spec.attention_layers} attention layers"
        )
    return dict(sorted(ops.items()))


def _describe(value: onnx.ValueInfoProto) -> dict:
    tensor = value.type.tensor_type
    # A dimension without dim_value (symbolic or unknown) is dynamic: report it as a string.
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
    return {"name": value.name, "shape": shape, "dtype": ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type))}


# Between the scores MatMul and the Softmax: the scale, the causal mask, and dtype casts (CLIP's fp32 softmax).
SCORE_OPS = ("Cast", "Mul", "Div", "Add", "Where")


def count_attention_patterns(model: onnx.ModelProto) -> tuple:
    """(Softmax nodes fed by a MatMul through scale/mask/cast ops and feeding only MatMuls, all Softmax nodes)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def scores_source(node):
        for _ in range(4):
            # Follow the one computed input; the scale and the mask are initializers after folding.
            node = next((producer[i] for i in node.input if i in producer and producer[i].op_type != "Constant"), None)
            if node is None or node.op_type not in SCORE_OPS:
                return node
        return None

    def readers(name):
        found = []
        for node in consumers.get(name, []):
            found += readers(node.output[0]) if node.op_type == "Cast" else [node]
        return found

    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    matched = 0
    for softmax in softmaxes:
        source, after = scores_source(softmax), readers(softmax.output[0])
        matched += (source is not None and source.op_type == "MatMul"
                    and bool(after) and all(n.op_type == "MatMul" for n in after))
    return matched, len(softmaxes)


def save_onnx(model: onnx.ModelProto, path: Path, weights_dir: Path, external_threshold: int = EXTERNAL_DATA_THRESHOLD,
              full_check: bool = True, data: Path | None = None) -> list:
    """Write ``path`` (+ a data file past the threshold: ``data`` or ``path.data``), check it by path; return
    the data files. ``model``'s external weights are read from the traced data file in ``weights_dir``."""
    files = save_graph(model, path, weights_dir, inline=external_bytes(model) <= external_threshold, data=data)
    # By path, so the checker reads external data itself and never builds a >2 GB message.
    # Full check adds strict shape inference; custom-domain nodes (the KVGather plugin) have none.
    onnx.checker.check_model(str(path), full_check=full_check)
    return files
