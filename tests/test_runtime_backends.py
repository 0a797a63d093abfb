"""Backend choice and the TensorRT engine logic, testable without a GPU (fake TensorRT + fake CUDA calls)."""

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tav.runtime import backend_trt, backends, cuda_rt
from tav.runtime.backends import BackendUnavailable, choose_backend
from tav.runtime.manifest import GraphEntry, Manifest, TensorSpec

F, H, W, D = 2, 16, 16, 8
TRT_INFO = {"flavour": "tensorrt_rtx", "version": "1.7.1.116", "gpu": "RTX 4090", "compute_capability": "8.9"}


def make_manifest(tmp_path, plans: bool) -> Manifest:
    graphs = {}
    for name in ("text_encoder", "unet", "vae_decoder"):
        trt = {**TRT_INFO, "plan": f"{name}.plan", "sha256": "0" * 64} if plans else None
        graphs[name] = GraphEntry(name, f"{name}.onnx", "0" * 64, (), (), (), trt)
    return Manifest(Path(tmp_path), F, H, W, "fp32", 77, D, 4, 0.18215, graphs, {}, {})


def no_gpu(monkeypatch):
    monkeypatch.setattr(cuda_rt, "gpu_count", lambda: 0)


# --- choice -------------------------------------------------------------------------------------------


def test_this_machine_has_no_gpu_and_probing_it_is_harmless():
    assert cuda_rt.gpu_count() == 0


def test_auto_without_gpu_is_onnxruntime_on_cpu(tmp_path, monkeypatch):
    no_gpu(monkeypatch)
    for plans in (False, True):
        choice = choose_backend(make_manifest(tmp_path, plans), "auto", None)
        assert (choice.name, choice.device) == ("onnxruntime", "cpu")
    assert "no CUDA GPU" in choice.reason or "CUDAExecutionProvider" in choice.reason


def test_explicit_requests_that_cannot_run_say_why(tmp_path, monkeypatch):
    no_gpu(monkeypatch)
    with pytest.raises(BackendUnavailable, match="no TensorRT plans"):
        choose_backend(make_manifest(tmp_path, False), "tensorrt")
    with pytest.raises(BackendUnavailable, match="TensorRT runs on a CUDA GPU only"):
        choose_backend(make_manifest(tmp_path, True), "tensorrt", "cpu")
    with pytest.raises(BackendUnavailable, match="cannot run on cuda"):
        choose_backend(make_manifest(tmp_path, False), "onnxruntime", "cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend(make_manifest(tmp_path, False), "openvino")


def test_missing_tensorrt_package_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(backend_trt, "import_tensorrt", lambda flavour: None)
    with pytest.raises(BackendUnavailable, match="need the tensorrt_rtx Python package"):
        choose_backend(make_manifest(tmp_path, True), "tensorrt")


def fake_trt_module(version="1.7.1.116", name="tensorrt_rtx"):
    return types.SimpleNamespace(__name__=name, __version__=version)


@pytest.mark.parametrize("trt, capability, problem", [
    (fake_trt_module(), "8.9", None),
    (fake_trt_module(version="1.8.0.1"), "8.9",
     "built with tensorrt_rtx 1.7.1.116, this runtime has tensorrt_rtx 1.8.0.1"),
    (fake_trt_module(name="tensorrt", version="1.7.1.116"), "8.9", "this runtime has tensorrt 1.7.1.116"),
    (fake_trt_module(), "9.0", "built for compute capability 8.9 (RTX 4090), this GPU is 9.0"),
])
def test_plans_must_match_the_tensorrt_version_and_gpu(tmp_path, monkeypatch, trt, capability, problem):
    monkeypatch.setattr(cuda_rt, "compute_capability", lambda device=0: capability)
    found = backend_trt.plan_incompatibility(make_manifest(tmp_path, True), trt)
    assert found == problem if problem is None else problem in found


def test_auto_prefers_tensorrt_then_falls_back_to_ort_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda_rt, "gpu_count", lambda: 1)
    monkeypatch.setattr(backend_trt, "import_tensorrt", lambda flavour: fake_trt_module())
    monkeypatch.setattr(backends.backend_ort, "cuda_available", lambda: True)
    monkeypatch.setattr(cuda_rt, "compute_capability", lambda device=0: "8.9")
    assert choose_backend(make_manifest(tmp_path, True)).name == "tensorrt"
    monkeypatch.setattr(cuda_rt, "compute_capability", lambda device=0: "9.0")  # plans for another GPU
    choice = choose_backend(make_manifest(tmp_path, True))
    assert (choice.name, choice.device) == ("onnxruntime", "cuda") and "compute capability" in choice.reason
    with pytest.raises(BackendUnavailable, match="this GPU is 9.0"):
        choose_backend(make_manifest(tmp_path, True), "tensorrt")


def test_importing_the_gpu_backends_loads_no_gpu_library():
    code = ("import sys, tav.runtime.backend_trt, tav.runtime.backend_ort, tav.runtime.cuda_rt; "
            "bad = [m for m in sys.modules "
            "if m.split('.')[0] in ('tensorrt', 'tensorrt_rtx', 'onnxruntime', 'torch', 'polygraphy')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the TensorRT Engine against fakes ----------------------------------------------------------------


class FakeCuda:
    """Records the CUDA calls the engines make; device memory is a dict of numpy arrays."""

    def __init__(self):
        self.calls, self.memory, self.next_ptr, self.capturing = [], {}, 0x1000, False

    def install(self, monkeypatch):
        for name in ("malloc", "free", "copy_to_device", "copy_to_host", "create_stream", "synchronize",
                     "destroy_stream", "begin_capture", "end_capture", "launch_graph", "destroy_graph", "set_device"):
            monkeypatch.setattr(cuda_rt, name, getattr(self, name))

    def malloc(self, nbytes):
        self.next_ptr += 0x1000
        self.memory[self.next_ptr] = np.zeros(nbytes, np.uint8)
        self.calls.append(("malloc", nbytes))
        return self.next_ptr

    def free(self, ptr):
        if ptr:
            self.calls.append(("free", ptr))

    def copy_to_device(self, dst, host, stream):
        self.memory[dst][: host.nbytes] = host.view(np.uint8).ravel()

    def copy_to_host(self, host, src, stream):
        host.view(np.uint8).ravel()[:] = self.memory[src][: host.nbytes]

    def create_stream(self):
        return 77

    def synchronize(self, stream):
        self.calls.append(("sync", stream))

    def destroy_stream(self, stream):
        self.calls.append(("destroy_stream", stream))

    def begin_capture(self, stream):
        self.calls.append(("begin_capture", stream))
        self.capturing = True

    def end_capture(self, stream):
        self.calls.append(("end_capture", stream))
        self.capturing = False
        return 0xABC

    def launch_graph(self, graph, stream):
        self.calls.append(("launch", graph))
        self.context.run()  # replaying the graph runs the captured work

    def destroy_graph(self, graph):
        self.calls.append(("destroy_graph", graph))

    def set_device(self, device):
        pass


class FakeTrt:
    """Just enough of the TensorRT 10 Python API: a plan whose engine computes y = 2 x."""

    __name__, __version__ = "tensorrt_rtx", TRT_INFO["version"]
    TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    ExecutionContextAllocationStrategy = types.SimpleNamespace(USER_MANAGED="user")
    Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})

    def __init__(self, cuda, scratch_sizes):
        self.cuda, self.scratch_sizes = cuda, iter(scratch_sizes)

    @staticmethod
    def nptype(dtype):
        return np.float32

    def Runtime(self, logger):
        return types.SimpleNamespace(
            deserialize_cuda_engine=lambda data: FakeEngine(self.cuda, next(self.scratch_sizes)))


class FakeEngine:
    num_io_tensors = 2

    def __init__(self, cuda, scratch):
        self.cuda, self.device_memory_size_v2 = cuda, scratch

    def get_tensor_name(self, i):
        return ("x", "y")[i]

    def get_tensor_shape(self, name):
        return (2, 3)

    def get_tensor_dtype(self, name):
        return "float"

    def get_tensor_mode(self, name):
        return "in" if name == "x" else "out"

    def create_execution_context(self, strategy):
        assert strategy == "user"
        return FakeContext(self.cuda)


class FakeContext:
    def __init__(self, cuda):
        self.cuda, self.addresses = cuda, {}

    def set_device_memory(self, ptr, size):
        self.cuda.calls.append(("scratch", ptr, size))

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def run(self):
        x = self.cuda.memory[self.addresses["x"]].view(np.float32)
        self.cuda.memory[self.addresses["y"]].view(np.float32)[:] = 2 * x

    def execute_async_v3(self, stream):
        self.cuda.calls.append(("execute", stream))
        if not self.cuda.capturing:  # work enqueued during a capture runs only when the graph is launched
            self.run()
        return True


def test_engines_share_one_scratch_and_the_unet_replays_a_cuda_graph(tmp_path, monkeypatch):
    cuda = FakeCuda()
    cuda.install(monkeypatch)
    manifest = make_manifest(tmp_path, True)
    for name in manifest.graphs:
        (tmp_path / f"{name}.plan").write_bytes(b"plan")
    engines = backend_trt.TensorRTEngines(manifest, FakeTrt(cuda, [300, 1000, 500]))
    scratch = [c for c in cuda.calls if c[0] == "scratch"]
    assert [c[2] for c in scratch] == [300, 1000, 500] and len({c[1] for c in scratch}) == 1  # one pointer
    assert ("malloc", 1000) in cuda.calls and sum(1 for c in cuda.calls if c == ("malloc", 1000)) == 1

    unet = engines.graphs["unet"]
    cuda.context = unet.context
    assert engines.graphs["text_encoder"].inputs == [TensorSpec("x", (2, 3), "float32")]
    outputs = []
    for i in range(3):
        outputs.append(unet.run({"x": np.full((2, 3), i, np.float32)})["y"])
    assert [o[0, 0] for o in outputs] == [0, 2, 4] and outputs[0] is not outputs[1]
    kinds = [c[0] for c in cuda.calls if c[0] in ("execute", "begin_capture", "end_capture", "launch")]
    # Warm-up, capture, replays.
    assert kinds == ["execute", "begin_capture", "execute", "end_capture", "launch", "launch"]

    cuda.calls.clear()
    text = engines.graphs["text_encoder"]
    cuda.context = text.context
    assert text.run({"x": np.ones((2, 3), np.float32)})["y"][1, 2] == 2
    assert [c[0] for c in cuda.calls if c[0] in ("execute", "launch")] == ["execute"]  # no graph for run-once engines

    engines.close()
    assert ("destroy_graph", 0xABC) in cuda.calls and ("destroy_stream", 77) in cuda.calls


def test_plugin_exports_are_refused_by_onnxruntime_with_the_way_out(tmp_path, monkeypatch):
    no_gpu(monkeypatch)
    manifest = make_manifest(tmp_path, False)
    object.__setattr__(manifest, "raw", {"kv_gather": "plugin"})
    for device in (None, "cpu"):
        with pytest.raises(BackendUnavailable, match="tav::KVGather.*re-export with --kv-gather onnx"):
            choose_backend(manifest, "auto", device)
