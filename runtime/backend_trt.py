"""TensorRT plans (``tensorrt`` or ``tensorrt_rtx``, TensorRT 10+ API), after NVIDIA's TensorRT demo ``Engine``.

One ``Engine`` per plan: deserialize, an execution context on user-managed scratch memory,
persistent device buffers bound once by name, ``execute_async_v3`` on one stream, and an
optional CUDA graph of the call (the UNet's, replayed every denoising step). The three
engines run one after another on that stream, so ``TensorRTEngines`` gives them ONE scratch
allocation, sized to the largest ``device_memory_size_v2``, instead of one each.
Nothing here touches a GPU or imports TensorRT until an engine is loaded.
"""

import importlib
from pathlib import Path

import numpy as np

from . import cuda_rt
from .manifest_schema import TensorSpec
from .plugin_library import PLUGIN_ENV, PLUGIN_FILE, UNTRUSTED_PLUGIN, load_plugin_library  # noqa: F401 (re-exported)

FLAVOURS = ("tensorrt", "tensorrt_rtx")


def import_tensorrt(flavour: str):
    """The TensorRT module a plan of ``flavour`` needs, or None when it is not installed (or a placeholder)."""
    if flavour not in FLAVOURS:
        return None
    try:
        module = importlib.import_module(flavour)
        return module if hasattr(module, "Runtime") else None
    except Exception:  # PyPI's placeholder wheels raise at import; missing CUDA libraries raise OSError
        return None


def plan_incompatibility(manifest, trt, device_id: int = 0) -> str | None:
    """Why this manifest's plans cannot run with ``trt`` on GPU ``device_id``, or None when they can."""
    flavour = trt.__name__
    capability = cuda_rt.compute_capability(device_id)
    for graph in manifest.graphs.values():
        info = graph.tensorrt or {}
        plan = info.get("plan", f"{graph.name}.plan")
        if not info:
            return f"the manifest has no TensorRT plan for {graph.name}"
        if info.get("flavour") != flavour or info.get("version") != trt.__version__:
            return (f"{plan} was built with {info.get('flavour')} {info.get('version')}, "
                    f"this runtime has {flavour} {trt.__version__}")
        built_for = info.get("compute_capability")
        if built_for and built_for != capability:
            return f"{plan} was built for compute capability {built_for} ({info.get('gpu')}), this GPU is {capability}"
    return None


def _np_dtype(trt, trt_dtype) -> str:
    return np.dtype(trt.nptype(trt_dtype)).name


class Engine:
    """One deserialized plan with its context, I/O buffers and optional CUDA graph."""

    def __init__(self, trt, plan_path, cuda_graph: bool = False):
        self.trt, self.path, self.use_cuda_graph = trt, Path(plan_path), cuda_graph
        self.engine = self.context = None
        self.stream = 0
        self.device_buffers = {}  # tensor name -> device pointer, bound to the context once
        self.graph_exec = 0
        self.inputs, self.outputs = [], []
        self.refit = None  # trt_refit.RefitWeights for a base ENGINE_DIR's UNet (per-video weights)

    def load(self, runtime) -> None:
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"TensorRT could not deserialize {self.path} (see its log above); plans with kv_gather='plugin' need "
                f"the plugin library in ${PLUGIN_ENV}"
            )
        trt, engine = self.trt, self.engine
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            spec = TensorSpec(name, tuple(engine.get_tensor_shape(name)), _np_dtype(trt, engine.get_tensor_dtype(name)))
            (self.inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else self.outputs).append(spec)

    def scratch_size(self) -> int:
        engine = self.engine
        return engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size

    def activate(self, scratch_ptr: int, stream: int) -> None:
        """A context that uses the shared scratch memory instead of allocating its own."""
        self.context = self.engine.create_execution_context(self.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if hasattr(self.context, "set_device_memory"):  # TensorRT >= 10.1
            self.context.set_device_memory(scratch_ptr, self.scratch_size())
        else:
            self.context.device_memory = scratch_ptr
        self.stream = stream

    def allocate_buffers(self) -> None:
        """Persistent device buffers at the plan's static shapes, bound by name (addresses never change)."""
        for spec in self.inputs + self.outputs:
            nbytes = int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
            self.device_buffers[spec.name] = cuda_rt.malloc(nbytes)
            self.context.set_tensor_address(spec.name, self.device_buffers[spec.name])

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError(f"TensorRT execution of {self.path.name} failed (see its log above)")

    def upload(self, arrays: dict):
        return self.refit.upload(arrays)

    def release(self, weights) -> None:
        self.refit.release(weights)

    def drop_cuda_graph(self) -> None:
        """Forget the captured graph (after a refit); the next call captures again."""
        if self.graph_exec:
            cuda_rt.destroy_graph(self.graph_exec)
            self.graph_exec = 0
            self.use_cuda_graph = True

    def run(self, feeds: dict, weights=None, release_memory: bool = False) -> dict:  # noqa: ARG002
        """Copy inputs in, run (or replay the captured graph), copy outputs out: new host arrays.

        ``release_memory`` is ONNX Runtime's arena shrinking; TensorRT allocates once at load and keeps it."""
        if weights is not None:
            self.refit.fit(weights)  # on this stream, before the inputs' copies and the execution
        hosts = [np.ascontiguousarray(feeds[s.name], dtype=s.dtype) for s in self.inputs]  # alive until the sync
        for spec, host in zip(self.inputs, hosts, strict=True):
            cuda_rt.copy_to_device(self.device_buffers[spec.name], host, self.stream)
        if self.graph_exec:
            cuda_rt.launch_graph(self.graph_exec, self.stream)
        else:
            self._execute()
            if self.use_cuda_graph:
                self._capture()  # the run above was the warm-up; this call's outputs come from it
        return self._copy_out()

    def _capture(self) -> None:
        """Record one execution as a CUDA graph, replayed by later calls (same buffers, same scratch)."""
        self.use_cuda_graph = False  # one attempt
        # Some plans (data-dependent shapes, TensorRT-RTX's own graph handling) cannot be captured: just execute.
        capturable = getattr(self.context, "is_stream_capturable", None)
        if capturable is not None and not capturable(self.stream):
            return
        cuda_rt.begin_capture(self.stream)
        self._execute()  # recorded, not run
        self.graph_exec = cuda_rt.end_capture(self.stream)

    def _copy_out(self) -> dict:
        outputs = {s.name: np.empty(s.shape, s.dtype) for s in self.outputs}
        for name, host in outputs.items():
            cuda_rt.copy_to_host(host, self.device_buffers[name], self.stream)
        cuda_rt.synchronize(self.stream)
        return outputs

    def close(self) -> None:
        cuda_rt.destroy_graph(self.graph_exec)
        self.graph_exec = 0
        for ptr in self.device_buffers.values():
            cuda_rt.free(ptr)
        self.device_buffers = {}
        self.context = self.engine = None


class TensorRTEngines:
    """The ENGINE_DIR's plans on one GPU: one stream, one shared scratch allocation; ``graphs`` by name."""

    def __init__(self, manifest, trt, device_id: int = 0, cuda_graph: bool = True, allow_plugin: bool = False,
                 plugin_library=None):
        """``allow_plugin``: load the KVGather plugin library that plugin-mode plans need (see plugin_library);
        ``plugin_library``: the operator's library, for folders that ship none."""
        if manifest.kv_gather == "plugin":
            load_plugin_library(trt, manifest, allow_plugin, plugin_library)
        cuda_rt.set_device(device_id)
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.stream = cuda_rt.create_stream()
        self.scratch = 0
        self.graphs = {}
        try:
            for name, graph in manifest.graphs.items():
                engine = Engine(trt, manifest.path(graph.tensorrt["plan"]), cuda_graph=cuda_graph and name == "unet")
                engine.load(runtime)
                self.graphs[name] = engine
            if manifest.base is not None:
                from .trt_refit import RefitWeights

                self.graphs["unet"].refit = RefitWeights(trt, self.graphs["unet"], self.logger)
            self.scratch = cuda_rt.malloc(max(e.scratch_size() for e in self.graphs.values()))
            for engine in self.graphs.values():
                engine.activate(self.scratch, self.stream)
                engine.allocate_buffers()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for engine in self.graphs.values():
            engine.close()
        self.graphs = {}
        cuda_rt.free(self.scratch)
        self.scratch = 0
        if self.stream:
            cuda_rt.destroy_stream(self.stream)
            self.stream = 0
