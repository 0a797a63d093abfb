"""The few CUDA runtime calls the TensorRT backend needs, through polygraphy's libcudart loader.

polygraphy finds libcudart (system CUDA or the nvidia-cuda-runtime wheel); we call its ctypes
handle directly (CUDA 12+ signatures) and check every status ourselves, so a CUDA failure
(out of memory above all) is a RuntimeError that the pipeline can fall back from or report in
one line. polygraphy's own wrappers raise PolygraphyException and print to stdout instead, and
its DeviceArray helpers import torch, which the runtime must not do. Importing this module
touches no GPU.
"""

import ctypes
import functools

# cudaDeviceAttr values (driver_types.h).
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76
# Thread-local capture: another thread's CUDA calls (another pipeline, ORT, torch) neither break
# nor are broken by this stream's one-time capture, as they would be in the global mode.
_CAPTURE_MODE_THREAD_LOCAL = 1
_STREAM_NON_BLOCKING = 1  # cudaStreamNonBlocking: no implicit sync with the legacy default stream
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
    ptr = ctypes.c_void_p()
    _check(_cuda().handle.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(int(nbytes), 1))),
           f"cudaMalloc({nbytes} bytes)")
    return ptr.value


def free(ptr: int) -> None:
    if ptr:
        _check(_cuda().handle.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")


def _memcpy(dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
    status = _cuda().handle.cudaMemcpyAsync(
        ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes), kind, ctypes.c_void_p(stream)
    )
    _check(status, "cudaMemcpyAsync")


def copy_to_device(dst: int, host, stream: int) -> None:
    _memcpy(dst, host.ctypes.data, host.nbytes, H2D, stream)


def copy_to_host(host, src: int, stream: int) -> None:
    _memcpy(host.ctypes.data, src, host.nbytes, D2H, stream)


def create_stream() -> int:
    stream = ctypes.c_void_p()
    _check(_cuda().handle.cudaStreamCreateWithFlags(ctypes.byref(stream), _STREAM_NON_BLOCKING),
           "cudaStreamCreateWithFlags")
    return stream.value


def synchronize(stream: int) -> None:
    _check(_cuda().handle.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")


def destroy_stream(stream: int) -> None:
    if stream:
        _check(_cuda().handle.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")


def begin_capture(stream: int) -> None:
    _check(_cuda().handle.cudaStreamBeginCapture(ctypes.c_void_p(stream), _CAPTURE_MODE_THREAD_LOCAL),
           "cudaStreamBeginCapture")


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
