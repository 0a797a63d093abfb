"""PyTorch side of Tune-A-Video: the inflated video UNet, one-shot tuning, inversion, reference sampling."""

from .video_unet import VideoUNet

__all__ = ["VideoUNet"]
