"""One graph of an ENGINE_DIR, start to finish, with one copy of its weights alive at a time.

reference -> trace -> (torch module freed) -> optimise / fuse on the structure -> save -> parity.

Where the weights are at each stage (issue 17):
- reference: the fp32 torch module's output on seeded inputs is all that parity needs from PyTorch
  later. For an fp32 graph it is the trace's own run of the module (one forward pass, not two: at
  SD-1.5 size minutes on a CPU). An fp16 graph casts the module in place first (tensor by tensor:
  never an fp32 and an fp16 copy side by side) and computes its fp32 reference widened, one layer's
  weights in fp32 at a time (widened_module.py).
- trace: the exporter writes the weights straight from the module into the data file
  (onnx_export.py); then the module is released.
- optimise, fuse, save: graph structure only; the weights stay in the data file, which the
  saved graphs (ONNX Runtime's and the TensorRT twin) link to rather than copy.
- parity: ONNX Runtime loads the saved graph, alone in memory.
So the peak is the larger of (module + activations) and (ONNX Runtime session), not their sum.
"""

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tav.runtime.host_memory import release_freed_memory

from .attention_fusion import MHA_DOMAIN, MHA_OP, fuse_for_onnxruntime
from .base_engine import check_no_transpose
from .kv_gather_plugin import plugin_parity
from .onnx_export import trace_to_onnx
from .onnx_hygiene import check_graph, optimise, save_onnx
from .onnx_weights import load_structure
from .parity import check_parity, graph_feeds, ort_session, reference
from .stages import stage

log = logging.getLogger("tav.export")

TENSORRT_SOURCE_SUFFIX = ".trt.onnx"  # the standard-op twin of a fused graph, which TensorRT plans are built from


@dataclass
class Exported:
    """What the graph phase hands to the plan builds and the manifest: the torch models are gone by then."""

    shape: tuple  # frames, height, width
    precision: str
    text_dim: int
    vae_scaling_factor: float | None = None
    graphs: dict = field(default_factory=dict)  # name -> manifest fields (export_graph)
    specs: dict = field(default_factory=dict)  # name -> GraphSpec (I/O; module released)
    base: dict | None = None  # manifest "base" section of a base ENGINE_DIR
    tunable_values: dict | None = None  # the base model's tunable tensors, for a refittable TensorRT plan


@dataclass(frozen=True)
class GraphOptions:
    precision: str
    opset: int
    attention: str  # "fused" | "standard"
    standard_twin: bool  # TensorRT plans wanted: keep the standard-op graph too when it differs
    external_data_threshold: int


def export_graph(spec, staging: Path, options: GraphOptions, timings: dict, plugin_context=None) -> dict:
    """Write ``<name>.onnx`` (and its twin) into ``staging``; return the graph's manifest fields.

    Takes ownership of ``spec.module``: it is released once traced (with ``plugin_context``, the
    KVGather plugin's exporter hook ``plugin_context(module)``, once its standard-op twin is traced too), so
    the caller must hold no other reference to the model if its memory is to come back.
    """
    work = staging / ".trace" / spec.name
    traced = work / f"{spec.name}.onnx"
    if options.precision == "fp16":
        spec.module.half()  # in place: tensor by tensor, so fp32 and fp16 never coexist whole
    if options.precision == "fp16" or plugin_context is not None:
        with stage(timings, "reference", spec.name):
            feeds, expected = reference(spec)
    else:  # fp32: the trace runs the fp32 module on the same inputs; its output is the reference
        feeds, expected = graph_feeds(spec), None
    with stage(timings, "trace", spec.name):
        output = trace_to_onnx(spec, feeds, options.opset, traced,
                               plugin_context(spec.module) if plugin_context else None)
        expected = output if expected is None else expected
        if plugin_context is None:
            release_module(spec)
    with stage(timings, "optimise", spec.name):
        model = optimise(load_structure(traced), options.precision)
        check_graph(model, spec)
        check_no_transpose(model, spec)
        fusable = options.attention == "fused" and spec.fused_attention and plugin_context is None
        fused = fuse_for_onnxruntime(model, spec) if fusable else None
    fields = {"attention": {"fused": fused.fused if fused else 0, "op": f"{MHA_DOMAIN}.{MHA_OP}" if fused else None},
              "tensorrt": None}
    path = staging / f"{spec.name}.onnx"
    with stage(timings, "check", spec.name):
        fields["external_files"] = save_onnx(fused.model if fused else model, path, work,
                                             options.external_data_threshold, full_check=plugin_context is None)
        if fused and options.standard_twin:
            twin = staging / f"{spec.name}{TENSORRT_SOURCE_SUFFIX}"
            # the same weights: one data file
            shared = fields["external_files"][0] if fields["external_files"] else None
            twin_files = save_onnx(model, twin, work, options.external_data_threshold, data=shared)
            fields["tensorrt_source"] = {"path": twin, "external_files": twin_files}
        del model, fused
    with stage(timings, "parity", spec.name):
        if plugin_context is None:
            shutil.rmtree(work, ignore_errors=True)  # the saved graphs have their own data file (moved there)
            fields["parity"] = _parity(spec.name, path, feeds, expected, options.precision)
            if "tensorrt_source" in fields:
                fields["tensorrt_source"]["parity"] = _parity(spec.name, fields["tensorrt_source"]["path"], feeds,
                                                              expected, options.precision)
        else:
            fields.update(plugin_parity(spec, path, work, feeds, expected, options))
            release_module(spec)
    shutil.rmtree(work, ignore_errors=True)
    _log_result(spec.name, fields)
    return fields


def _parity(name, path, feeds, expected, precision) -> dict:
    session = ort_session(path, precision)
    try:
        return check_parity(name, session, feeds, expected, precision)
    finally:
        del session
        release_freed_memory()


def release_module(spec) -> None:
    """Drop the graph's torch module and hand its memory back to the OS."""
    spec.module = None
    release_freed_memory()


def _log_result(name: str, fields: dict) -> None:
    parity = fields["parity"] or fields["parity_standard_op_twin"]
    fused = fields["attention"]["fused"]
    log.info("%s: ORT vs PyTorch fp32%s: rel_l2 %.2g, max_abs %.2g (tolerance %g)%s", name,
             "" if fields["parity"] else " (standard-op twin)", parity["rel_l2_err"],
             parity["max_abs_err"], parity["tolerance_rel_l2"],
             f"; {fused} attention layer{'s' if fused != 1 else ''} fused" if fused else "")
