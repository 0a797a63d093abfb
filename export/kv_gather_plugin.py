"""``--kv-gather plugin``: the UNet's sparse-causal KV gather as cpp_ext's ``tav::KVGather`` node.

cpp_ext provides the node (``kv_gather(..., plugin=True)``, which the video UNet passes while
``kv_gather_nodes`` has set its FrameContext's flag) and the TensorRT plugin library
(``tensorrt_plugin.register``). ONNX Runtime has no kernel for the node, so the plugin
graph's parity is recorded as null with the reason, and the same graph traced with
standard ops (its twin) is checked instead: that proves the weights, the shapes and every
other op of the graph.
"""

from contextlib import contextmanager

from tav.runtime.command import first_line

from .errors import ExportError
from .onnx_export import trace_to_onnx
from .onnx_hygiene import optimise, save_onnx
from .onnx_weights import load_structure
from .parity import check_parity, ort_session


def plugin_parity(spec, path, work, feeds, expected, options) -> dict:
    """ORT parity of the KVGather graph if ORT can run the custom op; else of its standard-op twin."""
    try:
        session = ort_session(path, options.precision)
    except Exception as err:  # ORT has no kernel for tav::KVGather unless cpp_ext ships one
        detail = first_line(err, None).split("failed:")[-1].strip()[:160]  # drop the staging path
        reason = f"ONNX Runtime cannot run the KVGather custom op ({detail})"
    else:
        return {"parity": check_parity(spec.name, session, feeds, expected, options.precision)}
    # Same trace without the plugin: proves the weights, shapes and every other op of this graph.
    traced = work / "standard_op_twin" / "traced.onnx"
    twin = work / "standard_op_twin.onnx"
    trace_to_onnx(spec, feeds, options.opset, traced)
    save_onnx(optimise(load_structure(traced), options.precision), twin, traced.parent, options.external_data_threshold)
    return {"parity": None, "parity_skipped": reason,
            "parity_standard_op_twin": check_parity(spec.name, ort_session(twin, options.precision), feeds, expected,
                                                    options.precision)}


@contextmanager
def kv_gather_nodes(module):
    """While ``module`` is traced to ONNX, its video UNets' KV gathers become tav::KVGather nodes."""
    from tav.tuner.model.video_unet import VideoUNet

    contexts = [m.frame_context for m in module.modules() if isinstance(m, VideoUNet)]
    for context in contexts:
        context.kv_gather_plugin = True
    try:
        yield
    finally:
        for context in contexts:
            context.kv_gather_plugin = False


class KVGatherPlugin:
    def __init__(self, library):
        self.context = kv_gather_nodes  # context(module): the trace of module writes the KVGather node
        self.library = library  # the TensorRT plugin library, registered; None without TensorRT


def kv_gather_plugin(trt, library=None) -> KVGatherPlugin:
    """The KVGather exporter hook, and cpp_ext's TensorRT plugin registered when building engines; else a clear
    error. ``library``: the plugin library to register (default: cpp_ext's cached build)."""
    if trt is None:
        return KVGatherPlugin(None)
    try:
        from tav.cpp_ext import tensorrt_plugin

        # Registered now, before minutes of tracing; the parser then maps tav::KVGather onto it.
        library = tensorrt_plugin.register(trt.module, library)
    except Exception as err:
        raise ExportError(
            f"--kv-gather plugin: the KVGather TensorRT plugin is not available ({first_line(err, None)}); "
            "build it on a CUDA machine (python -m tav.cpp_ext.tensorrt_plugin build), or use --kv-gather onnx"
        ) from None
    return KVGatherPlugin(library)
