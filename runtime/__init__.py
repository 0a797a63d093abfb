"""Torch-free runtime: an ENGINE_DIR from tav-export -> video, on ONNX Runtime or TensorRT.

``VideoPipeline.load(engine_dir)`` once, then ``pipe(prompt)`` many times. A base ENGINE_DIR serves
many tuned videos: ``pipe.add_video(name, "NAME.tavpack")``, then ``pipe(prompt, video=name)``;
``read_pack_metadata(path)`` lists a pack without loading it; ``write_video(result.frames, "out.mp4")``
writes a result (mp4, gif, npy or a folder of PNGs). Imports only numpy, tokenizers,
tqdm, safetensors, onnxruntime / TensorRT (on use) and the video writer: never torch.
"""

from .packs import PackError, read_pack_metadata
from .pipeline import NonFiniteError, VideoPipeline, VideoResult
from .video_output import VideoOutputError, write_video
from .video_registry import UnknownVideoError

__all__ = ["NonFiniteError", "PackError", "UnknownVideoError", "VideoOutputError", "VideoPipeline", "VideoResult",
           "read_pack_metadata", "write_video"]
