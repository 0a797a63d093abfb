"""PyTorch side of Tune-A-Video: the inflated video UNet, one-shot tuning, inversion, reference sampling."""

from tav.tuner.model.tuned_weights import load_tuned
from tav.tuner.model.video_unet import VideoUNet
from tav.tuner.tuning.config import TuneConfig
from tav.tuner.tuning.tune import tune

from .sampler import sample

__all__ = ["VideoUNet", "TuneConfig", "tune", "load_tuned", "sample"]
