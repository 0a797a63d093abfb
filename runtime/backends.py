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
from .host_memory import release_freed_memory
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
    """The three graphs of an ENGINE_DIR on one backend: ``graphs[name].run(feeds) -> outputs``.

    ``keep_loaded=False`` (ONNX Runtime only): each session is created when its graph first runs and
    closed by ``done_with(name)``, so a one-shot command holds one graph at a time (text encoder, then
    the UNet, then the VAE decoder) and its peak is the largest graph's, not the sum of all three. A
    service keeps them loaded (the default): it pays the load once for many calls.
    """

    def __init__(self, manifest: Manifest, choice: BackendChoice, allow_plugin: bool = False, keep_loaded: bool = True,
                 ort_threads: int | None = None, plugin_library=None, ort_profile_dir=None):
        """``plugin_library``: the operator's KVGather plugin library (plugin_library.py); ``ort_profile_dir``:
        where ONNX Runtime sessions write their per-node traces (None: no profiling)."""
        self.choice, self._ort_threads, self._ort_profile_dir = choice, ort_threads, ort_profile_dir
        log.info("tav.runtime: %s on %s (%s)", choice.name, choice.device, choice.reason)
        self._engines = None
        self._manifest = manifest
        if choice.name == "tensorrt":
            flavour = next(iter(manifest.graphs.values())).tensorrt.get("flavour", "tensorrt")
            self._engines = backend_trt.TensorRTEngines(manifest, backend_trt.import_tensorrt(flavour),
                                                        allow_plugin=allow_plugin, plugin_library=plugin_library)
            self.graphs = self._engines.graphs
        elif keep_loaded:
            self.graphs = {name: self._ort_graph(name) for name in manifest.graphs}
        else:
            self.graphs = {name: OnDemandGraph(lambda name=name: self._checked(name, self._ort_graph(name)))
                           for name in manifest.graphs}
            return
        try:
            for name, graph in self.graphs.items():
                self._checked(name, graph)
        except BaseException:
            self.close()
            raise

    def _ort_graph(self, name: str) -> backend_ort.OrtGraph:
        declared, device = self._manifest.graphs[name], self.choice.device
        weights = [t.name for t in self._manifest.tunable_inputs]  # a base ENGINE_DIR's per-video UNet inputs
        # A CUDA graph pays off only for the UNet, which runs every step at fixed addresses.
        return backend_ort.OrtGraph(self._manifest.path(declared.onnx), device, cuda_graph=name == "unet",
                                    fused_attention=declared.fused_attention, cpu_arena=name in CPU_ARENA_GRAPHS,
                                    weight_inputs=weights if name == "unet" else (), threads=self._ort_threads,
                                    profile_dir=self._ort_profile_dir)

    def _checked(self, name: str, graph):
        """``graph`` when its real I/O is what manifest.json declares; else a one-line refusal (graph closed)."""
        declared = self._manifest.graphs[name]
        inputs = list(declared.inputs)
        if self.choice.name == "tensorrt":  # a base UNet plan has its per-video tensors as refittable weights
            inputs = [t for t in inputs if t not in self._manifest.tunable_inputs]
        problem = (describe_io_mismatch(inputs, graph.inputs)
                   or describe_io_mismatch(list(declared.outputs), graph.outputs))
        if problem:
            if self._engines is None:
                graph.close()
            source = declared.tensorrt["plan"] if self.choice.name == "tensorrt" else declared.onnx
            raise refuse(self._manifest.engine_dir, f"{source} has {problem} declared in manifest.json")
        return graph

    def done_with(self, name: str) -> None:
        """The caller will not run ``name`` again soon: an on-demand graph closes its session."""
        graph = self.graphs.get(name)
        if isinstance(graph, OnDemandGraph):
            graph.unload()

    def close(self) -> None:
        if self._engines is not None:
            self._engines.close()
        else:
            for graph in self.graphs.values():
                graph.close()
        self.graphs = {}


class OnDemandGraph:
    """A graph whose session exists from its first use until ``unload``; the same interface as OrtGraph."""

    def __init__(self, create):
        self._create = create
        self._graph = None

    def _loaded(self):
        if self._graph is None:
            self._graph = self._create()
        return self._graph

    def __getattr__(self, attribute):  # inputs, outputs, upload, release, bind_weights, ...: the live graph's
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return getattr(self._loaded(), attribute)

    def run(self, feeds: dict, weights: dict | None = None, release_memory: bool = False) -> dict:
        return self._loaded().run(feeds, weights, release_memory=release_memory)

    def upload(self, arrays: dict):
        return self._loaded().upload(arrays)

    def release(self, weights) -> None:
        if self._graph is not None:
            self._graph.release(weights)
        else:
            weights.clear()

    def unload(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
            release_freed_memory()

    def close(self) -> None:
        self.unload()
