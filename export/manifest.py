"""manifest.json of an ENGINE_DIR (schema_version 2, docs/CONTRACTS.md): what each file is, and its hash.

Schema 2 (issue 10): a graph's ``onnx`` is the graph ONNX Runtime loads, with fused attention
(``attention.fused`` MultiHeadAttention nodes); when TensorRT plans were built from a different,
standard-op graph, ``tensorrt.onnx`` pins that one and its own parity.

Written through the runtime's schema (tav.runtime.manifest_schema: version, names, TensorSpec), and read
back with the runtime's own reader before the ENGINE_DIR is published (engine_dir.check_as_the_runtime_does).
"""

from pathlib import Path

from tav.runtime.manifest_schema import GRAPHS, MANIFEST, SCHEMA_VERSION
from tav.tuner.model.sd_folder import file_sha256, folder_hash

from .graphs import BATCH, LATENT_CHANNELS, TEXT_MAX_LENGTH

TIMING_CACHE = "timing.cache"  # TensorRT's, reused by the next --overwrite export


def build_manifest(weights, tuned, exported, root: Path, *, precision, kv_gather, attention, opset, tools, timings,
                   temporal_window) -> dict:
    """The whole manifest of the ENGINE_DIR being written in ``root``: call it last, every file hashed is final."""
    frames, height, width = exported.shape
    entries = {name: graph_entry(exported.specs[name], root / f"{name}.onnx", root=root, **exported.graphs[name])
               for name in GRAPHS}
    return {
        "schema_version": SCHEMA_VERSION,
        "frames": frames,
        "temporal_window": temporal_window,
        "decode_batch": exported.specs["vae_decoder"].inputs[0].shape[0],
        "height": height,
        "width": width,
        "batch": BATCH,
        "precision": precision,
        "text_max_length": TEXT_MAX_LENGTH,
        "text_dim": exported.text_dim,
        "latent_channels": LATENT_CHANNELS,
        "vae_scaling_factor": exported.vae_scaling_factor,
        "source": {
            "weights": str(Path(weights).absolute()),
            "weights_hash": tuned.weights_hash,
            "base_model": str(Path(tuned.base_dir).absolute()),
            "base_model_hash": tuned.base_model_hash or folder_hash(tuned.base_dir),
            "base_model_source": tuned.meta.get("pretrained_model_source"),  # hub commit / file sha256, if known
        },
        "tools": tools,
        "kv_gather": kv_gather,
        "attention": attention,
        "opset": opset,
        "graphs": entries,
        **({"base": exported.base} if exported.base else {}),
        "files": other_files(root, entries),
        "export_seconds": timings,
    }


def graph_entry(spec, onnx_path: Path, external_files: list, parity, tensorrt, root: Path, tensorrt_source=None,
                **extra) -> dict:
    entry = {
        **onnx_file(onnx_path, external_files),
        "inputs": [t.as_json() for t in spec.inputs],
        "outputs": [t.as_json() for t in spec.outputs],
        "parity": parity,
        "tensorrt": None if tensorrt is None else {**tensorrt, "sha256": file_sha256(root / tensorrt["plan"])},
    }
    if tensorrt is not None and tensorrt_source is not None:
        entry["tensorrt"]["onnx"] = {**onnx_file(tensorrt_source["path"], tensorrt_source["external_files"]),
                                     "parity": tensorrt_source["parity"]}
    entry.update(extra)
    return entry


def onnx_file(path: Path, external_files: list) -> dict:
    return {
        "onnx": path.name,
        "sha256": file_sha256(path),
        "external_data": [{"file": f.name, "sha256": file_sha256(f)} for f in external_files],
    }


def other_files(root: Path, graphs: dict) -> dict:
    """sha256 of every file that no graph entry names (tokenizer, scheduler config, latents, timing cache)."""
    named = {MANIFEST}
    for entry in graphs.values():
        for graph_file in (entry, (entry["tensorrt"] or {}).get("onnx")):
            if graph_file:
                named.add(graph_file["onnx"])
                named.update(f["file"] for f in graph_file["external_data"])
        if entry["tensorrt"]:
            named.add(entry["tensorrt"]["plan"])
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.relative_to(root).as_posix() not in named)
    return {f.relative_to(root).as_posix(): file_sha256(f) for f in files}
