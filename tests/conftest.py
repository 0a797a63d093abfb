"""Suite-wide set-up: the shared artefacts plugin (tests/fixtures/), markers applied in one place, seeding."""

import pytest
import torch

from fixtures.threads import single_torch_thread

pytest_plugins = ["fixtures.artefacts"]


def _has_tensorrt_rtx() -> bool:
    """The TensorRT the suite builds plans with on CPU-only machines (the full wheels cannot install here)."""
    try:
        import tensorrt_rtx  # noqa: F401  (importable is what counts)
    except Exception:
        return False
    return True


# Minutes of real subprocesses (tav-bench's stages and workers): `slow`, run by `make test-slow` (`pytest -m slow`).
SLOW_MODULES = ("test_bench.py",)


def pytest_collection_modifyitems(config, items):
    """Markers decided here, once: ``slow`` by module; ``gpu`` skips without CUDA, ``trt`` without tensorrt-rtx."""
    skips = {
        "gpu": None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA GPU"),
        "trt": None if _has_tensorrt_rtx() else pytest.mark.skip(reason="needs tensorrt-rtx (pip install it)"),
    }
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        for marker, skip in skips.items():
            if skip is not None and marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model's ops are too small to gain from threads, and on a shared CPU extra threads cost ~10x."""
    with single_torch_thread():
        yield


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
