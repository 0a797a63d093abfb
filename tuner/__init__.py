"""PyTorch side of Tune-A-Video: the inflated video UNet, one-shot tuning, inversion, reference sampling."""

import importlib

# Loaded on first use (PEP 562): the tav-* commands live in this package, and their --help
# must not wait for torch and diffusers.
_EXPORTS = {"VideoUNet": ".model.video_unet", "TuneConfig": ".tuning.config", "tune": ".tuning.tune",
            "load_tuned": ".tuned_weights", "sample": ".sampler"}

__all__ = ["VideoUNet", "TuneConfig", "tune", "load_tuned", "sample"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
