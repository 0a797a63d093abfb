"""Pure-PyTorch cross-frame KV gather: the index rule of sparse-causal attention.

Frame i of a clip attends to the tokens of frame 0 and of frame max(i - 1, 0).
Written with slices, expand and concat only: index writes (``idx[0] = 0``) trace
to ONNX ScatterND, which TensorRT handles poorly, and gathers with an index
tensor hide the static structure from the optimiser.
"""

import torch


def kv_gather_reference(k: torch.Tensor, v: torch.Tensor, num_frames: int):
    """[B*F, N, C] keys/values -> [B*F, 2N, C]: [frame 0 ; frame max(i-1, 0)] per frame i."""
    return _gather_one(k, num_frames), _gather_one(v, num_frames)


def _gather_one(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    bf, n, c = x.shape
    if num_frames < 1 or bf % num_frames:
        raise ValueError(f"kv_gather: batch*frames={bf} is not a multiple of num_frames={num_frames}")
    clips = x.reshape(bf // num_frames, num_frames, n, c)
    first = clips[:, :1].expand(-1, num_frames, -1, -1)
    # prev = [0, 0, 1, ..., F-2]: frame 0 then frames shifted right by one.
    previous = torch.cat([clips[:, :1], clips[:, : num_frames - 1]], dim=1)
    return torch.cat([first, previous], dim=2).reshape(bf, 2 * n, c)


def kv_gather_backward_reference(grad_k2: torch.Tensor, grad_v2: torch.Tensor, num_frames: int):
    """Adjoint of the gather: [B*F, 2N, C] output grads -> [B*F, N, C] input grads (a scatter-add)."""
    return _scatter_one(grad_k2, num_frames), _scatter_one(grad_v2, num_frames)


def _scatter_one(grad: torch.Tensor, num_frames: int) -> torch.Tensor:
    bf, n2, c = grad.shape
    if num_frames < 1 or bf % num_frames or n2 % 2:
        raise ValueError(f"kv_gather_backward: cannot split {tuple(grad.shape)} into clips of {num_frames} frames")
    halves = grad.reshape(bf // num_frames, num_frames, 2, n2 // 2, c)
    first, previous = halves[:, :, 0], halves[:, :, 1]
    # Frame j < F-1 was the "previous" frame of frame j+1; frame 0 also of itself, and the
    # first half of every frame. Sum in float32 at least so fp16/bf16 sums stay accurate.
    acc = torch.promote_types(grad.dtype, torch.float32)
    frame0 = first.sum(1, dtype=acc) + previous[:, 0].to(acc)
    shifted = torch.cat([previous[:, 1:], torch.zeros_like(previous[:, :1])], dim=1).to(acc)
    out = torch.cat([(frame0 + shifted[:, 0]).unsqueeze(1), shifted[:, 1:]], dim=1)
    return out.to(grad.dtype).reshape(bf, n2 // 2, c)
