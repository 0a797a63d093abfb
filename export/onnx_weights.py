"""Weights that stay on disk: graphs whose initializers point into one data file, worked on as structure.

An SD-1.5 UNet is 3.6 GB of fp32 weights and ~2 MB of graph. Every graph pass
of the exporter (folding, attention fusion, the TensorRT twin, fp32 norms) reads
the structure and a few small constants, never the weights. So the traced graph
keeps its weights in ``<name>.onnx.data`` from the moment it is written, and the
passes work on ``onnx.load(..., load_external_data=False)``: onnx-graphsurgeon
wraps such initializers in LazyValues and writes the same TensorProto back
(pointer and all) as long as nothing reads their values. Small tensors (scalars,
shape targets: under ``INLINE_LIMIT``) and every 1-D tensor (norm scales, biases:
a few MB in all) are kept inline, so the passes that do read values find them in
the graph file.
"""

import os
from pathlib import Path

import numpy as np
import onnx
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

# ONNX Runtime maps an external data file instead of reading it when offsets are page-aligned.
ALIGN = 4096
INLINE_LIMIT = 1024  # bytes


def data_file_of(path: Path) -> Path:
    return path.with_name(path.name + ".data")


def attach_weights(model: onnx.ModelProto, weights: dict, path: Path) -> int:
    """Turn the graph inputs named in ``weights`` (name -> torch tensor) into initializers: small ones inline,
    the rest written one at a time to ``path``'s data file. Pops ``weights`` as it goes; returns bytes written."""
    as_input = {value.name for value in model.graph.input}
    keep = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    data = data_file_of(path)
    offset = 0
    with open(data, "wb") as fh:
        for name in list(weights):
            tensor = weights.pop(name)
            if name not in as_input:  # dropped by the exporter's dead-code pass
                continue
            array = np.ascontiguousarray(tensor.detach().cpu().numpy())
            proto = onnx.TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype),
                                     dims=array.shape)
            if array.nbytes < INLINE_LIMIT or array.ndim <= 1:
                proto.raw_data = array.tobytes()
            else:
                offset += -offset % ALIGN
                fh.seek(offset)
                fh.write(memoryview(array.reshape(-1)).cast("B"))
                _point_into(proto, data.name, offset, array.nbytes)
                offset += array.nbytes
            model.graph.initializer.append(proto)
            del tensor, array
    if offset == 0:
        data.unlink()
    return offset


def _point_into(proto: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Mark ``proto`` as stored in ``location`` (onnx's set_external_data wants the bytes in hand first)."""
    proto.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        proto.external_data.add(key=key, value=value)


def load_structure(path: Path) -> onnx.ModelProto:
    """The graph with its external weights left on disk (their TensorProtos carry only the file pointer)."""
    return onnx.load(str(path), load_external_data=False)


def external_tensors(model: onnx.ModelProto) -> list:
    return [t for t in _all_tensors(model) if uses_external_data(t)]


def external_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for tensor in external_tensors(model):
        total += int(next(e.value for e in tensor.external_data if e.key == "length"))
    return total


def hide_weights(model: onnx.ModelProto) -> dict:
    """Turn the external initializers into graph inputs of the same name, type and shape; return them by name.

    Constant folding (polygraphy, onnx-graphsurgeon) would otherwise try to evaluate nodes fed only by
    weights (a position-embedding Gather, say) by handing ONNX Runtime a model built from bytes, whose
    external data it then looks for in the current directory. As inputs, the weights are not constants:
    those nodes stay as they are (ONNX Runtime folds them when it loads the graph) and nothing is read.
    """
    hidden = {t.name: t for t in model.graph.initializer if uses_external_data(t)}
    kept = [t for t in model.graph.initializer if t.name not in hidden]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                             for t in hidden.values())
    return hidden


def restore_weights(model: onnx.ModelProto, hidden: dict) -> onnx.ModelProto:
    """Undo ``hide_weights``: the inputs become the same (unread) initializers again, those still used."""
    used = {name for node in model.graph.node for name in node.input}
    inputs = [value for value in model.graph.input if value.name not in hidden]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.initializer.extend(tensor for name, tensor in hidden.items() if name in used)
    return model


def save_graph(model: onnx.ModelProto, path: Path, weights_dir: Path, inline: bool, data: Path | None = None) -> list:
    """Write ``model`` to ``path``, its external weights read from the traced data file in ``weights_dir``.

    ``inline``: the weights go into the graph file (small graphs: one self-contained file; this loads
    them, so only below the caller's threshold). Otherwise they stay in a data file next to ``path``:
    ``data`` (default ``<path>.data``), which the traced file is moved to if it is not there yet. A
    fused graph and its TensorRT twin name the same ``data``: one copy on disk, never one in memory.
    (Not hard links: onnx's checker refuses data files with several links.) Returns the data files used.
    """
    tensors = external_tensors(model)
    if inline or not tensors:
        load_external_data_for_model(model, str(weights_dir))
        onnx.save_model(model, str(path))
        return []
    sources = {location_of(t) for t in tensors}
    if len(sources) != 1:
        raise ValueError(f"{path.name}: weights spread over {sorted(sources)}; expected one data file")
    target = Path(data) if data is not None else data_file_of(path)
    if target.parent != path.parent:
        raise ValueError(f"{path.name}: its data file {target} must sit in the same folder")
    if not target.exists():
        # A move within the staging ENGINE_DIR (published whole later by atomic_files), not a publish itself.
        os.replace(Path(weights_dir) / sources.pop(), target)
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = target.name
    onnx.save_model(model, str(path))
    return [target]


def location_of(tensor: onnx.TensorProto) -> str:
    return next(e.value for e in tensor.external_data if e.key == "location")


def _all_tensors(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
