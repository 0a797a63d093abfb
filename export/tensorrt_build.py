"""Build one TensorRT engine per ONNX graph with the TensorRT 10+ API; full TensorRT or TensorRT-RTX.

Choices, and why:
- Strongly typed networks: the ONNX graph's dtypes decide precision (fp16 ONNX
  -> fp16 engine, norms in fp32 where the graph casts them). Both flavours
  support it, and TensorRT-RTX has no FP16 builder flag at all.
- fp32 engines clear the TF32 flag, so that "fp32" means the parity-checked
  arithmetic; use fp16 for speed.
- One static optimisation profile (min = opt = max = the contract shape).
- Timing cache: full TensorRT loads ENGINE_DIR/timing.cache when re-exporting
  over an existing ENGINE_DIR and saves it after the builds. TensorRT-RTX
  makes timing-cache calls no-ops (deprecated in RTX 1.2), so none is written.
- No compute-capability targets are set: TensorRT-RTX then builds a portable
  plan (JIT-compiled for the GPU at load time), which works on a machine
  without a GPU; asking for ComputeCapability.CURRENT there fails with CUDA
  error 35. Full TensorRT builds for the GPU it runs on.
"""

import importlib
from dataclasses import dataclass
from pathlib import Path

from tav.runtime.backend_trt import FLAVOURS  # the flavours a plan may name, one list for both sides

INSTALL_HINT = "TensorRT is not installed: `pip install tensorrt` on a CUDA machine, or `pip install tensorrt-rtx`"
_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "INT64": "int64", "INT32": "int32"}


class TensorRTError(RuntimeError):
    """TensorRT is missing, cannot parse a graph, or cannot build it."""


@dataclass
class TensorRT:
    module: object
    flavour: str  # "tensorrt" | "tensorrt_rtx"
    version: str

    @property
    def has_timing_cache(self) -> bool:
        return self.flavour == "tensorrt"


def find_tensorrt():
    """The first importable flavour, or None. Placeholder wheels raise on import and are skipped."""
    for name in FLAVOURS:
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        if hasattr(module, "Builder"):
            return TensorRT(module, name, module.__version__)
    return None


def require_tensorrt() -> TensorRT:
    trt = find_tensorrt()
    if trt is None:
        raise TensorRTError(INSTALL_HINT)
    return trt


def gpu_info(flavour: str):
    """(GPU name, "major.minor" the plan is tied to) for the manifest; None where unknown or not tied.

    TensorRT-RTX plans are built without a compute-capability target here, so they are portable
    across its supported GPUs: recording the build machine's GPU would make the runtime refuse
    them elsewhere. Full TensorRT plans are tied to the GPU they were built on.
    """
    name = capability = None
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            name, capability = props.name, f"{props.major}.{props.minor}"
    except Exception:
        pass
    if capability is None:  # a CPU-only torch next to a real GPU: ask the CUDA runtime directly
        from tav.runtime import cuda_rt

        if cuda_rt.gpu_count() > 0:
            capability = cuda_rt.compute_capability(0)
    return name, None if flavour == "tensorrt_rtx" else capability


_LOGGERS = {}


def _logger(trt: TensorRT):
    """One logger per process: TensorRT ignores any logger after the first builder's."""
    if trt.flavour not in _LOGGERS:
        base = trt.module.ILogger

        class CollectingLogger(base):
            def __init__(self):
                base.__init__(self)
                self.errors = []

            def log(self, severity, msg):
                if severity <= trt.module.ILogger.Severity.ERROR:
                    self.errors.append(msg.strip())

        _LOGGERS[trt.flavour] = CollectingLogger()
    return _LOGGERS[trt.flavour]


class EngineBuilder:
    """Builds the graphs of one ENGINE_DIR, sharing one builder and one timing cache."""

    def __init__(self, trt: TensorRT, optimization_level: int = 3, timing_cache: Path | None = None):
        self.trt = trt
        self.logger = _logger(trt)
        self.builder = trt.module.Builder(self.logger)
        self.optimization_level = optimization_level
        self.timing_cache_path = timing_cache
        self._cache = None

    def build(self, spec, onnx_path: Path, plan_path: Path, precision: str, plugins=(), refittable=()) -> dict:
        """One plan; ``plugins``: libraries already registered that this graph needs (the runtime loads them too).

        ``refittable``: initializer names to build as individually refittable weights (a base UNet's
        tunable tensors, which are graph inputs in ``spec`` but weights in ``onnx_path``).
        """
        t = self.trt.module
        self.logger.errors.clear()
        network = self.builder.create_network(1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = t.OnnxParser(network, self.logger)
        # From the file, so external data next to it is found.
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
            raise TensorRTError(f"{spec.name}: {self.trt.flavour} cannot parse {onnx_path.name}: {errors}")
        inputs = [tensor for tensor in spec.inputs if tensor.name not in set(refittable)]
        self._check_inputs(network, spec.name, inputs)
        config = self.builder.create_builder_config()
        config.builder_optimization_level = self.optimization_level
        if precision == "fp32":
            config.clear_flag(t.BuilderFlag.TF32)
        if refittable:
            # REFIT_INDIVIDUAL keeps every other weight constant (and foldable); REFIT_IDENTICAL would be
            # wrong here, since each pack's values differ from the ones the plan is built with.
            config.set_flag(t.BuilderFlag.REFIT_INDIVIDUAL)
            unmarked = [name for name in refittable if not network.mark_weights_refittable(name)]
            if unmarked:
                raise TensorRTError(f"{spec.name}: {self.trt.flavour} cannot mark {len(unmarked)} weights refittable, "
                                    f"e.g. {unmarked[0]} (not a weight of the parsed network)")
        profile = self.builder.create_optimization_profile()
        for tensor in inputs:
            profile.set_shape(tensor.name, tensor.shape, tensor.shape, tensor.shape)
        config.add_optimization_profile(profile)
        if self.trt.has_timing_cache:
            config.set_timing_cache(self._timing_cache(config), False)
        plan = self.builder.build_serialized_network(network, config)
        if plan is None:
            reason = "; ".join(self.logger.errors) or "no reason given"
            if refittable and "CUDA" in reason:
                # Measured with tensorrt-rtx 1.7 on a machine without a GPU: any refit flag makes its
                # Myelin compiler JIT-compile on a device, while the same graph without it builds.
                reason = ("a refittable plan is compiled on a GPU, and none is usable here; "
                          "build the base on a GPU machine: " + reason)
            raise TensorRTError(f"{spec.name}: {self.trt.flavour} build failed: {reason}")
        plan_path.write_bytes(memoryview(plan))
        gpu, capability = gpu_info(self.trt.flavour)
        return {
            "plan": plan_path.name,
            "flavour": self.trt.flavour,
            "version": self.trt.version,
            "gpu": gpu,
            "compute_capability": capability,
            "strongly_typed": True,
            "builder_optimization_level": self.optimization_level,
            "timing_cache": self.trt.has_timing_cache,
            "plugins": [str(p) for p in plugins],
            "refittable": list(refittable),
        }

    def _timing_cache(self, config):
        if self._cache is None:
            path = self.timing_cache_path
            blob = path.read_bytes() if path is not None and path.is_file() else b""
            self._cache = config.create_timing_cache(blob)
        return self._cache

    def save_timing_cache(self, path: Path) -> bool:
        """Write the timing cache; False when this flavour has none or nothing was built."""
        if self._cache is None:
            return False
        path.write_bytes(memoryview(self._cache.serialize()))
        return True

    def _check_inputs(self, network, name: str, inputs: list):
        got = []
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            got.append({"name": tensor.name, "shape": list(tensor.shape),
                        "dtype": _DTYPE_NAMES.get(tensor.dtype.name, tensor.dtype.name)})
        want = [t.as_json() for t in inputs]
        if got != want:
            raise TensorRTError(f"{name}: TensorRT sees inputs {got}, the contract says {want}")
