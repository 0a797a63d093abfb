"""Timing primitives: median wall time after warm-up, with CUDA events on a GPU."""

import statistics
import time

import torch

GEMM_N = {"cuda": 8192, "cpu": 1024}  # the square GEMM whose rate the UNet steps are compared with


def median_ms(fn, device: str, warmup: int = 2, repeats: int = 5) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    return statistics.median(_samples_ms(fn, device, warmup, repeats))


def _samples_ms(fn, device: str, warmup: int, repeats: int) -> list:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def matmul_tflops(device: str, dtype: torch.dtype, n: int | None = None) -> float:
    """The device's measured dense matmul rate: a square n x n x n GEMM, 2 n^3 flop, its fastest of 10 calls.

    The fastest, not the median: this rate is the ceiling the UNet steps are compared with, and on a shared CPU a
    10 ms GEMM's median can land on a busy moment, which made a step read as 190 % of it.
    """
    n = n or GEMM_N[device]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = min(_samples_ms(lambda: torch.mm(a, b), device, warmup=3, repeats=10))
    return 2 * n**3 / (ms * 1e-3) / 1e12


def copy_gbps(device: str, nbytes: int = 1 << 30) -> float:
    """Measured copy bandwidth (bytes read + written per second): the memory-bound ceiling."""
    src = torch.empty(nbytes // 2, dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, warmup=2, repeats=10)
    return 2 * nbytes / (ms * 1e-3) / 1e9
