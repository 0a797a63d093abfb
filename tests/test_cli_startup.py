"""The tav-* commands start fast: their modules load no torch, diffusers, transformers, ONNX Runtime or Ray until
arguments are parsed, and every --help answers (with its defaults) without them."""

import json
import re
import subprocess
import sys
import time
from importlib.metadata import distribution
from pathlib import Path

import pytest

HEAVY = ("torch", "diffusers", "transformers", "onnxruntime", "ray", "onnx")
# `--help` takes ~0.2 s on a quiet 2-core machine; importing torch alone takes ~7 s. The bound leaves room for a busy
# machine; the import test below is the exact check.
HELP_SECONDS = 5.0


def console_scripts() -> dict:
    """name -> "module:function" of every command this project installs (pyproject's [project.scripts])."""
    return {ep.name: ep.value for ep in distribution("tav-runtime").entry_points if ep.group == "console_scripts"}


def test_every_command_is_covered():
    assert set(console_scripts()) >= {"tav-make-tiny", "tav-make-clip", "tav-tune", "tav-sample", "tav-export",
                                      "tav-run", "tav-grid", "tav-bench", "tav-serve"}


def test_importing_the_cli_modules_loads_no_heavy_library():
    import tav.scripts  # the console scripts launch each command's module by name: "tav.tuner.cli.tune:main"

    targets = re.findall(r'"(tav\.[\w.]+):\w+"', Path(tav.scripts.__file__).read_text())
    modules = sorted({value.split(":")[0] for value in console_scripts().values()} | set(targets))
    assert len(targets) >= 8, targets
    code = (f"import importlib, json, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded == [], f"importing the CLI modules loads {loaded}: import them inside main(), after parsing"


@pytest.mark.parametrize("name", sorted(console_scripts()))
def test_help_answers_quickly_and_shows_defaults(name):
    start = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).parent / name), "--help"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert seconds < HELP_SECONDS, f"{name} --help took {seconds:.1f} s"
    assert "None)" not in result.stdout and "default: False" not in result.stdout
    assert "(default" in result.stdout  # argparse's "(default: X)" or a help text's own "(default X)"


def test_lazy_package_exports_stay_the_functions_after_their_submodules_load():
    import importlib
    import inspect

    importlib.import_module("tav.tuner.tuning.tune")  # the submodule shares the function's name
    importlib.import_module("tav.export.pipeline")
    from tav.export import export_engine
    from tav.tuner import TuneConfig, sample, tune

    assert inspect.isfunction(tune) and tune.__module__ == "tav.tuner.tuning.tune"
    assert inspect.isfunction(sample) and inspect.isfunction(export_engine) and inspect.isclass(TuneConfig)
