"""Torch-free runtime: an ENGINE_DIR from tav-export -> video, on ONNX Runtime or TensorRT.

``VideoPipeline.load(engine_dir)`` once, then ``pipe(prompt)`` many times. A base ENGINE_DIR serves
many tuned videos: ``pipe.add_video(name, "NAME.tavpack")``, then ``pipe(prompt, video=name)``;
``read_pack_metadata(path)`` lists a pack without loading it. Imports only numpy, tokenizers,
tqdm, safetensors, onnxruntime / TensorRT (on use) and the video writer: never torch.
"""

from .packs import PackError, read_pack_metadata
from .pipeline import NonFiniteError, VideoPipeline, VideoResult
from .video_registry import UnknownVideoError

__all__ = ["NonFiniteError", "PackError", "UnknownVideoError", "VideoPipeline", "VideoResult", "read_pack_metadata"]
