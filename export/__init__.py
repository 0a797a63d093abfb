"""PyTorch -> ONNX -> TensorRT: the tuned video UNet, CLIP text encoder and VAE decoder at static shapes.

``export_engine(weights, out_dir, ...)`` writes an ENGINE_DIR (docs/CONTRACTS.md); ``tav-export`` is its CLI.
"""

from .pipeline import ExportError, export_engine
from .tensorrt_build import TensorRTError

__all__ = ["export_engine", "ExportError", "TensorRTError"]
