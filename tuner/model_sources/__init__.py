"""Where base models come from: local diffusers folders, hub repo ids, single-file checkpoints.

``resolve_base_model(spec, revision=None) -> ResolvedModel(path, source)`` is the one
entry point; everything that names a base SD model (tav-tune ``--pretrained``,
tav-sample ``--pretrained``, the exporter) goes through it.
"""

from .resolve import KINDS, ResolvedModel, resolve_base_model

__all__ = ["KINDS", "ResolvedModel", "resolve_base_model"]
