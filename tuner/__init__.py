"""PyTorch side of Tune-A-Video: the inflated video UNet, one-shot tuning, inversion, reference sampling."""

import importlib
import sys
import types

# Loaded on first use (PEP 562): the tav-* commands live in this package, and their --help
# must not wait for torch and diffusers.
_EXPORTS = {"VideoUNet": ".video_unet", "TuneConfig": ".tune_config", "tune": ".tune", "load_tuned": ".tuned_weights",
            "sample": ".sampler"}

__all__ = ["VideoUNet", "TuneConfig", "tune", "load_tuned", "sample"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


class _Package(types.ModuleType):
    """``tav.tuner.tune`` stays the function: importing the submodule of that name must not replace it here
    (as an eager ``from .tune import tune`` guaranteed before the exports were lazy)."""

    def __setattr__(self, name, value):
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
