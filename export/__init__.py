"""PyTorch -> ONNX -> TensorRT: the tuned video UNet, CLIP text encoder and VAE decoder at static shapes.

``export_engine(weights, out_dir, ...)`` writes an ENGINE_DIR (docs/CONTRACTS.md); ``tav-export`` is its CLI.
"""

import importlib

# Loaded on first use (PEP 562): `tav-export --help` lives in this package and must not wait for torch.
_EXPORTS = {"export_engine": ".pipeline", "ExportError": ".pipeline", "TensorRTError": ".tensorrt_build"}

__all__ = ["export_engine", "ExportError", "TensorRTError"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
