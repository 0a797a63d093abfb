"""Fuse each traced attention into one ``com.microsoft.MultiHeadAttention`` node, for ONNX Runtime.

The TorchScript exporter writes every SDPA (sparse-causal attn1, cross-attention attn2,
temporal attn_temp, the VAE's mid-block attention) as::

    q [B,S,C] -> Reshape [B,S,H,d] -> Transpose(0,2,1,3) -> Mul c_q ─┐
    k [B,L,C] -> Reshape [B,L,H,d] -> Transpose(0,2,3,1) -> Mul c_k ─┴ MatMul -> Softmax ─┐
    v [B,L,C] -> Reshape [B,L,H,d] -> Transpose(0,2,1,3) ───────────────────────────────┴ MatMul
      -> Transpose(0,2,1,3) -> Reshape [B,S,C] -> out

ONNX Runtime runs that as written and materialises the [B,H,S,L] score tensor: at 512x512
sparse-causal attn1 that is 4096 x 8192 scores per frame-image and head, the memory wall of
issue 10. ``MultiHeadAttention(q, k, v)`` with ``num_heads = H`` and ``scale = c_q * c_k``
computes the same thing from the [B,S,C] / [B,L,C] projections, and ORT runs it with flash
attention (MLAS on CPU since 1.19; flash / memory-efficient kernels on CUDA), never holding
the scores. The rewrite happens after tracing because ORT's own UNet fuser does not match
sparse-causal attention (the frame gather sits between to_k/to_v and the heads).

A constant additive score bias of shape [1, 1, S, L] between the scores MatMul and the Softmax
(the band of windowed temporal attention, tuner/model/temporal_window.py) becomes MultiHeadAttention's
``attention_bias`` input. Only these exact forms are rewritten; anything else (CLIP's causal-masked
attention, a scale after the MatMul, a computed mask) is left as it is and counted, so the caller can
require that every attention of a graph was fused. The tensors q/k/v/out keep their names and
producers, so the rest of the graph is untouched.
"""

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

MHA_DOMAIN = "com.microsoft"
MHA_OP = "MultiHeadAttention"


@dataclass(frozen=True)
class FusionResult:
    model: onnx.ModelProto
    fused: int  # attentions now one MultiHeadAttention node
    left: int  # Softmax nodes not rewritten (e.g. CLIP's masked attention)


def fuse_attention(model: onnx.ModelProto) -> FusionResult:
    """``model`` with every matching attention as one MultiHeadAttention node (a new ModelProto)."""
    graph = gs.import_onnx(model)
    fused = left = 0
    for softmax in [n for n in graph.nodes if n.op == "Softmax"]:
        match = _match(softmax)
        if match is None:
            left += 1
            continue
        q, k, v, out, heads, scale, bias = match
        # The old tail no longer writes ``out``; cleanup() then drops the whole unfused chain.
        out.inputs.clear()
        # A score bias (windowed temporal attention's band) is MHA's input 5, attention_bias; 3 and 4
        # (packed projection bias, key padding mask) stay empty.
        extra = [] if bias is None else [gs.Variable.empty(), gs.Variable.empty(), bias]
        graph.layer(op=MHA_OP, domain=MHA_DOMAIN, inputs=[q, k, v, *extra], outputs=[out],
                    attrs={"num_heads": heads, "scale": scale}, name=f"{out.name}/MultiHeadAttention")
        fused += 1
    graph.cleanup().toposort()
    result = gs.export_onnx(graph)
    if fused and not any(o.domain == MHA_DOMAIN for o in result.opset_import):
        result.opset_import.append(onnx.helper.make_opsetid(MHA_DOMAIN, 1))
    return FusionResult(result, fused, left)


def _match(softmax):
    """(q, k, v, out, num_heads, scale, bias or None) when ``softmax`` sits in the traced SDPA form, else None."""
    if softmax.attrs.get("axis", -1) not in (-1, 3):
        return None
    logits, bias = _strip_bias(softmax.inputs[0])
    scores = _only_producer(logits, "MatMul")
    readers = softmax.outputs[0].outputs
    if (scores is None or len(readers) != 1 or readers[0].op != "MatMul"
            or readers[0].inputs[0] is not softmax.outputs[0]):
        return None
    context = readers[0]
    q_side, k_side = (_strip_scale(t) for t in scores.inputs)
    if q_side is None or k_side is None:
        return None
    (q_heads, c_q), (k_heads_t, c_k) = q_side, k_side
    q = _split_heads(q_heads, (0, 2, 1, 3))
    k = _split_heads(k_heads_t, (0, 2, 3, 1))
    v = _split_heads(context.inputs[1], (0, 2, 1, 3))
    if any(part is None for part in (q, k, v)):
        return None
    (q, heads, size), (k, k_heads, k_size), (v, v_heads, v_size) = q, k, v
    # MultiHeadAttention's contract: q [B,S,H*d], k [B,L,H*d], v [B,L,H*d_v] -> [B,S,H*d_v].
    if not (heads == k_heads == v_heads and size == k_size):
        return None
    out = _merge_heads(context.outputs[0], heads * v_size)
    if out is None or not _same_batch(q, k, v):
        return None
    if bias is not None and not _bias_fits(bias, q, k):
        return None
    return q, k, v, out, int(heads), _exact_scale(c_q * c_k, size), bias


def _strip_bias(tensor):
    """(scores, bias) when ``tensor`` is an Add of a [1, 1, S, L] constant (SDPA's float attn_mask), else
    (tensor, None)."""
    add = _only_producer(tensor, "Add")
    if add is None:
        return tensor, None
    for data, const in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
        if (isinstance(data, gs.Variable) and isinstance(const, gs.Constant)
                and len(const.shape) == 4 and tuple(const.shape[:2]) == (1, 1)):
            return data, const
    return tensor, None


def _bias_fits(bias, q, k) -> bool:
    """MultiHeadAttention's attention_bias is [1 or B, 1 or H, S, L]; where S and L are known they must agree."""
    queries, keys = bias.shape[2:]
    return (q.shape is None or q.shape[1] == queries) and (k.shape is None or k.shape[1] == keys)


def _exact_scale(traced: float, head_size: int) -> float:
    """SDPA's 1/sqrt(d) when ``traced`` is it up to fp16 rounding, else ``traced`` as it is.

    An fp16 trace carries d^-1/4 rounded to fp16 twice (on Q and on K^T): 0.35370 for d = 8
    instead of 0.35355. The attribute is a float32, so it can hold what the model means.
    """
    exact = head_size**-0.5
    return exact if abs(traced - exact) <= 2e-3 * exact else traced


def _only_producer(tensor, op: str):
    if not isinstance(tensor, gs.Variable) or len(tensor.inputs) != 1 or tensor.inputs[0].op != op:
        return None
    return tensor.inputs[0]


def _scalar(tensor):
    # The shape first: a weight kept on disk (export/onnx_weights.py) must not be read here.
    if isinstance(tensor, gs.Constant) and int(np.prod(tensor.shape)) == 1:
        return float(np.asarray(tensor.values, dtype=np.float64).reshape(-1)[0])
    return None


def _strip_scale(tensor):
    """(tensor before an optional Mul by a scalar constant, that constant or 1)."""
    mul = _only_producer(tensor, "Mul")
    if mul is None:
        return tensor, 1.0
    for data, const in ((mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])):
        value = _scalar(const)
        if value is not None and isinstance(data, gs.Variable):
            return data, value
    return None


def _split_heads(tensor, perm):
    """(x, heads, head size) when ``tensor`` is Transpose(perm)(Reshape(x, [b, t, H, d])), else None.

    H and d are read off the Reshape's folded target, not off inferred shapes: ONNX shape
    inference is not kept for models past protobuf's 2 GB (an fp32 SD-1.5 UNet), and the
    fusion must not depend on model size. Inferred shapes, where present, are checked too.
    """
    transpose = _only_producer(tensor, "Transpose")
    if transpose is None or tuple(transpose.attrs.get("perm", ())) != perm:
        return None
    reshape = _only_producer(transpose.inputs[0], "Reshape")
    target = _reshape_target(reshape)
    if target is None or len(target) != 4 or target[2] <= 0 or target[3] <= 0:
        return None
    x, heads, size = reshape.inputs[0], int(target[2]), int(target[3])
    if x.shape is not None and (len(x.shape) != 3 or x.shape[2] != heads * size):
        return None
    return x, heads, size


def _merge_heads(tensor, width: int):
    """out [B,S,width] when ``tensor`` [B,H,S,d] flows only through Transpose(0,2,1,3) -> Reshape [b, s, width]."""
    if (len(tensor.outputs) != 1 or tensor.outputs[0].op != "Transpose"
            or tuple(tensor.outputs[0].attrs.get("perm", ())) != (0, 2, 1, 3)):
        return None
    moved = tensor.outputs[0].outputs[0]
    if len(moved.outputs) != 1 or moved.outputs[0].op != "Reshape":
        return None
    target = _reshape_target(moved.outputs[0])
    if target is None or len(target) != 3 or target[2] != width:
        return None
    return moved.outputs[0].outputs[0]


def _reshape_target(reshape):
    """The Reshape's target shape as ints when it is a folded constant (``allowzero`` unset), else None."""
    if reshape is None or reshape.attrs.get("allowzero", 0) or not isinstance(reshape.inputs[1], gs.Constant):
        return None
    return [int(d) for d in np.asarray(reshape.inputs[1].values).reshape(-1)]


def _same_batch(q, k, v) -> bool:
    """Where shapes were inferred: one batch for q/k/v, one key length for k and v (True when unknown)."""
    if q.shape is None or k.shape is None or v.shape is None:
        return True
    return q.shape[0] == k.shape[0] == v.shape[0] and k.shape[1] == v.shape[1]


def fuse_for_onnxruntime(model: onnx.ModelProto, spec) -> FusionResult:
    """``fuse_attention`` that must fuse every one of ``spec``'s attention layers, else GraphError.

    A layer left unfused would silently bring back the score tensor this exists to avoid, so a
    traced form the matcher does not know (a new diffusers, another exporter) fails the export
    loudly instead; ``--attention standard`` is the way around it.
    """
    from .onnx_hygiene import GraphError

    result = fuse_attention(model)
    if result.left or result.fused != spec.attention_layers:
        raise GraphError(
            f"{spec.name}: fused {result.fused} of {spec.attention_layers} attention layers into {MHA_OP} "
            f"({result.left} left unfused); export with --attention standard and report this"
        )
    return result
