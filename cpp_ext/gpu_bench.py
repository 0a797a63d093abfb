"""Effective bandwidth of the CUDA kv_gather against the device's copy bandwidth and plain PyTorch.

    python -m tav.cpp_ext.gpu_bench results.json [--frames 8] [--batch 2] [--dtype float16] [--repeats 50]

Bytes moved count what the op must touch: every output byte written once and read once
from its source frame (2 x output bytes, K and V together), the same accounting as a
device-to-device clone (read + write). The copy bandwidth is that of a 1 GiB clone.
Shapes are SD 1.x attn1 at 512x512: tokens 4096/1024/256/64, channels 320/640/1280/1280,
B*F frames (CFG doubles the batch: the default 2 x 8 = 16). Goal: >= 80 % of copy.
"""

import argparse
import json
import statistics

import torch

import tav.cpp_ext as ext
from tav.cpp_ext import kv_gather_reference

SD_LEVELS = [(4096, 320), (1024, 640), (256, 1280), (64, 1280)]
GOAL = 0.8


def time_ms(fn, repeats: int, warmup: int = 5) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` runs, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(repeats: int) -> float:
    """GB/s of a 1 GiB device-to-device clone (bytes read + written)."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    ms = time_ms(lambda: x.clone(), repeats)
    return 2 * x.numel() / ms / 1e6


def index_cat(k, v, num_frames):
    """The obvious PyTorch form: an index tensor per half, then cat."""
    bf = k.shape[0]
    i = torch.arange(bf, device=k.device)
    first, prev = i - i % num_frames, torch.where(i % num_frames == 0, i, i - 1)
    return torch.cat([k[first], k[prev]], 1), torch.cat([v[first], v[prev]], 1)


def bench_level(batch, frames, tokens, channels, dtype, repeats, copy_gbs) -> dict:
    k = torch.randn(batch * frames, tokens, channels, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    out = torch.ops.tav.kv_gather(k, v, frames)
    expected = kv_gather_reference(k, v, frames)
    assert all(torch.equal(a, b) for a, b in zip(out, expected, strict=True)), "kernel disagrees with the index rule"
    moved = 2 * (out[0].numel() + out[1].numel()) * k.element_size()
    row = {"shape": [batch * frames, tokens, channels], "dtype": str(dtype).removeprefix("torch."), "bytes": moved}
    for name, fn in [
        ("kernel", lambda: torch.ops.tav.kv_gather(k, v, frames)),
        ("reference", lambda: kv_gather_reference(k, v, frames)),
        ("index_cat", lambda: index_cat(k, v, frames)),
    ]:
        ms = time_ms(fn, repeats)
        row[f"{name}_us"] = ms * 1e3
        row[f"{name}_gbs"] = moved / ms / 1e6
    row["kernel_fraction_of_copy"] = row["kernel_gbs"] / copy_gbs
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json_out", help="where to write the results")
    parser.add_argument("--batch", type=int, default=2, help="clips (2 = CFG's uncond + cond)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_bench needs CUDA")
    if not ext.compiled_backend_available("cuda"):
        raise SystemExit(f"no compiled CUDA kv_gather: {ext.fallback_reason()}")
    dtype = getattr(torch, args.dtype)
    copy_gbs = copy_bandwidth(args.repeats)
    rows = [bench_level(args.batch, args.frames, n, c, dtype, args.repeats, copy_gbs) for n, c in SD_LEVELS]

    print(f"{torch.cuda.get_device_name()}: 1 GiB clone {copy_gbs:.0f} GB/s (read + write)")
    print(f"{'shape':>18} {'dtype':>8} {'kernel us':>10} {'GB/s':>7} {'of copy':>8} {'ref us':>8} {'idx+cat us':>10}")
    for r in rows:
        print(f"{str(r['shape']):>18} {r['dtype']:>8} {r['kernel_us']:10.1f} {r['kernel_gbs']:7.0f} "
              f"{r['kernel_fraction_of_copy']:8.0%} {r['reference_us']:8.1f} {r['index_cat_us']:10.1f}")
    big = rows[0]["kernel_fraction_of_copy"]
    print(f"goal >= {GOAL:.0%} of copy bandwidth on the largest level: "
          f"{'met' if big >= GOAL else 'NOT met'} ({big:.0%})")
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "copy_gbs": copy_gbs,
        "goal_fraction": GOAL,
        "goal_met": big >= GOAL,
        "rows": rows,
    }
    with open(args.json_out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
