"""The compiled kv_gather (C++ twin, CUDA kernel) against the index rule, its autograd, fallback and model use."""

import shutil
import subprocess
import sys

import pytest
import torch

import tav.cpp_ext as ext
from tav.cpp_ext import kv_gather_backward_reference, kv_gather_reference, op
from tav.tuner import VideoUNet

BACKEND = ext.load()  # builds or loads the compiled op once (cached by `make setup`), registers torch.ops.tav.*
needs_compiled_cpu = pytest.mark.skipif(
    "cpu" not in BACKEND.devices, reason=f"compiled CPU kv_gather unavailable: {BACKEND.fallback_reason}"
)

# (batch, frames, tokens, channels): one frame, two frames, several clips, odd sizes.
SHAPES = [(1, 1, 3, 5), (1, 2, 4, 8), (2, 2, 5, 3), (3, 4, 7, 6), (2, 5, 1, 1)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _pair(b, f, n, c, dtype, device="cpu"):
    # v gets other channels than k: the op treats K and V independently.
    return torch.randn(b * f, n, c, device=device).to(dtype), torch.randn(b * f, n, c + 2, device=device).to(dtype)


def test_cpu_twin_builds_where_a_compiler_exists():
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: the PyTorch reference serves")
    assert ext.compiled_backend_available("cpu"), ext.fallback_reason()
    assert str(torch.ops.tav.kv_gather.default._schema) == "tav::" + op.SCHEMAS["kv_gather"]
    assert str(torch.ops.tav.kv_gather_backward.default._schema) == "tav::" + op.SCHEMAS["kv_gather_backward"]


@needs_compiled_cpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_compiled_gather_equals_index_rule(shape, dtype):
    k, v = _pair(*shape, dtype)
    for got, expected in zip(torch.ops.tav.kv_gather(k, v, shape[1]), kv_gather_reference(k, v, shape[1]), strict=True):
        assert got.dtype == dtype and torch.equal(got, expected)


@needs_compiled_cpu
def test_compiled_gather_accepts_non_contiguous_input():
    k = torch.randn(4, 6, 5).transpose(1, 2)  # [4, 5, 6], strided
    for got, expected in zip(torch.ops.tav.kv_gather(k, k, 2), kv_gather_reference(k, k, 2), strict=True):
        assert torch.equal(got, expected)


@needs_compiled_cpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_compiled_backward_is_the_scatter_add(shape, dtype):
    b, f, n, c = shape
    g_k, g_v = torch.randn(b * f, 2 * n, c).to(dtype), torch.randn(b * f, 2 * n, c + 1).to(dtype)
    got = torch.ops.tav.kv_gather_backward(g_k, g_v, f)
    for got_one, expected in zip(got, kv_gather_backward_reference(g_k, g_v, f), strict=True):
        torch.testing.assert_close(got_one, expected)
    # The adjoint identity <gather(x), g> == <x, scatter(g)> pins the rule independently of the reference.
    x = torch.randn(b * f, n, c, dtype=torch.float64)
    g = g_k.double()
    lhs = (torch.ops.tav.kv_gather(x, x, f)[0] * g).sum()
    rhs = (x * torch.ops.tav.kv_gather_backward(g, g, f)[0]).sum()
    torch.testing.assert_close(lhs, rhs)


@pytest.mark.parametrize("num_frames", [1, 2, 3])
def test_gradcheck_and_double_backward(num_frames):
    k = torch.randn(2 * num_frames, 3, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2 * num_frames, 3, 2, dtype=torch.float64, requires_grad=True)
    gather = lambda k, v: torch.ops.tav.kv_gather(k, v, num_frames)  # noqa: E731
    assert torch.autograd.gradcheck(gather, (k, v))
    assert torch.autograd.gradgradcheck(gather, (k, v))


def test_opcheck_schema_fake_and_autograd_registrations():
    for overload, args in [
        (torch.ops.tav.kv_gather.default, (torch.randn(4, 3, 8), torch.randn(4, 3, 6), 2)),
        (torch.ops.tav.kv_gather_backward.default, (torch.randn(4, 6, 8), torch.randn(4, 6, 6), 2)),
    ]:
        torch.library.opcheck(overload, args)


def test_fake_and_meta_kernels_give_output_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        k2, v2 = torch.ops.tav.kv_gather(torch.empty(16, 4096, 320), torch.empty(16, 4096, 320), 8)
    assert k2.shape == v2.shape == (16, 8192, 320)
    k2, _ = torch.ops.tav.kv_gather(torch.empty(6, 5, 7, device="meta"), torch.empty(6, 5, 7, device="meta"), 3)
    assert k2.shape == (6, 10, 7) and k2.device.type == "meta"


def test_frames_that_do_not_divide_the_batch_are_rejected():
    with pytest.raises(ValueError, match="multiple of num_frames"):
        torch.ops.tav.kv_gather(torch.randn(5, 2, 2), torch.randn(5, 2, 2), 2)
    with pytest.raises(ValueError, match="multiple of num_frames"):
        kv_gather_reference(torch.randn(5, 2, 2), torch.randn(5, 2, 2), 2)


def test_turned_off_extension_falls_back_with_one_warning_and_none_for_meta():
    script = (
        "import torch, tav.cpp_ext as e\n"
        "e.load(compiled=False)\n"
        "assert not e.compiled_backend_available('cpu')\n"
        "m = torch.empty(6, 3, 4, device='meta')\n"
        "assert e.kv_gather(m, m, 3)[0].shape == (6, 6, 4)\n"  # tracing on meta is expected: nothing to announce
        "k = torch.randn(6, 3, 4, dtype=torch.float64, requires_grad=True)\n"
        "for _ in range(3): out = e.kv_gather(k, k, 3)\n"
        "assert torch.equal(out[0], e.kv_gather_reference(k, k, 3)[0])\n"
        "assert torch.autograd.gradcheck(lambda x: torch.ops.tav.kv_gather(x, x, 3), (k,))\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    warnings = [line for line in result.stderr.splitlines() if "pure-PyTorch kv_gather" in line]
    assert len(warnings) == 1 and "on cpu" in warnings[0] and "load(compiled=False)" in warnings[0], result.stderr


def test_load_is_once_per_process_and_refuses_other_arguments_later():
    assert ext.load() is BACKEND
    with pytest.raises(RuntimeError, match="already loaded"):
        ext.load(compiled=False)


def test_prebuild_entry_point_reports_the_active_backend():
    result = subprocess.run([sys.executable, "-m", "tav.cpp_ext"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    expected = "ready" if ext.compiled_backend_available("cpu") else "using the PyTorch reference"
    assert expected in result.stdout


@needs_compiled_cpu
def test_video_unet_is_the_same_with_and_without_the_compiled_op(tiny_sd, monkeypatch):
    model = VideoUNet.from_pretrained_2d(tiny_sd)
    trainable = set(model.trainable_parameter_names())
    sample, text = torch.randn(2, 4, 3, 8, 8), torch.randn(2, 77, 32)

    def run():
        model.zero_grad()
        out = model(sample, torch.tensor([10, 500]), text).sample
        (out**2).mean().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if n in trainable}

    def no_reference(*args):
        raise AssertionError("the compiled op should serve CPU tensors")

    with monkeypatch.context() as m:
        m.setattr(ext, "kv_gather_reference", no_reference)
        compiled_out, compiled_grads = run()
    with monkeypatch.context() as m:
        m.setattr(BACKEND, "devices", frozenset())
        m.setattr(BACKEND, "noted", True)
        reference_out, reference_grads = run()
    torch.testing.assert_close(compiled_out, reference_out, rtol=0, atol=0)
    assert compiled_grads.keys() == trainable
    for name, grad in compiled_grads.items():
        torch.testing.assert_close(grad, reference_grads[name], rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(2, 8, 64, 320), (1, 3, 17, 33)])
def test_cuda_kernel_equals_index_rule(shape, dtype):
    assert ext.compiled_backend_available("cuda"), ext.fallback_reason()
    k, v = _pair(*shape, dtype, device="cuda")
    for got, expected in zip(torch.ops.tav.kv_gather(k, v, shape[1]), kv_gather_reference(k, v, shape[1]), strict=True):
        assert torch.equal(got, expected)
    b, f, n, c = shape
    g = torch.randn(b * f, 2 * n, c, device="cuda").to(dtype)
    got = torch.ops.tav.kv_gather_backward(g, g, f)[0]
    torch.testing.assert_close(got, kv_gather_backward_reference(g, g, f)[0])


@pytest.mark.gpu
def test_cuda_kernel_handles_misaligned_views():
    # An offset of one element breaks 16-byte alignment: the kernel must fall back to narrower words.
    base = torch.randn(4 * 5 * 8 + 1, device="cuda", dtype=torch.float16)
    k = base[1:].view(4, 5, 8)
    assert k.data_ptr() % 16 != 0
    for got, expected in zip(torch.ops.tav.kv_gather(k, k, 2), kv_gather_reference(k, k, 2), strict=True):
        assert torch.equal(got, expected)


@pytest.mark.gpu
def test_cuda_gradcheck():
    k = torch.randn(6, 3, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: torch.ops.tav.kv_gather(x, x, 3), (k,))


@pytest.mark.gpu
def test_gpu_bench_writes_its_table(tmp_path):
    import json

    from tav.cpp_ext import gpu_bench

    assert gpu_bench.main([str(tmp_path / "bench.json"), "--repeats", "5"]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["copy_gbs"] > 0 and len(result["rows"]) == len(gpu_bench.SD_LEVELS)
