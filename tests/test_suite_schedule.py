"""The two-worker schedule of tests/conftest.py names real modules: a renamed module would silently leave its unit
(its shared artefact then built on both workers, or the Ray modules run side by side)."""

from pathlib import Path

from conftest import UNITS, _unit

TESTS = Path(__file__).parent


def test_every_module_the_schedule_names_exists_and_each_is_in_one_unit_at_most():
    named = [m for modules in UNITS.values() for m in modules]
    missing = [m for m in named if not (TESTS / m).is_file()]
    assert not missing, f"tests/conftest.py schedules modules that do not exist: {missing}"
    assert len(named) == len(set(named))


def test_ray_starting_modules_share_one_unit():
    assert _unit("test_serve_http.py") == _unit("test_serve_startup.py") == "base"
    assert _unit("test_ddim.py") == "test_ddim.py"  # any other module is its own unit
