"""ONNX Runtime graphs: CPUExecutionProvider, or CUDAExecutionProvider with IOBinding and CUDA graphs.

On CUDA every input and output is an OrtValue allocated once on the GPU and bound once;
each call copies new inputs into the same device memory (``update_inplace``) and replays.
Fixed addresses are what ORT's CUDA-graph mode requires (``enable_cuda_graph``: the first
run captures, later runs replay), and they spare per-call allocations even without a graph.
A session with bound buffers is not reentrant: callers serialize ``run`` (VideoPipeline's lock).

A base ENGINE_DIR's UNet also takes per-video weights as inputs (``weight_inputs``). They are
not copied per call: ``upload`` makes them resident once (OrtValues on the GPU; on the CPU the
host arrays themselves, which ORT reads in place), and ``run(feeds, weights)`` binds the
resident values. Switching videos rebinds those inputs; nothing is re-created. The CUDA graph
is off for such a UNet: a captured graph replays fixed weight addresses.
"""

import logging
from pathlib import Path

import numpy as np

from .command import first_line
from .manifest_schema import TensorSpec

log = logging.getLogger("tav.runtime")

# A folder where every session writes ONNX Runtime's per-node trace; tav-run reads it and passes ``profile_dir``.
PROFILE_ENV = "TAV_ORT_PROFILE"

ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(double)": "float64"}


class FusedAttentionUnsupported(RuntimeError):
    """This ONNX Runtime cannot run the com.microsoft.MultiHeadAttention nodes of a fused graph."""


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _specs(nodes) -> list:
    return [TensorSpec(n.name, tuple(n.shape), ORT_DTYPES.get(n.type, n.type)) for n in nodes]


class OrtGraph:
    """One ONNX graph in an InferenceSession; ``run(feeds) -> {output name: new numpy array}``."""

    def __init__(self, path, device: str = "cpu", cuda_graph: bool = False, device_id: int = 0, io_binding=None,
                 fused_attention: int = 0, cpu_arena: bool = True, weight_inputs=(), threads: int | None = None,
                 profile_dir=None):
        """``profile_dir``: write ONNX Runtime's per-node trace of this session there (None: no profiling)."""
        import onnxruntime as ort

        self.path, self.device, self.cuda_graph, self.device_id = str(path), device, False, device_id
        self.weight_inputs = frozenset(weight_inputs)
        cuda_graph = cuda_graph and not self.weight_inputs
        self._bound_weights = None
        options = ort.SessionOptions()
        # The CPU arena keeps every block a run ever used, for the next run. Worth it for a graph run
        # every step; for one run per video (text encoder, VAE decoder) it only doubles the peak:
        # measured on the VAE at 8x512x512, 4.0 GiB with the arena, 2.0 GiB without (docs/PERF.md).
        options.enable_cpu_mem_arena = cpu_arena
        if device == "cpu":
            # The memory pattern plans one block for all activations from the first run and allocates it on
            # every later run, while the arena still holds the first run's blocks: the second UNet step then
            # peaks 1.8 GiB higher. Measured on the SD-1.5 UNet, 8x256x256 CFG: 7.35 GB with the pattern,
            # 5.51 GB without, steps no slower (docs/PERF.md "Real size").
            options.enable_mem_pattern = False
        self._shrink_arena = ort.RunOptions()
        self._shrink_arena.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # errors only: ORT's optimizer warnings (e.g. fp16 constant folding) are noise here
        options.log_severity_level = 3
        # Several processes sharing a CPU (tav-serve replicas) each want few threads, not one per core.
        if threads:
            options.intra_op_num_threads = threads
        if profile_dir:  # where the time goes, per node: summarise with `python -m tav.bench.ort_profile DIR`
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(profile_dir) / Path(self.path).stem)
        try:
            if device == "cpu":
                self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
            else:
                self.session = self._cuda_session(ort, options, cuda_graph, device_id)
        except Exception as err:
            if not fused_attention:
                raise
            # A build of ONNX Runtime without contrib ops (minimal or custom builds) cannot load the fused graph.
            raise FusedAttentionUnsupported(
                f"{self.path}: this onnxruntime {ort.__version__} cannot load its {fused_attention} "
                f"fused attention nodes (com.microsoft.MultiHeadAttention: {first_line(err)}); "
                "install onnxruntime>=1.19 or onnxruntime-gpu, "
                "or re-export with `tav-export --attention standard`"
            ) from None
        self.inputs = _specs(self.session.get_inputs())
        self.outputs = _specs(self.session.get_outputs())
        # IOBinding is the CUDA path; on the CPU it can be forced, which lets CPU tests cover that code.
        self._binding = self._bind(ort, device_id) if (device == "cuda" if io_binding is None else io_binding) else None

    def _cuda_session(self, ort, options, cuda_graph: bool, device_id: int):
        def session(graph: bool):
            # kSameAsRequested: the arena grows by what is asked, not by powers of two (large UNet activations).
            # use_tf32 0: ORT enables TF32 by default, so an fp32 graph would not compute what its manifest
            # parity measured (the exporter checks without TF32); fp16 graphs are unaffected.
            cuda = {"device_id": str(device_id), "enable_cuda_graph": "1" if graph else "0",
                    "arena_extend_strategy": "kSameAsRequested", "use_tf32": "0"}
            return ort.InferenceSession(self.path, options,
                                        providers=[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"])

        self.cuda_graph = cuda_graph
        try:
            created = session(cuda_graph)
        except Exception as err:  # ORT refuses graph capture when some node runs on the CPU provider
            if not cuda_graph:
                raise
            log.warning("%s: CUDA graph capture unavailable (%s); running without it", self.path, first_line(err, None))
            self.cuda_graph = False
            created = session(False)
        # ORT silently falls back to the CPU provider when CUDA cannot start; a GPU run must not.
        if created.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"onnxruntime could not start its CUDA provider for {self.path} "
                               f"(providers: {created.get_providers()})")
        return created

    def _bind(self, ort, device_id: int):
        binding = self.session.io_binding()
        self._device_inputs, self._device_outputs = {}, {}
        for spec in self.inputs:
            if spec.name in self.weight_inputs:
                continue  # bound per video by run(feeds, weights)
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(spec.shape), np.dtype(spec.dtype),
                                                              self.device, device_id)
            binding.bind_ortvalue_input(spec.name, value)
            self._device_inputs[spec.name] = value
        for spec in self.outputs:
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(spec.shape), np.dtype(spec.dtype),
                                                              self.device, device_id)
            binding.bind_ortvalue_output(spec.name, value)
            self._device_outputs[spec.name] = value
        return binding

    def upload(self, arrays: dict):
        """Per-video weights made resident for ``run``: OrtValues on the GPU, or the host arrays on the CPU."""
        import onnxruntime as ort

        if self.device == "cpu":
            return dict(arrays)
        return {name: ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id)
                for name, array in arrays.items()}

    def release(self, weights) -> None:
        if self._bound_weights is weights:  # never leave a binding that points at freed memory
            self._bound_weights = None
        weights.clear()

    def bind_weights(self, weights: dict) -> None:
        """Point the bound per-video inputs at ``weights`` (a no-op when they already are).

        This is the switch between videos.
        """
        if self._bound_weights is weights:
            return
        for name, value in weights.items():
            if isinstance(value, np.ndarray):
                self._binding.bind_cpu_input(name, value)
            else:
                self._binding.bind_ortvalue_input(name, value)
        self._bound_weights = weights

    def run(self, feeds: dict, weights: dict | None = None, release_memory: bool = False) -> dict:
        """``release_memory``: after this run, give the CPU arena's free blocks back to the system (the last
        denoising step: the VAE decoder then runs without the UNet's activations still held)."""
        weights = weights or {}
        options = self._shrink_arena if release_memory and self.device == "cpu" else None
        if set(weights) != self.weight_inputs:
            raise ValueError(f"{self.path}: weights for {len(weights)} of its {len(self.weight_inputs)} "
                             "per-video inputs")
        feeds = {s.name: np.ascontiguousarray(feeds[s.name], dtype=s.dtype)
                 for s in self.inputs if s.name not in weights}
        if self._binding is None:
            outputs = self.session.run(None, {**feeds, **weights}, options)
            return dict(zip((s.name for s in self.outputs), outputs, strict=True))
        if weights:
            self.bind_weights(weights)
        for name, array in feeds.items():
            self._device_inputs[name].update_inplace(array)  # same device address: a captured graph stays valid
        # ORT's CUDA provider runs on its own stream: order the copies around the run (as ORT's CudaSession does).
        self._binding.synchronize_inputs()
        self.session.run_with_iobinding(self._binding, options)
        self._binding.synchronize_outputs()
        # numpy() copies a CUDA tensor to a new host array but views a CPU one: copy so results never alias.
        own = (lambda a: a.copy()) if self.device == "cpu" else (lambda a: a)
        return {name: own(value.numpy()) for name, value in self._device_outputs.items()}

    def close(self) -> None:
        if self.session is not None and self.session.get_session_options().enable_profiling:
            self.session.end_profiling()  # writes the JSON trace
        self._binding = self._device_inputs = self._device_outputs = self._bound_weights = None
        self.session = None
