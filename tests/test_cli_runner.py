"""All nine tav-* commands run through one runner (tav.runtime.command): one set of exit codes, TAV_DEBUG everywhere.

Each command's ``main`` parses, then calls its module's ``run(args)``; the tests replace ``run`` to stage
Ctrl-C or a failure inside the work, in this process (no model is loaded, no Ray started).
"""

import importlib
import re
import signal
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

import tav.runtime.command as command
from tav.runtime.command import BAD_INPUT, FAILED, INTERRUPTED, Interrupted, UsageError

from fixtures.commands import run_main


def valid_args(tmp: Path) -> dict:
    """name -> (argv that parses, a flag with a bad value): the smallest invocation of each command."""
    return {
        "tav-make-tiny": ([str(tmp / "sd")], ["--seed", "-1"]),
        "tav-make-clip": ([str(tmp / "clip.gif")], ["--frames", "0"]),
        "tav-tune": ([], ["--frames", "0"]),
        "tav-sample": (["--weights", str(tmp), "--prompt", "x", "--out", str(tmp / "v.npy")], ["--steps", "0"]),
        "tav-invert": (["--weights", str(tmp), "--video", str(tmp), "--frames", "2", "--out", str(tmp / "new")],
                       ["--frames", "0"]),
        "tav-export": (["--weights", str(tmp), "--out", str(tmp / "engine")], ["--opset", "1"]),
        "tav-run": (["--engine", str(tmp), "--prompt", "x", "--out", str(tmp / "v.npy")], ["--steps", "0"]),
        "tav-grid": ([str(tmp), "--out", str(tmp / "grid.gif")], ["--fps", "0"]),
        "tav-bench": ([], ["--frames", "0"]),
        "tav-serve": (["--base", str(tmp), "--packs", str(tmp / "store")], ["--port", "0"]),
    }


def command_module(name: str):
    """The module whose ``main`` the console script runs (tav.scripts names it)."""
    scripts = Path(importlib.import_module("tav.scripts").__file__).read_text()
    function = name.replace("-", "_")
    target = re.search(rf'def {function}\(\):.*?"(tav\.[\w.]+):main"', scripts, re.S).group(1)
    return importlib.import_module(target)


COMMANDS = sorted(ep.name for ep in distribution("tav-runtime").entry_points if ep.group == "console_scripts")


def test_every_console_script_is_covered():
    assert COMMANDS == sorted(valid_args(Path("/")))


@pytest.mark.parametrize("name", COMMANDS)
def test_exit_2_on_a_bad_value_130_on_ctrl_c_and_tav_debug_shows_the_traceback(name, tmp_path, monkeypatch):
    module = command_module(name)
    argv, bad = valid_args(tmp_path)[name]
    monkeypatch.setattr(module, "run", lambda args: pytest.fail("ran with a bad flag value"))
    refused = run_main(module.main, argv + bad)
    assert refused.code == BAD_INPUT and refused.err.startswith(f"{name}: error: {bad[0]} {bad[1]} ")
    assert len(refused.err.splitlines()) == 1 and "Traceback" not in refused.err

    def ctrl_c(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run", ctrl_c)
    interrupted = run_main(module.main, argv)
    assert interrupted.code == INTERRUPTED == 130
    assert interrupted.err == f"{name}: error: interrupted; nothing was written\n"

    def broken(args):
        raise RuntimeError("the backend failed\nwith a second line")

    monkeypatch.setattr(module, "run", broken)
    quiet = run_main(module.main, argv)
    assert quiet.code == FAILED and quiet.err == f"{name}: error: the backend failed\n"
    monkeypatch.setattr(command, "DEBUG", True)  # TAV_DEBUG=1, read once when tav.runtime.command loads
    debug = run_main(module.main, argv)
    assert debug.code == FAILED and debug.err.startswith("Traceback (most recent call last):")
    assert "in broken" in debug.err and debug.last_error_line == f"{name}: error: the backend failed"


def test_tav_debug_is_read_once_from_the_environment():
    code = "import tav.runtime.command as c; print(c.DEBUG)"
    for value, expected in (("1", "True"), ("0", "False"), ("", "False")):
        env = {"PATH": "/usr/bin:/bin", "TAV_DEBUG": value}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert done.stdout.strip() == expected


@pytest.mark.parametrize("error, code", [
    (UsageError("--x 1 conflicts with --y"), BAD_INPUT),
    (ValueError("corrupt manifest"), BAD_INPUT),
    (FileNotFoundError(2, "No such file or directory", "/nope"), BAD_INPUT),
    (PermissionError(13, "Permission denied", "/root/x"), BAD_INPUT),
    (OSError(28, "No space left on device", "/full/x"), FAILED),
    (RuntimeError("parity failed"), FAILED),
    (FloatingPointError("NaN in the latents"), FAILED),
    (Interrupted("stopped at step 3; resume with --resume", signal.SIGTERM), 143),
    (Interrupted("stopped at step 3; resume with --resume"), 130),
], ids=["usage", "value", "missing-file", "permission", "disk-full", "runtime", "non-finite", "sigterm", "sigint"])
def test_errors_map_to_one_exit_code_each_with_one_line(error, code, monkeypatch):
    module = command_module("tav-bench")

    def fails(args):
        raise error

    monkeypatch.setattr(module, "run", fails)
    done = run_main(module.main, [])
    assert done.code == code and len(done.err.splitlines()) == 1 and done.err.startswith("tav-bench: error: ")
    if isinstance(error, OSError):
        assert done.err == f"tav-bench: error: {error.filename}: {error.strerror}\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    module = command_module("tav-bench")

    def bug(args):
        return {}["missing"]

    monkeypatch.setattr(module, "run", bug)
    with pytest.raises(KeyError):
        module.main([])


def test_usage_errors_are_one_line_without_the_usage_dump():
    module = command_module("tav-serve")
    required = ["--base", "/tmp", "--packs", "/tmp"]
    for argv, text in ((["--base"], "--base expected one argument"),
                       (["--packs", "/tmp"], "the following arguments are required: --base (see tav-serve --help)"),
                       ([*required, "--bogus", "1"], "unrecognized arguments: --bogus 1 (see tav-serve --help)"),
                       ([*required, "--backend", "cuda"], "--backend invalid choice: 'cuda' (choose from")):
        done = run_main(module.main, argv)
        assert done.code == BAD_INPUT and len(done.err.splitlines()) == 1 and text in done.err, done.err


def test_serve_reaches_no_tuner_module_for_its_runner():
    code = ("import sys, tav.serve.cli; bad = [m for m in sys.modules if m.startswith('tav.tuner')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
