"""Choosing and loading a backend for an ENGINE_DIR.

``auto``: TensorRT when the manifest has plans, their TensorRT runtime is installed, a GPU is
visible and the plans were built for this TensorRT version and GPU; else ONNX Runtime's CUDA
provider when it and a GPU are available; else ONNX Runtime on the CPU. Asking for a backend or
device explicitly turns every "else" into a one-line error that says what is missing.
After loading, each graph's real I/O must equal what the manifest declares.
"""

import logging
from dataclasses import dataclass

from . import backend_ort, backend_trt, cuda_rt
from .manifest import Manifest, describe_io_mismatch, refuse

log = logging.getLogger("tav.runtime")

BACKENDS = ("auto", "tensorrt", "onnxruntime")
# Graphs that keep ONNX Runtime's CPU memory arena between runs: the one run every denoising step.
CPU_ARENA_GRAPHS = ("unet",)
DEVICES = ("cuda", "cpu")


class BackendUnavailable(RuntimeError):
    """The requested backend or device cannot run here; the message says what is missing."""


@dataclass(frozen=True)
class BackendChoice:
    name: str  # "tensorrt" | "onnxruntime"
    device: str  # "cuda" | "cpu"
    reason: str  # why this one, for the log


def _tensorrt_problem(manifest: Manifest, allow_plugin: bool) -> str | None:
    """None when this manifest's plans can run here, else why not."""
    if not manifest.has_plans:
        return "the ENGINE_DIR has no TensorRT plans (export with --backend tensorrt)"
    if manifest.kv_gather == "plugin" and not allow_plugin:
        return backend_trt.UNTRUSTED_PLUGIN
    flavour = next(iter(manifest.graphs.values())).tensorrt.get("flavour", "tensorrt")
    trt = backend_trt.import_tensorrt(flavour)
    if trt is None:
        return f"its plans need the {flavour} Python package, which is not installed here"
    if cuda_rt.gpu_count() == 0:
        return "no CUDA GPU is visible"
    return backend_trt.plan_incompatibility(manifest, trt)


def _ort_cuda_problem() -> str | None:
    if not backend_ort.cuda_available():
        return "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu instead of onnxruntime)"
    if cuda_rt.gpu_count() == 0:
        return "no CUDA GPU is visible"
    return None


def choose_backend(manifest: Manifest, backend: str = "auto", device: str | None = None,
                   allow_plugin: bool = False) -> BackendChoice:
    """``allow_plugin``: the caller trusts the ENGINE_DIR enough to load its native KVGather plugin library."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if device not in (None, *DEVICES):
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if backend == "tensorrt":
        if device == "cpu":
            raise BackendUnavailable("TensorRT runs on a CUDA GPU only; use --backend onnxruntime for --device cpu")
        problem = _tensorrt_problem(manifest, allow_plugin)
        if problem:
            raise BackendUnavailable(f"cannot use TensorRT: {problem}")
        return BackendChoice("tensorrt", "cuda", "requested")
    reasons = []
    if backend == "auto" and device != "cpu":
        problem = _tensorrt_problem(manifest, allow_plugin)
        if problem is None:
            return BackendChoice("tensorrt", "cuda", "plans match this TensorRT and GPU")
        reasons.append(f"TensorRT: {problem}")
    if manifest.kv_gather == "plugin":
        raise BackendUnavailable(
            "this ENGINE_DIR's unet.onnx uses the tav::KVGather custom op (exported with --kv-gather plugin), which "
            "ONNX Runtime cannot run: " + ("; ".join(reasons) or "use --backend tensorrt")
            + "; or re-export with --kv-gather onnx"
        )
    if device == "cpu":
        return BackendChoice("onnxruntime", "cpu", "requested")
    problem = _ort_cuda_problem()
    if problem is None:
        return BackendChoice("onnxruntime", "cuda", "; ".join(reasons) or "CUDA provider available")
    reasons.append(f"ONNX Runtime CUDA: {problem}")
    if device == "cuda":
        raise BackendUnavailable("cannot run on cuda: " + "; ".join(reasons))
    return BackendChoice("onnxruntime", "cpu", "; ".join(reasons))


class LoadedGraphs:
    """The three graphs of an ENGINE_DIR on one backend: ``graphs[name].run(feeds) -> outputs``."""

    def __init__(self, manifest: Manifest, choice: BackendChoice, allow_plugin: bool = False,
                 ort_threads: int | None = None):
        self.choice = choice
        log.info("tav.runtime: %s on %s (%s)", choice.name, choice.device, choice.reason)
        self._engines = None
        if choice.name == "tensorrt":
            flavour = next(iter(manifest.graphs.values())).tensorrt.get("flavour", "tensorrt")
            self._engines = backend_trt.TensorRTEngines(manifest, backend_trt.import_tensorrt(flavour), allow_plugin=allow_plugin)
            self.graphs = self._engines.graphs
        else:
            weights = [t.name for t in manifest.tunable_inputs]  # a base ENGINE_DIR's per-video UNet inputs
            self.graphs = {
                # A CUDA graph pays off only for the UNet, which runs every step at fixed addresses.
                name: backend_ort.OrtGraph(manifest.path(g.onnx), choice.device, cuda_graph=name == "unet",
                                           fused_attention=g.fused_attention, cpu_arena=name in CPU_ARENA_GRAPHS,
                                           weight_inputs=weights if name == "unet" else (), threads=ort_threads)
                for name, g in manifest.graphs.items()
            }
        try:
            for name, graph in self.graphs.items():
                declared = manifest.graphs[name]
                inputs = list(declared.inputs)
                if choice.name == "tensorrt":  # a base UNet plan has its per-video tensors as refittable weights
                    inputs = [t for t in inputs if t not in manifest.tunable_inputs]
                problem = describe_io_mismatch(inputs, graph.inputs) or describe_io_mismatch(
                    list(declared.outputs), graph.outputs
                )
                if problem:
                    source = declared.tensorrt["plan"] if choice.name == "tensorrt" else declared.onnx
                    raise refuse(manifest.engine_dir, f"{source} has {problem} declared in manifest.json")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._engines is not None:
            self._engines.close()
        else:
            for graph in self.graphs.values():
                graph.close()
        self.graphs = {}
