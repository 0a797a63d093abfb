"""ONNX forms of the KV gather: standard ops by default, one ``tav::KVGather`` node on request.

The default export (slices, expand, concat) runs on any ONNX backend. With ``plugin=True``
(``kv_gather(k, v, num_frames, plugin=True)``; the video UNet passes its FrameContext's
``kv_gather_plugin``) the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``)
writes one custom node instead, which TensorRT's ONNX parser maps to the ``KVGather``
plugin (see tensorrt_plugin.py): the parser looks plugins up by op type, version "1"
and the empty namespace, and hands the node's attributes over as plugin fields.

    node:    KVGather, domain "tav", attribute num_frames (int)
    inputs:  k [B*F, N, C], v [B*F, N, C]
    outputs: k2 [B*F, 2N, C], v2 [B*F, 2N, C]  (static shapes recorded in value_info)

Pass ``custom_opsets={ONNX_DOMAIN: ONNX_OPSET}`` to torch.onnx.export with it.
"""

import logging

import torch

from .reference import kv_gather_reference

ONNX_DOMAIN = "tav"
ONNX_OP = "KVGather"
ONNX_OPSET = 1

logger = logging.getLogger(__name__)


def export_kv_gather(k: torch.Tensor, v: torch.Tensor, num_frames: int, plugin: bool = False):
    """What kv_gather traces to during ONNX export: standard ops, or with ``plugin`` one tav::KVGather node."""
    if plugin:
        if torch.compiler.is_compiling():
            # The dynamo exporter traces through autograd.Function.forward and never calls symbolic():
            # it would silently write standard ops instead of the plugin node.
            # The dynamo exporter retries other strategies and may bury this error: log it too.
            message = "kv_gather(..., plugin=True) needs the TorchScript exporter: torch.onnx.export(..., dynamo=False)"
            logger.error(message)
            raise RuntimeError(message)
        # int(): traced through the video UNet, num_frames comes from sample.shape, a 0-d tensor
        # under torch.jit tracing, and the tracer cannot pass a tensor as a node attribute.
        return KVGatherNode.apply(k, v, int(num_frames))
    return kv_gather_reference(k, v, num_frames)


class KVGatherNode(torch.autograd.Function):
    """Computes the reference (so export-time parity checks see real values) and exports as one node."""

    @staticmethod
    def forward(ctx, k, v, num_frames):
        return kv_gather_reference(k, v, num_frames)

    @staticmethod
    def symbolic(g, k, v, num_frames):
        k2, v2 = g.op(f"{ONNX_DOMAIN}::{ONNX_OP}", k, v, num_frames_i=num_frames, outputs=2)
        # ONNX shape inference knows nothing of custom nodes; record the shapes ourselves
        # so the graph stays fully static for TensorRT and for graph checks.
        for out, x in ((k2, k), (v2, v)):
            bf, n, c = x.type().sizes()
            out.setType(x.type().with_sizes([bf, 2 * n, c]))
        return k2, v2
