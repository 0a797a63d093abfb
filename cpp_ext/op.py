"""Registers ``torch.ops.tav.kv_gather`` and ``torch.ops.tav.kv_gather_backward``.

The compiled library (csrc/kv_gather.cpp) defines both schemas and their CPU (and CUDA)
kernels. Only when it is not loaded are the same schemas defined here, so there is one
definition per process. On top of either, this module registers:

- the pure-PyTorch reference for every device without a compiled kernel
  (CompositeExplicitAutograd: the dispatcher prefers a backend's own kernel to it);
- fake (meta) kernels, so torch.compile and torch.export see output shapes;
- autograd: the backward of the gather is the scatter-add op, and vice versa, so
  double backward works too.
"""

import torch

from .reference import kv_gather_backward_reference, kv_gather_reference

SCHEMAS = {
    "kv_gather": "kv_gather(Tensor k, Tensor v, int num_frames) -> (Tensor, Tensor)",
    "kv_gather_backward": "kv_gather_backward(Tensor grad_k2, Tensor grad_v2, int num_frames) -> (Tensor, Tensor)",
}

# torch.library.Library objects unregister what they hold when collected: keep them.
_LIBRARIES: list = []


def register(schemas_defined: bool) -> None:
    """Completes the op registration; ``schemas_defined`` says whether the compiled library did it."""
    if not schemas_defined:
        definitions = torch.library.Library("tav", "DEF")
        for schema in SCHEMAS.values():
            definitions.define(schema)
        _LIBRARIES.append(definitions)
    fallback = torch.library.Library("tav", "IMPL")
    fallback.impl("kv_gather", kv_gather_reference, "CompositeExplicitAutograd")
    fallback.impl("kv_gather_backward", kv_gather_backward_reference, "CompositeExplicitAutograd")
    _LIBRARIES.append(fallback)

    torch.library.register_fake("tav::kv_gather", _fake_gather)
    torch.library.register_fake("tav::kv_gather_backward", _fake_scatter)
    torch.library.register_autograd("tav::kv_gather", _gather_backward, setup_context=_save_num_frames)
    torch.library.register_autograd("tav::kv_gather_backward", _scatter_backward, setup_context=_save_num_frames)


def _check_frames(x: torch.Tensor, num_frames: int, name: str) -> None:
    torch._check(x.dim() == 3, lambda: f"kv_gather: {name} must be [B*F, N, C], got {tuple(x.shape)}")
    torch._check_value(
        num_frames >= 1 and x.shape[0] % num_frames == 0,
        lambda: f"kv_gather: batch*frames={x.shape[0]} is not a multiple of num_frames={num_frames}",
    )


def _fake_gather(k, v, num_frames):
    _check_frames(k, num_frames, "k")
    _check_frames(v, num_frames, "v")
    return k.new_empty(k.shape[0], 2 * k.shape[1], k.shape[2]), v.new_empty(v.shape[0], 2 * v.shape[1], v.shape[2])


def _fake_scatter(grad_k2, grad_v2, num_frames):
    _check_frames(grad_k2, num_frames, "grad_k2")
    _check_frames(grad_v2, num_frames, "grad_v2")
    return (
        grad_k2.new_empty(grad_k2.shape[0], grad_k2.shape[1] // 2, grad_k2.shape[2]),
        grad_v2.new_empty(grad_v2.shape[0], grad_v2.shape[1] // 2, grad_v2.shape[2]),
    )


def _save_num_frames(ctx, inputs, output):
    ctx.num_frames = inputs[2]


def _gather_backward(ctx, grad_k2, grad_v2):
    grad_k, grad_v = torch.ops.tav.kv_gather_backward(grad_k2, grad_v2, ctx.num_frames)
    return grad_k, grad_v, None


def _scatter_backward(ctx, grad_k, grad_v):
    grad_k2, grad_v2 = torch.ops.tav.kv_gather(grad_k, grad_v, ctx.num_frames)
    return grad_k2, grad_v2, None
