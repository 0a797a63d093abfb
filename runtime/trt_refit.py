"""Per-video weights for a base ENGINE_DIR's TensorRT UNet: device buffers per video, refit on switch.

The base UNet plan is built with BuilderFlag.REFIT_INDIVIDUAL and its tunable tensors marked
refittable (export/base_engine.py). A resident video owns one device buffer per tensor
(``upload``); switching to it points a ``trt.Refitter`` at those buffers
(``set_named_weights(..., TensorLocation.DEVICE)``) and refits on the engine's stream, so the
refit is ordered after queued work and no host copy is made. The UNet's captured CUDA graph is
dropped on refit and recaptured by the next call (refit may move weights the graph recorded).

Written against the TensorRT 10 API (full TensorRT and TensorRT-RTX share it); not run here:
no GPU on the development machine, and refit needs a deserialized engine, which needs one.
"""

import numpy as np

from . import cuda_rt


class RefitWeights:
    """Uploads, releases and fits per-video weights into one refittable ``Engine`` (backend_trt)."""

    def __init__(self, trt, engine, logger):
        self.trt, self.engine, self.logger = trt, engine, logger
        self._fitted = None
        self._refitter = None  # one per engine, reused for every switch

    def upload(self, arrays: dict) -> dict:
        """name -> (device pointer, TensorRT dtype, element count); copies finish before this returns."""
        handle = {}
        try:
            for name, array in arrays.items():
                array = np.ascontiguousarray(array)
                ptr = cuda_rt.malloc(array.nbytes)
                handle[name] = (ptr, self._dtype(array), array.size)
                cuda_rt.copy_to_device(ptr, array, self.engine.stream)
            cuda_rt.synchronize(self.engine.stream)
        except BaseException:
            self.release(handle)
            raise
        return handle

    def release(self, handle: dict) -> None:
        if self._fitted is handle:
            self._fitted = None
        cuda_rt.synchronize(self.engine.stream)  # no queued UNet call may still read them
        for ptr, _, _ in handle.values():
            cuda_rt.free(ptr)
        handle.clear()

    def fit(self, handle: dict) -> None:
        """Make the engine compute with ``handle``'s weights (a no-op when they are already fitted)."""
        if self._fitted is handle:
            return
        trt = self.trt
        if self._refitter is None:
            self._refitter = trt.Refitter(self.engine.engine, self.logger)
        refitter = self._refitter
        for name, (ptr, dtype, count) in handle.items():
            if not refitter.set_named_weights(name, trt.Weights(dtype, ptr, count), trt.TensorLocation.DEVICE):
                raise RuntimeError(f"TensorRT refused refit weights {name} for {self.engine.path.name}")
        missing = refitter.get_missing_weights()
        if missing:
            raise RuntimeError(f"{self.engine.path.name}: the pack leaves {len(missing)} refittable weights unset, "
                               f"e.g. {missing[0]}")
        if not refitter.refit_cuda_engine_async(self.engine.stream):
            raise RuntimeError(f"TensorRT could not refit {self.engine.path.name} (see its log above)")
        self.engine.drop_cuda_graph()
        self._fitted = handle

    def _dtype(self, array):
        return {np.dtype(np.float16): self.trt.float16, np.dtype(np.float32): self.trt.float32}[array.dtype]
