"""The few CUDA runtime calls the TensorRT backend needs, through polygraphy's libcudart loader.

polygraphy finds libcudart (system CUDA or the nvidia-cuda-runtime wheel) and wraps malloc,
memcpy and streams with raw pointers. We call those, never its DeviceArray copy helpers:
they type-check host buffers through a dispatcher that imports torch, which the runtime
must not do. CUDA-graph and device-query calls polygraphy does not wrap go to the same
ctypes handle (CUDA 12+ signatures). Importing this module touches no GPU.
"""

import ctypes
import functools

# cudaDeviceAttr values (driver_types.h).
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76
_CAPTURE_MODE_GLOBAL = 0  # cudaStreamCaptureModeGlobal, as in TensorRT's samples
H2D, D2H = 1, 2  # cudaMemcpyKind


@functools.cache
def _cuda():
    from polygraphy.cuda import wrapper
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # its "could not find libcudart" warnings are ours to report
        return wrapper()


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"CUDA error {status} in {what}")


def gpu_count() -> int:
    """Visible CUDA devices; 0 when there is no driver, no libcudart, or no GPU."""
    try:
        count = ctypes.c_int(0)
        return count.value if _cuda().handle.cudaGetDeviceCount(ctypes.byref(count)) == 0 else 0
    except Exception:  # no libcudart / no driver: a CPU machine
        return 0


def compute_capability(device: int = 0) -> str:
    """"8.9"-style compute capability of ``device``."""
    handle = _cuda().handle
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(handle.cudaDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, device), "cudaDeviceGetAttribute")
    _check(handle.cudaDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, device), "cudaDeviceGetAttribute")
    return f"{major.value}.{minor.value}"


def malloc(nbytes: int) -> int:
    return _cuda().malloc(max(int(nbytes), 1))


def free(ptr: int) -> None:
    if ptr:
        _cuda().free(ptr)


def copy_to_device(dst: int, host, stream: int) -> None:
    _cuda().memcpy(dst, host.ctypes.data, host.nbytes, H2D, stream)


def copy_to_host(host, src: int, stream: int) -> None:
    _cuda().memcpy(host.ctypes.data, src, host.nbytes, D2H, stream)


def create_stream() -> int:
    return _cuda().create_stream()


def synchronize(stream: int) -> None:
    _cuda().stream_synchronize(stream)


def destroy_stream(stream: int) -> None:
    _cuda().destroy_stream(stream)


def begin_capture(stream: int) -> None:
    _check(_cuda().handle.cudaStreamBeginCapture(ctypes.c_void_p(stream), _CAPTURE_MODE_GLOBAL), "cudaStreamBeginCapture")


def end_capture(stream: int) -> int:
    """Ends a capture; returns the instantiated graph (cudaGraphExec_t) and frees the template graph."""
    handle = _cuda().handle
    graph, graph_exec = ctypes.c_void_p(), ctypes.c_void_p()
    _check(handle.cudaStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)), "cudaStreamEndCapture")
    _check(handle.cudaGraphInstantiate(ctypes.byref(graph_exec), graph, ctypes.c_ulonglong(0)), "cudaGraphInstantiate")
    _check(handle.cudaGraphDestroy(graph), "cudaGraphDestroy")
    return graph_exec.value


def launch_graph(graph_exec: int, stream: int) -> None:
    _check(_cuda().handle.cudaGraphLaunch(ctypes.c_void_p(graph_exec), ctypes.c_void_p(stream)), "cudaGraphLaunch")


def destroy_graph(graph_exec: int) -> None:
    if graph_exec:
        _check(_cuda().handle.cudaGraphExecDestroy(ctypes.c_void_p(graph_exec)), "cudaGraphExecDestroy")


def set_device(device: int) -> None:
    _check(_cuda().handle.cudaSetDevice(device), "cudaSetDevice")
