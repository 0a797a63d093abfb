"""Torch-free runtime: an ENGINE_DIR from tav-export -> video, on ONNX Runtime or TensorRT.

``VideoPipeline.load(engine_dir)`` once, then ``pipe(prompt)`` many times. Imports only numpy,
tokenizers, tqdm, onnxruntime / TensorRT (on use) and the video writer: never torch.
"""

from .pipeline import NonFiniteError, VideoPipeline, VideoResult

__all__ = ["NonFiniteError", "VideoPipeline", "VideoResult"]
