"""Suite-wide set-up: the shared artefacts plugin (tests/fixtures/), markers applied in one place, seeding,
and how `make test` splits the suite over two pytest-xdist workers."""

import gc
import os
from pathlib import Path

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


# `slow`: minutes of real subprocesses, run by `make test-slow` (`pytest -m slow`), not by `make test`. Decided here
# only, so a module's own marks never disagree with this list. Whole modules: tav-bench's stages and workers; the
# studio's browser, client and notebook tests, which share one tav-serve (tests/fixtures/studio_service.py); the
# lean install (a venv and a pip install); two Ray nodes; tav-serve signalled at ten moments of its start; Ctrl-C
# and SIGTERM at every stage of tav-tune, tav-export and tav-invert.
SLOW_MODULES = ("test_bench.py", "test_studio_browser.py", "test_client.py", "test_notebook.py", "test_lean_install.py",
                "test_serve_two_nodes.py", "test_serve_stops.py", "test_clean_stops.py")
# Single tests (module, function; every parametrisation): the README run as written; two more Ray starts.
SLOW_TESTS = (("test_readme.py", "test_readme_runs_as_written"),
              ("test_serve_startup.py", "test_a_start_that_cannot_succeed_ends_in_one_line_and_leaves_nothing"))
# `sd15`: every stage at SD-1.5 size (an hour, 8 GB of host memory), run by `make test-sd15` (`pytest -m sd15`).
SD15_MODULES = ("test_real_size.py",)


# `make test` runs `pytest -n 2`: the scheduler below runs each unit whole on one worker, so module fixtures are
# built once. Modules that share a costly session artefact are one unit, so it is built once too (the base
# ENGINE_DIR and its packs; the real tuning run; the baked ENGINE_DIR), and the two Ray-starting modules never
# run at once. xdist queues the units largest first by number of tests (its default, --loadscope-reorder).
UNITS = {
    "base": ("test_packs.py", "test_pack_progress.py", "test_serve_http.py", "test_serve_startup.py",
             "test_serve_store.py", "test_validation.py"),
    "baked": ("test_export.py", "test_runtime_parity.py"),
    "tuned": ("test_tune.py", "test_sample.py"),
}
UNIT_OF = {module: unit for unit, modules in UNITS.items() for module in modules}


def _unit(module: str) -> str:
    return UNIT_OF.get(module, module)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist does not know it
def pytest_xdist_make_scheduler(config, log):
    """xdist's per-module scheduling, with UNITS as the scopes.

    Not xdist's public way (``--dist loadgroup`` and ``xdist_group`` marks): with pytest 9.2 and pytest-xdist 3.8.0,
    the newest, the marks are ignored and a group's modules run on both workers (checked 2026-12-07 on two grouped
    modules, ``-n 2 --dist loadgroup``). xdist passes the group to the scheduler by renaming the test's node id
    (``item._nodeid``), which pytest 9 no longer reads: pytest-xdist issue 1386, fix proposed in PR 1388. Once a
    fixed xdist is out, UNITS become ``xdist_group`` marks under ``--dist loadgroup``, and this hook and
    tests/test_suite_schedule.py go."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid.split("::", 1)[0].rsplit("/", 1)[-1])

    return UnitScheduling(config, log)


def _check_marked_names() -> None:
    """A renamed module or test would silently lose its mark and run in `make test`: refuse to start instead."""
    here = Path(__file__).parent
    for module in (*SLOW_MODULES, *SD15_MODULES):
        if not (here / module).is_file():
            raise pytest.UsageError(f"tests/conftest.py marks {module}, which does not exist")
    for module, function in SLOW_TESTS:
        if f"def {function}(" not in (here / module).read_text():
            raise pytest.UsageError(f"tests/conftest.py marks {module}::{function}, which does not exist")


def pytest_configure(config):
    _check_marked_names()
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
    """Markers decided here, once: ``slow`` and ``sd15`` by the lists above (no module marks itself); ``gpu`` skips
    without CUDA, ``trt`` without tensorrt-rtx."""
    skips = {
        "gpu": None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA GPU"),
        "trt": None if _has_tensorrt_rtx() else pytest.mark.skip(reason="needs tensorrt-rtx (pip install it)"),
    }
    for item in items:
        if item.path.name in SLOW_MODULES or (item.path.name, getattr(item, "originalname", None)) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        if item.path.name in SD15_MODULES:
            item.add_marker(pytest.mark.sd15)
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
