"""``export_engine``: tuned weights -> ENGINE_DIR (docs/CONTRACTS.md), stage by stage, all or nothing.

Stages: load -> per graph (trace -> optimise -> check -> parity) -> assets ->
TensorRT builds -> manifest. Everything is written into a hidden sibling
folder that is renamed into place last, so an interrupted or failed export
leaves no folder with a manifest.json (and no half-written one at all).
Cheap checks (arguments, output folder, TensorRT present) run before the
minutes of tracing, so bad invocations fail in a second.
"""

import logging
import os
import shutil
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import torch

from tav.runtime.backend_trt import PLUGIN_FILE

from .attention_fusion import MHA_DOMAIN, MHA_OP, fuse_for_onnxruntime
from .base_engine import (
    base_section,
    check_no_transpose,
    load_base_model,
    refittable_twin,
    tunable_values,
    with_tunable_inputs,
)
from .engine_dir import check_output, make_staging, move_into_place, write_assets
from .errors import ExportError
from .graphs import BATCH, LATENT_CHANNELS, TEXT_MAX_LENGTH, VAE_FACTOR, graph_specs
from .kv_gather_plugin import kv_gather_plugin, plugin_parity
from .manifest import MANIFEST, SCHEMA_VERSION, TIMING_CACHE, graph_entry, other_files, write_json_atomic
from .onnx_export import trace_to_onnx
from .onnx_hygiene import EXTERNAL_DATA_THRESHOLD, check_graph, optimise, save_onnx
from .parity import check_parity, ort_session
from .stale_exports import hold_lock, leftovers
from .tensorrt_build import EngineBuilder, TensorRTError, require_tensorrt

log = logging.getLogger("tav.export")

PRECISIONS = ("fp32", "fp16")
BACKENDS = ("onnx", "tensorrt", "all")
KV_GATHER_MODES = ("onnx", "plugin")
ATTENTION_MODES = ("fused", "standard")
TENSORRT_SOURCE_SUFFIX = ".trt.onnx"  # the standard-op twin of a fused graph, which TensorRT plans are built from
MIN_OPSET = 17  # native LayerNormalization; SDPA exports as MatMul-Softmax-MatMul


def _max_opset() -> int:
    """Beyond this the TorchScript exporter fails after minutes of tracing, printing the whole Torch IR."""
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET

        return ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    except ImportError:  # a private module: if torch moves it, fall back to the value torch 2.x has had
        return 20


MAX_OPSET = _max_opset()


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
) -> Path:
    """Export RUN_DIR (or an official Tune-A-Video output folder) ``weights`` to ENGINE_DIR ``out_dir``.

    ``frames``/``height``/``width`` default to the run's. ``backend``: "onnx" (graphs only),
    "tensorrt" or "all" (graphs and one plan per graph). ``attention``: "fused" (ONNX Runtime graphs
    with MultiHeadAttention nodes; TensorRT keeps standard ops) or "standard" (one standard-op graph
    for both). ``allow_base_mismatch``: export even when the SD folder is not the one the run was
    tuned on (its hash differs from run.json's). Returns ``out_dir``.
    ``base=True``: ``weights`` is a base SD model and the UNet takes the tuned tensors as inputs
    (refittable weights in TensorRT): a base ENGINE_DIR for per-video packs (export/base_engine.py).
    """
    _check_choices(precision, backend, opset, kv_gather, attention, frames, height, width, optimization_level)
    if str(out_dir).strip() in ("", "-"):
        raise ExportError(f"--out {str(out_dir)!r} is not a folder name; an ENGINE_DIR is a folder, give its path")
    out_dir = Path(out_dir).absolute()
    check_output(out_dir, overwrite)
    _warn_about_leftovers(out_dir)
    if base and kv_gather == "plugin":
        raise ExportError("--base with --kv-gather plugin is not supported yet (the plugin's parity twin has no tunable "
                          "inputs); export the base with --kv-gather onnx")
    if kv_gather == "plugin" and backend == "onnx":
        log.warning("--kv-gather plugin with --backend onnx: ONNX Runtime cannot run the KVGather node and no "
                    "TensorRT plan is built, so tav-run will refuse this ENGINE_DIR; add --backend tensorrt")
    trt = require_tensorrt() if backend != "onnx" else None
    plugin = kv_gather_plugin(trt) if kv_gather == "plugin" else None
    timings = {}
    staging = make_staging(out_dir)
    staging_lock = hold_lock(staging)  # tells stale_exports that this folder's export is alive
    try:
        with _stage(timings, "load"):
            from tav.tuner.model.sd_folder import folder_hash, load_text_encoder, load_vae
            from tav.tuner.model.tuned_weights import load_tuned

            tuned = load_base_model(weights, frames, height, width) if base else load_tuned(weights, allow_base_mismatch=allow_base_mismatch)
            frames, height, width = _resolve_shape(tuned, weights, frames, height, width)
            text_encoder, vae = load_text_encoder(tuned.base_dir), load_vae(tuned.base_dir)
            # Trace and run the reference on the GPU when there is one (minutes faster at real sizes);
            # ONNX graphs do not depend on the device they were traced on.
            device = "cuda" if torch.cuda.is_available() else "cpu"
            unet, text_encoder, vae = (m.to(device).eval() for m in (tuned.unet, text_encoder, vae))
            specs = graph_specs(unet, text_encoder, vae, frames, height, width, precision)
            if base:
                specs = with_tunable_inputs(specs, precision)
        graphs = {}
        for spec in specs:
            plugin_context = plugin.context if plugin and spec.name == "unet" else None
            graphs[spec.name] = _export_graph(
                spec, staging, precision, opset, plugin_context, external_data_threshold, timings, attention, trt is not None
            )
        with _stage(timings, "assets"):
            write_assets(tuned, staging)
        if trt is not None:
            # The builds read only the ONNX files: give the GPU memory torch holds to TensorRT's builder,
            # which cannot use torch's cache and picks worse tactics (or fails) when short of memory.
            for model in (unet, text_encoder, vae):
                model.to("cpu")
            if device == "cuda":
                torch.cuda.empty_cache()
            old_cache = out_dir / TIMING_CACHE if overwrite else None
            builder = EngineBuilder(trt, optimization_level, old_cache)
            for spec in specs:
                plugins = [plugin.library] if plugin and spec.name == "unet" else []
                with _stage(timings, "build", spec.name):
                    source = graphs[spec.name].get("tensorrt_source")
                    onnx_path = source["path"] if source else staging / f"{spec.name}.onnx"
                    plan_path = staging / f"{spec.name}.plan"
                    refittable = ()
                    if base and spec.name == "unet":  # built from a twin whose tunable inputs are weights again
                        onnx_path, refittable = refittable_twin(onnx_path, tunable_values(spec), staging / ".trace" / "refit")
                    graphs[spec.name]["tensorrt"] = builder.build(spec, onnx_path, plan_path, precision, plugins, refittable)
                    shutil.rmtree(staging / ".trace", ignore_errors=True)
            builder.save_timing_cache(staging / TIMING_CACHE)
            if plugin:
                # Ship the plugin with the plans (hashed under "files"): a service needs only the folder.
                shutil.copy2(plugin.library, staging / PLUGIN_FILE)
                graphs["unet"]["tensorrt"]["plugins"] = [PLUGIN_FILE]
        entries = {
            spec.name: graph_entry(spec, staging / f"{spec.name}.onnx", root=staging, **graphs[spec.name]) for spec in specs
        }
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "frames": frames,
            "height": height,
            "width": width,
            "batch": BATCH,
            "precision": precision,
            "text_max_length": TEXT_MAX_LENGTH,
            "text_dim": text_encoder.config.hidden_size,
            "latent_channels": LATENT_CHANNELS,
            "vae_scaling_factor": vae.config.scaling_factor,
            "source": {
                "weights": str(Path(weights).absolute()),
                "weights_hash": tuned.weights_hash,
                "base_model": str(Path(tuned.base_dir).absolute()),
                "base_model_hash": tuned.base_model_hash or folder_hash(tuned.base_dir),
                "base_model_source": tuned.meta.get("pretrained_model_source"),  # hub commit / file sha256, if known
            },
            "tools": _tool_versions(trt),
            "kv_gather": kv_gather,
            "attention": attention,
            "opset": opset,
            "graphs": entries,
            **({"base": base_section(specs, frames, height, width, precision, tuned.meta["pretrained_model_source"])} if base else {}),
            "files": other_files(staging, entries),
            "export_seconds": timings,
        }
        write_json_atomic(staging / MANIFEST, manifest)
        move_into_place(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        os.close(staging_lock)
    log.info("done: %s (%.1fs)", out_dir, sum(timings.values()))
    return out_dir


def _warn_about_leftovers(out_dir: Path):
    stale = [path.name for path, state in leftovers(out_dir) if state != "in use"]
    if stale:
        log.warning("%d hidden folder(s) next to %s were left by killed exports (%s); `tav-export --out %s --clean-stale` "
                    "removes the stale ones", len(stale), out_dir, ", ".join(stale[:3]), out_dir)


def _export_graph(spec, staging, precision, opset, plugin_context, threshold, timings, attention, standard_twin) -> dict:
    """Trace, clean, check, save and parity-check one graph; return its manifest fields.

    ``<name>.onnx`` is the graph ONNX Runtime loads: with ``attention="fused"`` every attention of a
    ``spec.fused_attention`` graph is one com.microsoft.MultiHeadAttention node. TensorRT's parser
    does not know that contrib op, so when plans are wanted (``standard_twin``) and the graphs differ,
    the standard-op graph is kept too as ``<name>.trt.onnx``: the plans' source, parity-checked as well.
    """
    work = staging / ".trace" / spec.name
    with _stage(timings, "trace", spec.name):
        model = trace_to_onnx(spec, precision, opset, work, plugin_context() if plugin_context else None)
    with _stage(timings, "optimise", spec.name):
        model = optimise(model, precision)
        check_graph(model, spec)
        check_no_transpose(model, spec)
        fused = fuse_for_onnxruntime(model, spec) if attention == "fused" and spec.fused_attention and plugin_context is None else None
    fields = {"attention": {"fused": fused.fused if fused else 0, "op": f"{MHA_DOMAIN}.{MHA_OP}" if fused else None}, "tensorrt": None}
    with _stage(timings, "check", spec.name):
        path = staging / f"{spec.name}.onnx"
        fields["external_files"] = save_onnx(fused.model if fused else model, path, threshold, full_check=plugin_context is None)
        if fused and standard_twin:
            twin = staging / f"{spec.name}{TENSORRT_SOURCE_SUFFIX}"
            fields["tensorrt_source"] = {"path": twin, "external_files": save_onnx(model, twin, threshold)}
        del model, fused
    with _stage(timings, "parity", spec.name):
        if plugin_context is None:
            fields["parity"] = check_parity(spec, ort_session(path), precision)
            if "tensorrt_source" in fields:
                fields["tensorrt_source"]["parity"] = check_parity(spec, ort_session(fields["tensorrt_source"]["path"]), precision)
        else:
            fields.update(plugin_parity(spec, path, work, precision, opset, threshold))
    shutil.rmtree(staging / ".trace", ignore_errors=True)
    parity = fields["parity"] or fields["parity_standard_op_twin"]
    log.info(
        "%s: ORT vs PyTorch fp32%s: rel_l2 %.2g, max_abs %.2g (tolerance %g)%s", spec.name,
        "" if fields["parity"] else " (standard-op twin)", parity["rel_l2_err"], parity["max_abs_err"], parity["tolerance_rel_l2"],
        f"; {fields['attention']['fused']} attention layers fused" if fields["attention"]["fused"] else "",
    )
    return fields


def _check_choices(precision, backend, opset, kv_gather, attention, frames, height, width, optimization_level):
    choices = (("precision", precision, PRECISIONS), ("backend", backend, BACKENDS), ("kv-gather", kv_gather, KV_GATHER_MODES),
               ("attention", attention, ATTENTION_MODES))
    for name, value, allowed in choices:
        if value not in allowed:
            raise ExportError(f"--{name} {value!r} is not one of {', '.join(allowed)}")
    if int(opset) < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: opset {MIN_OPSET}+ is needed for native LayerNormalization")
    if int(opset) > MAX_OPSET:
        raise ExportError(f"--opset {opset} is newer than torch's TorchScript ONNX exporter supports (at most {MAX_OPSET})")
    if frames is not None and int(frames) < 1:
        raise ExportError(f"--frames {frames} must be at least 1")
    for name, value in (("height", height), ("width", width)):
        if value is not None and (int(value) <= 0 or int(value) % VAE_FACTOR):
            raise ExportError(f"--{name} {value} must be a positive multiple of {VAE_FACTOR} (the VAE's down-sampling)")
    if not 0 <= int(optimization_level) <= 5:
        raise ExportError(f"--optimization-level {optimization_level} must be between 0 and 5")


def _resolve_shape(tuned, weights, frames, height, width):
    """Requested or the run's frames/size; they must fit the inverted latents the runtime starts from."""
    frames, height, width = (int(v) if v is not None else d for v, d in ((frames, tuned.frames), (height, tuned.height), (width, tuned.width)))
    if height % VAE_FACTOR or width % VAE_FACTOR:
        raise ExportError(f"the run's size {height}x{width} is not a multiple of {VAE_FACTOR}; pass --height and --width")
    latents = tuned.inverted_latents
    if latents is not None:
        if latents.ndim != 5 or tuple(latents.shape[:2]) != (1, LATENT_CHANNELS):
            raise ExportError(
                f"the inverted latents in {weights} have shape {list(latents.shape)}, not [1, {LATENT_CHANNELS}, F, H/8, W/8] "
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
        "tensorrt": None if trt is None else {"flavour": trt.flavour, "version": trt.version, "timing_cache": trt.has_timing_cache},
    }
    for package in ("polygraphy", "onnx-graphsurgeon", "diffusers", "transformers", "tav-runtime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@contextmanager
def _stage(timings: dict, stage: str, graph: str | None = None):
    """Time a stage and log one line when it ends (the CLI's progress)."""
    key = f"{stage}:{graph}" if graph else stage
    start = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - start, 3)
    log.info("%-9s %-13s %6.1fs", stage, graph or "", timings[key])


__all__ = ["export_engine", "ExportError", "TensorRTError"]
