"""``export_engine``: tuned weights -> ENGINE_DIR (docs/CONTRACTS.md), stage by stage, all or nothing.

Stages: load -> per graph (reference -> trace -> optimise -> check -> parity, graph_export.py)
-> assets -> TensorRT builds -> manifest -> check (read back as tav-run reads it). Everything is written
into a hidden sibling folder that is renamed into place last, so an interrupted or failed export
leaves no folder with a manifest.json (and no half-written one at all).
Cheap checks (arguments, output folder, TensorRT present) run before the
minutes of tracing, so bad invocations fail in a second.
"""

import logging
import os
import shutil
from importlib import metadata
from pathlib import Path

import torch
from transformers import CLIPTextConfig

from tav.runtime.atomic_files import write_json_atomic
from tav.runtime.backend_trt import PLUGIN_FILE
from tav.runtime.manifest_schema import GRAPHS, MANIFEST

from .base_engine import base_section, load_base_model, refittable_twin, tunable_values, with_tunable_inputs
from .engine_dir import check_as_the_runtime_does, check_output, make_staging, move_into_place, write_assets
from .errors import ExportError
from .finite_check import refuse_non_finite_model
from .graph_export import Exported, GraphOptions, export_graph
from .graphs import LATENT_CHANNELS, VAE_FACTOR, graph_spec
from .kv_gather_plugin import kv_gather_plugin
from .manifest import TIMING_CACHE, build_manifest
from .onnx_hygiene import EXTERNAL_DATA_THRESHOLD
from .stages import stage
from .stale_exports import hold_lock, leftovers
from .temporal_window import apply_window, check_window_early
from .tensorrt_build import EngineBuilder, TensorRTError, require_tensorrt

log = logging.getLogger("tav.export")

PRECISIONS = ("fp32", "fp16")
BACKENDS = ("onnx", "tensorrt", "all")
KV_GATHER_MODES = ("onnx", "plugin")
ATTENTION_MODES = ("fused", "standard")
MIN_OPSET = 17  # native LayerNormalization; SDPA exports as MatMul-Softmax-MatMul


def _max_opset() -> int:
    """Beyond this the TorchScript exporter fails after minutes of tracing, printing the whole Torch IR."""
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET

        return ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    except ImportError:  # a private module: if torch moves it, fall back to the value torch 2.x has had
        return 20


MAX_OPSET = _max_opset()


# Over 60 lines only by its signature (one public keyword a line) and docstring: the body is ~40 lines of phase calls.
def export_engine(
    weights,
    out_dir,
    frames=None,
    height=None,
    width=None,
    precision="fp32",
    backend="onnx",
    opset=17,
    kv_gather="onnx",
    *,
    attention="fused",
    optimization_level=3,
    overwrite=False,
    external_data_threshold=EXTERNAL_DATA_THRESHOLD,
    allow_base_mismatch=False,
    base=False,
    temporal_window=None,
    plugin_library=None,
) -> Path:
    """Export RUN_DIR (or an official Tune-A-Video output folder) ``weights`` to ENGINE_DIR ``out_dir``.

    ``frames``/``height``/``width`` default to the run's. ``backend``: "onnx" (graphs only),
    "tensorrt" or "all" (graphs and one plan per graph). ``attention``: "fused" (ONNX Runtime graphs
    with MultiHeadAttention nodes; TensorRT keeps standard ops) or "standard" (one standard-op graph
    for both). ``allow_base_mismatch``: export even when the SD folder is not the one the run was
    tuned on (its hash differs from run.json's). Returns ``out_dir``.
    ``base=True``: ``weights`` is a base SD model and the UNet takes the tuned tensors as inputs
    (refittable weights in TensorRT): a base ENGINE_DIR for per-video packs (export/base_engine.py).
    ``temporal_window``: frames each temporal attention sees, 1..frames (default: the run's; a base's: all).
    ``plugin_library``: the KVGather TensorRT plugin library for ``kv_gather="plugin"`` plans (default: cpp_ext's
    cached build; tav-export passes $TAV_TRT_PLUGIN).

    Phases: check -> load -> one graph at a time (graph_export.py) -> assets -> TensorRT plans ->
    manifest -> the runtime's own read and file check -> publish (rename into place). Cheap checks run
    before the minutes of tracing.
    """
    _check_choices(precision, backend, opset, kv_gather, attention, frames, height, width, optimization_level)
    check_window_early(temporal_window, frames if base else None)
    out_dir = _checked_out_dir(out_dir, overwrite)
    if base and kv_gather == "plugin":
        raise ExportError("--base with --kv-gather plugin is not supported yet "
                          "(the plugin's parity twin has no tunable inputs); export the base with --kv-gather onnx")
    if kv_gather == "plugin" and backend == "onnx":
        log.warning("--kv-gather plugin with --backend onnx: ONNX Runtime cannot run the KVGather node and no "
                    "TensorRT plan is built, so tav-run will refuse this ENGINE_DIR; add --backend tensorrt")
    trt = require_tensorrt() if backend != "onnx" else None
    plugin = kv_gather_plugin(trt, plugin_library) if kv_gather == "plugin" else None
    options = GraphOptions(precision, int(opset), attention, trt is not None, external_data_threshold)
    timings = {}
    staging = make_staging(out_dir)
    staging_lock = hold_lock(staging)  # tells stale_exports that this folder's export is alive
    try:
        with stage(timings, "load"):
            from tav.tuner.tuned_weights import load_tuned

            tuned = (load_base_model(weights, frames, height, width) if base
                     else load_tuned(weights, allow_base_mismatch=allow_base_mismatch))
            refuse_non_finite_model(tuned, weights)
            frames, height, width = _resolve_shape(tuned, weights, frames, height, width)
            window = apply_window(tuned, frames, temporal_window)
        exported = _export_graphs(tuned, (frames, height, width), staging, options, base, plugin, timings)
        with stage(timings, "assets"):
            write_assets(tuned, staging)
        if trt is not None:
            _build_plans(trt, exported, staging, out_dir if overwrite else None, optimization_level, plugin, timings)
        manifest = build_manifest(
            weights, tuned, exported, staging, precision=precision, kv_gather=kv_gather, attention=attention,
            opset=opset, tools=_tool_versions(trt), timings=timings, temporal_window=window,
        )
        write_json_atomic(staging / MANIFEST, manifest)
        with stage(timings, "check"):
            check_as_the_runtime_does(staging, out_dir)  # what tav-run would refuse is never published
        move_into_place(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(staging_lock)
    log.info("done: %s (%.1fs)", out_dir, sum(timings.values()))
    return out_dir


def _checked_out_dir(out_dir, overwrite: bool) -> Path:
    if str(out_dir).strip() in ("", "-"):
        raise ExportError(f"--out {str(out_dir)!r} is not a folder name; an ENGINE_DIR is a folder, give its path")
    out_dir = Path(out_dir).absolute()
    check_output(out_dir, overwrite)
    _warn_about_leftovers(out_dir)
    return out_dir


def _export_graphs(tuned, shape: tuple, staging: Path, options: GraphOptions, base: bool, plugin,
                   timings: dict) -> Exported:
    """Each graph in turn, its model loaded just before and released once traced (graph_export.py).

    The UNet goes first, while nothing else is loaded; the text encoder and VAE are loaded after it is gone.
    """
    from tav.tuner.model.sd_folder import load_text_encoder, load_vae

    # Trace and run the reference on the GPU when there is one (minutes faster at real sizes);
    # ONNX graphs do not depend on the device they were traced on.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    text_config = CLIPTextConfig.from_pretrained(Path(tuned.base_dir) / "text_encoder")
    exported = Exported(shape, options.precision, text_config.hidden_size)
    for name in ("unet", "text_encoder", "vae_decoder"):
        if name == "unet":
            model, tuned.unet = tuned.unet, None  # the spec owns the UNet now: freeing it frees its memory
        elif name == "text_encoder":
            model = load_text_encoder(tuned.base_dir)
        else:
            model = load_vae(tuned.base_dir)
            exported.vae_scaling_factor = model.config.scaling_factor
            model.encoder = None  # the decoder graph never runs it
        spec = graph_spec(name, model.to(device).eval(), *shape, options.precision, text_config.hidden_size,
                          text_config.vocab_size)
        del model
        if base and name == "unet":
            spec = with_tunable_inputs(spec, options.precision)
            exported.base = base_section(spec, *shape, options.precision, tuned.meta["pretrained_model_source"],
                                         spec.module.unet.temporal_window)
            exported.tunable_values = tunable_values(spec) if options.standard_twin else None
        plugin_context = plugin.context if plugin and name == "unet" else None
        exported.graphs[name] = export_graph(spec, staging, options, timings, plugin_context)
        exported.specs[name] = spec
    shutil.rmtree(staging / ".trace", ignore_errors=True)  # each graph's scratch is gone; now its parent too
    if device == "cuda":
        torch.cuda.empty_cache()  # TensorRT's builder cannot use torch's cache, and picks worse tactics when short
    return exported


def _build_plans(trt, exported: Exported, staging: Path, old_dir, optimization_level: int, plugin,
                 timings: dict) -> None:
    """One TensorRT plan per graph, from the ONNX files alone (the torch models are gone by now)."""
    builder = EngineBuilder(trt, optimization_level, old_dir / TIMING_CACHE if old_dir else None)
    for name in GRAPHS:
        spec, fields = exported.specs[name], exported.graphs[name]
        plugins = [plugin.library] if plugin and name == "unet" else []
        with stage(timings, "build", name):
            source = fields.get("tensorrt_source")
            onnx_path = source["path"] if source else staging / f"{name}.onnx"
            refittable = ()
            if exported.base and name == "unet":  # built from a twin whose tunable inputs are weights again
                onnx_path, refittable = refittable_twin(onnx_path, exported.tunable_values)
            fields["tensorrt"] = builder.build(spec, onnx_path, staging / f"{name}.plan", exported.precision,
                                               plugins, refittable)
            if refittable:
                onnx_path.unlink()
    builder.save_timing_cache(staging / TIMING_CACHE)
    if plugin:
        # Ship the plugin with the plans (hashed under "files"): a service needs only the folder.
        shutil.copy2(plugin.library, staging / PLUGIN_FILE)
        exported.graphs["unet"]["tensorrt"]["plugins"] = [PLUGIN_FILE]


def _warn_about_leftovers(out_dir: Path):
    stale = [path.name for path, state in leftovers(out_dir) if state != "in use"]
    if stale:
        log.warning("%s next to %s %s left by killed exports (%s); "
                    "`tav-export --out %s --clean-stale` removes the stale ones",
                    _count(len(stale), "hidden folder"), out_dir, "was" if len(stale) == 1 else "were",
                    ", ".join(stale[:3]), out_dir)


def _check_choices(precision, backend, opset, kv_gather, attention, frames, height, width, optimization_level):
    choices = (("precision", precision, PRECISIONS), ("backend", backend, BACKENDS),
               ("kv-gather", kv_gather, KV_GATHER_MODES), ("attention", attention, ATTENTION_MODES))
    for name, value, allowed in choices:
        if value not in allowed:
            raise ExportError(f"--{name} {value!r} is not one of {', '.join(allowed)}")
    if int(opset) < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: opset {MIN_OPSET}+ is needed for native LayerNormalization")
    if int(opset) > MAX_OPSET:
        raise ExportError(f"--opset {opset} is newer than torch's TorchScript ONNX exporter supports "
                          f"(at most {MAX_OPSET})")
    if frames is not None and int(frames) < 1:
        raise ExportError(f"--frames {frames} must be at least 1")
    for name, value in (("height", height), ("width", width)):
        if value is not None and (int(value) <= 0 or int(value) % VAE_FACTOR):
            raise ExportError(f"--{name} {value} must be a positive multiple of {VAE_FACTOR} (the VAE's down-sampling)")
    if not 0 <= int(optimization_level) <= 5:
        raise ExportError(f"--optimization-level {optimization_level} must be between 0 and 5")


def _resolve_shape(tuned, weights, frames, height, width):
    """Requested or the run's frames/size; they must fit the inverted latents the runtime starts from."""
    frames, height, width = (int(v) if v is not None else d
                             for v, d in ((frames, tuned.frames), (height, tuned.height), (width, tuned.width)))
    if height % VAE_FACTOR or width % VAE_FACTOR:
        raise ExportError(f"the run's size {height}x{width} is not a multiple of {VAE_FACTOR}; "
                          "pass --height and --width")
    latents = tuned.inverted_latents
    if latents is not None:
        if latents.ndim != 5 or tuple(latents.shape[:2]) != (1, LATENT_CHANNELS):
            raise ExportError(
                f"the inverted latents in {weights} have shape {list(latents.shape)}, "
                f"not [1, {LATENT_CHANNELS}, F, H/8, W/8] "
                "(the runtime would refuse the ENGINE_DIR); re-run tav-tune to invert the clip again"
            )
        f, h, w = latents.shape[2:]
        if f != frames:
            raise ExportError(
                f"--frames {frames} does not match the {f} frames of the inverted latents in {weights}; "
                f"export with --frames {f}, or re-tune (tav-tune) with {frames} frames"
            )
        if (h * VAE_FACTOR, w * VAE_FACTOR) != (height, width):
            raise ExportError(
                f"--height/--width {height}x{width} do not match the inverted latents in {weights} "
                f"({h * VAE_FACTOR}x{w * VAE_FACTOR}); export at that size, or re-tune at {height}x{width}"
            )
    return frames, height, width


def _tool_versions(trt) -> dict:
    import onnx
    import onnxruntime

    versions = {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tensorrt": None if trt is None else {"flavour": trt.flavour, "version": trt.version,
                                              "timing_cache": trt.has_timing_cache},
    }
    for package in ("polygraphy", "onnx-graphsurgeon", "diffusers", "transformers", "tav-runtime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


__all__ = ["export_engine", "ExportError", "TensorRTError"]
