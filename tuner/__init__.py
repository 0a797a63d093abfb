"""PyTorch side of Tune-A-Video: the inflated video UNet, one-shot tuning, inversion, reference sampling."""

from .sampler import sample
from .tune import tune
from .tune_config import TuneConfig
from .tuned_weights import load_tuned
from .video_unet import VideoUNet

__all__ = ["VideoUNet", "TuneConfig", "tune", "load_tuned", "sample"]
