"""Parity of each exported graph: ONNX Runtime on seeded inputs against the PyTorch model in float32.

Errors are of the graph's output against the fp32 PyTorch output on the same
inputs (fp16 graphs get the inputs rounded to fp16 first, so the error measures
the graph's arithmetic, not the rounding of its inputs):
max_abs_err = max |y - y_ref|,  rel_l2_err = ||y - y_ref||_2 / ||y_ref||_2.

Tolerances on rel_l2_err:
- fp32: 1e-4. ORT and PyTorch differ only in summation order (measured 3e-7 to 3e-6).
- fp16: 1e-2. Measured (ORT CPU, seeded inputs, norms in fp32 as run_norms_in_fp32 makes them):
    tiny pipeline, 3 frames, 64x64:     text_encoder 8.3e-4, unet 1.0e-3, vae_decoder 2.4e-3
    "small" pipeline, 8 frames, 128x128: text_encoder 7.7e-4, unet 1.2e-3, vae_decoder 2.5e-3
  Half precision keeps ~3 decimal digits; the error does not grow from tiny to small, and
  1e-2 leaves 4x headroom over the worst graph while still failing on broken graphs
  (measured on the tiny UNet: untuned weights 0.19; a kv-gather taking frame i instead of
  i-1, which changes only frame 2 of 3, 0.05). Caveat: ORT's CPU provider
  runs some fp16 ops in fp32 (it inserts Casts where it lacks fp16 kernels), so a GPU
  engine's fp16 error can be somewhat larger than measured here.
"""

from contextlib import contextmanager

import numpy as np
import torch

from .widened_module import widened

TOLERANCE_REL_L2 = {"fp32": 1e-4, "fp16": 1e-2}


class ParityError(RuntimeError):
    """An exported graph does not compute what the PyTorch model computes."""


def ort_session(onnx_path, precision: str = "fp32"):
    """An InferenceSession on CUDA when this ONNX Runtime has it, else CPU.

    An fp16 graph on the CPU provider runs unoptimised: ONNX Runtime has no fp16 kernels for most
    CPU ops, wraps them in Casts to fp32, and its constant folding would then keep an fp32 copy of
    every weight beside the fp16 originals (measured: 2.8x the fp32 weight bytes for the session).
    Unfolded, each Cast runs per call, next to its consumer, and its output is freed after use (no arena:
    see below); the graph's arithmetic, which is what parity measures, is the same.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: fp16 graphs make ORT warn about every folded Cast
    # One run per session: an arena would only keep every block that run used (for an unoptimised fp16 graph on
    # the CPU, every weight's fp32 Cast output) until the session goes.
    options.enable_cpu_mem_arena = False
    # ORT's planner otherwise hands a dead tensor's buffer to a later tensor of the same size and keeps it allocated
    # in between: a UNet's down-block buffers wait for the up-block at the same resolution, held for the whole run.
    # Without an arena the allocator gives each buffer back as it dies. Measured on the SD-1.5 UNet at 8x256x256,
    # one session alone (2026-12-02): fp16 peak 4.46 -> 2.91-3.18 GiB, fp32 5.64 -> 4.81 GiB; run time the same.
    options.enable_mem_reuse = False
    # Prepacking re-lays every GEMM weight once per session, for the runs after: here there is one run. Measured on
    # the SD-1.5 UNet (CPU): session creation 21.6 s with it, 7.3 s without, the run itself the same.
    options.add_session_config_entry("session.disable_prepacking", "1")
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        # TF32 would cost ~1e-3 relative error and mask real fp32 mismatches.
        providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": 0}))
    elif precision == "fp16":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # The default order runs every weight's Cast as soon as it can, at the start: all the fp32 copies at once.
        # By priority, each runs next to the node that needs it. Measured on the SD-1.5 fp16 UNet at 8x256x256
        # (one run, 2026-12-02): peak 6.57 GB -> 4.70 GB, run 24.7 s -> 18.2 s. fp32 graphs (no Casts): no change.
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    return ort.InferenceSession(str(onnx_path), options, providers=providers)


def graph_feeds(spec, seed: int = 0) -> dict:
    """Seeded inputs in the graph's own dtypes."""
    return {t.name: value.astype(t.dtype)
            for t, value in zip(spec.inputs, spec.seeded_inputs(seed).values(), strict=True)}


@torch.no_grad()
def reference_output(spec, feeds: dict) -> np.ndarray:
    """The fp32 PyTorch module on the same (possibly fp16-rounded) inputs, as float32, on the module's device.

    A module already cast to fp16 computes in fp32 here one layer's weights at a time (widened_module.py),
    so an fp16 export never holds the fp32 weights whole. One CFG half at a time where the graph has them
    (``spec.batched_inputs``): the two halves never interact (GroupNorm, sparse-causal and temporal
    attention all stay within one batch element), so the result is the same while the activations held
    at once are halved.
    """
    device = next(spec.module.parameters()).device
    args = [
        torch.from_numpy(np.asarray(feeds[t.name])).to(device, torch.int64 if t.dtype == "int64" else torch.float32)
        for t in spec.inputs
    ]
    batched = [t.name in spec.batched_inputs for t in spec.inputs]
    halves = args[batched.index(True)].shape[0] if any(batched) else 1
    with no_tf32(), widened(spec.module):
        outputs = [spec.module(*[a[i:i + 1] if b else a for a, b in zip(args, batched, strict=True)]).float().cpu()
                   for i in range(halves)]
    return torch.cat(outputs).numpy()


@contextmanager
def no_tf32():
    """On CUDA, TF32 convs/matmuls would make the fp32 reference itself ~1e-3 off."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def errors(output: np.ndarray, reference: np.ndarray) -> dict:
    diff = output.astype(np.float64) - reference.astype(np.float64)
    return {
        "max_abs_err": float(np.abs(diff).max()),
        "rel_l2_err": float(np.linalg.norm(diff) / max(np.linalg.norm(reference), 1e-30)),
    }


def reference(spec, seed: int = 0) -> tuple:
    """(feeds in the graph's dtypes, the fp32 module's output on them): computed before the module is
    traced and freed, so parity never needs the torch model and the ONNX Runtime session at once."""
    feeds = graph_feeds(spec, seed)
    return feeds, reference_output(spec, feeds)


def check_parity(name: str, session, feeds: dict, expected: np.ndarray, precision: str) -> dict:
    """Errors of ``session`` on ``feeds`` against ``expected`` (``reference``); ParityError past the tolerance."""
    output = session.run(None, feeds)[0]
    result = errors(output, expected)
    tolerance = TOLERANCE_REL_L2[precision]
    result["tolerance_rel_l2"] = tolerance
    if not np.isfinite(output).all() or not result["rel_l2_err"] <= tolerance:
        hint = " (try --precision fp32)" if precision == "fp16" else "; this is an exporter bug, please report it"
        raise ParityError(
            f"{name}: ONNX Runtime output differs from PyTorch: rel_l2 {result['rel_l2_err']:.3g} "
            f"> tolerance {tolerance:g} (max abs {result['max_abs_err']:.3g}){hint}"
        )
    result["provider"] = session.get_providers()[0]
    return result
