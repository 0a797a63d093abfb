"""Where base models come from: local diffusers folders, hub repo ids, single-file checkpoints.

``resolve_base_model(spec, revision=None) -> ResolvedModel(path, source)`` is the one
entry point; everything that names a base SD model (tav-tune ``--pretrained``,
tav-sample ``--pretrained``, the exporter) goes through it. ``spec.reads_as_path`` tells a
path from a repo id without loading anything (the commands' parsers use it).
"""

import importlib

# Loaded on first use (PEP 562): the parsers import .spec, and must not wait for torch.
_EXPORTS = {"KINDS": ".resolve", "ResolvedModel": ".resolve", "resolve_base_model": ".resolve"}

__all__ = ["KINDS", "ResolvedModel", "resolve_base_model"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
