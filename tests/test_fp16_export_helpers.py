"""The two helpers that keep an fp16 export small and fast on a CPU: the widened fp32 reference and the fp16
convolutions computed in fp32 while tracing."""

import copy

import pytest
import torch

from tav.export import onnx_export
from tav.export.onnx_export import _fp16_convs_computed_in_fp32
from tav.export.widened_module import widened


class Block(torch.nn.Module):
    """Own parameter and buffer beside children, a norm, a conv, and a child called twice."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.randn(8))
        self.register_buffer("shift", torch.randn(8))
        self.register_buffer("steps", torch.arange(3))  # integer: never cast
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, 8)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x, *, gate=None):
        h = self.norm(self.conv(x)) * self.scale[:, None, None] + self.shift[:, None, None]
        h = self.proj(self.proj(h.permute(0, 2, 3, 1)))
        return h if gate is None else h * gate


@pytest.fixture
def models():
    torch.manual_seed(0)
    full = Block().eval()
    half = copy.deepcopy(full).half()
    rounded = copy.deepcopy(half).float()  # the fp32 model of the weights the fp16 graph holds
    return half, rounded


@torch.no_grad()
def test_widened_half_module_computes_in_fp32_what_the_rounded_fp32_module_does(models):
    half, rounded = models
    x, gate = torch.randn(2, 4, 6, 6), torch.randn(8)
    with widened(half):
        out = half(x, gate=gate)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, rounded(x, gate=gate), rtol=1e-6, atol=1e-6)  # same fp32 ops on the same weights
    assert all(p.dtype == torch.float16 for p in half.parameters()) and half.shift.dtype == torch.float16
    assert half.steps.dtype == torch.int64
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in half.modules())  # hooks gone after the block


@torch.no_grad()
def test_widened_restores_fp16_weights_when_the_forward_raises(models):
    half, _ = models
    with pytest.raises(RuntimeError), widened(half):
        half(torch.randn(2, 5, 6, 6))  # wrong channel count: the conv raises after the block widened its params
    assert all(p.dtype == torch.float16 for p in half.parameters()) and half.shift.dtype == torch.float16


@torch.no_grad()
def test_widened_leaves_an_fp32_module_alone(models):
    _, rounded = models
    with widened(rounded):
        assert not any(m._forward_pre_hooks for m in rounded.modules())


@pytest.mark.parametrize("threads", [1, 2])  # one thread: fp32 convs can take the slow path too (no recursion)
def test_fp16_convolutions_run_in_fp32_only_inside_the_block(threads):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_fp16_convolutions()
    finally:
        torch.set_num_threads(saved)


def _check_fp16_convolutions():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 8, 16, 16).half(), torch.randn(4, 8, 3, 3).half(), torch.randn(4).half()
    reference = torch.nn.functional.conv2d(x.float(), w.float(), b.float(), 2, 1)
    registered = lambda: "onnx_export.py" in torch._C._dispatch_dump("aten::_slow_conv2d_forward")  # noqa: E731
    with _fp16_convs_computed_in_fp32():
        assert registered()
        out = torch.nn.functional.conv2d(x, w, b, 2, 1)
        # fp32 convs stay PyTorch's, 1x1 ones included (those take _slow_conv2d_forward too: no recursion here)
        fp32 = torch.nn.functional.conv2d(x.float(), w.float(), b.float(), 2, 1)
        pointwise = torch.nn.functional.conv2d(x.float(), w[:, :, 1:2, 1:2].float())
        pointwise_half = torch.nn.functional.conv2d(x, w[:, :, 1:2, 1:2])
    torch.testing.assert_close(fp32, reference)
    torch.testing.assert_close(pointwise, torch.nn.functional.conv2d(x.float(), w[:, :, 1:2, 1:2].float()))
    torch.testing.assert_close(pointwise_half.float(), pointwise, rtol=1e-3, atol=1e-2)
    assert out.dtype == torch.float16 and out.shape == reference.shape
    torch.testing.assert_close(out.float(), reference, rtol=1e-3, atol=1e-2)  # fp32 result rounded to fp16
    assert not registered()  # PyTorch's own kernel again


@pytest.mark.parametrize("slice_bytes", [1, 3 * 8 * 16 * 16 * 4])  # one sample a slice; 3 (a ragged last slice)
def test_fp16_convolutions_in_batch_slices_equal_the_whole_batch(monkeypatch, slice_bytes):
    torch.manual_seed(0)
    x, w, b = torch.randn(7, 8, 16, 16).half(), torch.randn(4, 8, 3, 3).half(), torch.randn(4).half()
    with _fp16_convs_computed_in_fp32():
        whole = torch.nn.functional.conv2d(x, w, b, 2, 1)
        monkeypatch.setattr(onnx_export, "CONV_SLICE_BYTES", slice_bytes)
        sliced = torch.nn.functional.conv2d(x, w, b, 2, 1)
    assert sliced.dtype == torch.float16 and sliced.shape == whole.shape == (7, 4, 8, 8)
    # the same fp32 kernel on independent samples; oneDNN may block a batch of 1 differently, so allow an fp16 ulp
    torch.testing.assert_close(sliced, whole, rtol=1e-3, atol=1e-3)
