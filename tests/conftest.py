"""Suite-wide set-up: the shared artefacts plugin (tests/fixtures/), markers applied in one place, seeding,
and how `make test` splits the suite over two pytest-xdist workers."""

import gc
import os

import pytest
import torch

from fixtures.threads import single_torch_thread

pytest_plugins = ["fixtures.artefacts", "fixtures.studio_service"]


def _has_tensorrt_rtx() -> bool:
    """The TensorRT the suite builds plans with on CPU-only machines (the full wheels cannot install here)."""
    try:
        import tensorrt_rtx  # noqa: F401  (importable is what counts)
    except Exception:
        return False
    return True


# Minutes of real subprocesses (tav-bench's stages and workers): `slow`, run by `make test-slow` (`pytest -m slow`).
# The studio's browser, client and notebook tests share one tav-serve (tests/fixtures/studio_service.py).
# test_clean_stops.py: Ctrl-C and SIGTERM at every stage of tav-tune, tav-export and tav-invert, about a minute.
SLOW_MODULES = ("test_bench.py", "test_studio_browser.py", "test_client.py", "test_notebook.py", "test_clean_stops.py")


# `make test` runs `pytest -n 2`: the scheduler below runs each unit whole on one worker, so module fixtures are
# built once. Modules that share a costly session artefact are one unit, so it is built once too (the base
# ENGINE_DIR and its packs; the real tuning run; the baked ENGINE_DIR), and the two Ray-starting modules never
# run at once. Units are queued heaviest first (suite seconds on 2 cores, 2026-12-02), so the last ones to start
# are short and the two workers finish together.
UNITS = {
    "base": ("test_packs.py", "test_pack_progress.py", "test_serve_http.py", "test_serve_startup.py",
             "test_serve_store.py", "test_validation.py"),
    "baked": ("test_export.py", "test_runtime_parity.py"),
    "tuned": ("test_tune.py", "test_sample.py"),
}
HEAVIEST_FIRST = ("base", "baked", "tuned", "test_long_video.py", "test_export_memory.py", "test_model_sources.py",
                  "test_export_cli.py", "test_hardening_export.py", "test_hardening_tune.py", "test_cli_progress.py")
UNIT_OF = {module: unit for unit, modules in UNITS.items() for module in modules}


def _unit(module: str) -> str:
    return UNIT_OF.get(module, module)


def _queue_position(item) -> int:
    unit = _unit(item.path.name)
    return HEAVIEST_FIRST.index(unit) if unit in HEAVIEST_FIRST else len(HEAVIEST_FIRST)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist does not know it
def pytest_xdist_make_scheduler(config, log):
    """xdist's per-module scheduling, with UNITS as the scopes (its own xdist_group marks do not reach the
    scheduler under pytest 9, which no longer lets xdist rename a test's node id)."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid.split("::", 1)[0].rsplit("/", 1)[-1])

    return UnitScheduling(config, log)


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two workers on two cores: a second torch thread per worker only contends. Tests that set threads
        # themselves still do.
        torch.set_num_threads(1)


def pytest_collection_finish(session):
    """The exporter collects garbage after each graph (runtime/host_memory.py), so freed weights leave the process.
    In a test process each collect also scans every object the imports made: 0.3 s a collect, 17% of
    test_long_video + test_export_cli. Frozen, those are skipped; they live as long as the process anyway."""
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    """Markers decided here, once: ``slow`` by module; ``gpu`` skips without CUDA, ``trt`` without tensorrt-rtx.
    Units queued heaviest first (a stable sort: the order within a module is kept)."""
    items.sort(key=_queue_position)
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
