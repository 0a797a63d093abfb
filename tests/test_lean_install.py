"""The lean runtime install (issue 19, item 1): a fresh venv with only `.[cpu]` runs tav-run, without torch; every
other command answers --help there and names the extra a run needs (issue 31).

Slow (a venv and a pip install from the local wheel index, about a minute): `pytest -m slow tests/test_lean_install.py`.
The project is copied without its .venv and build output, so the install sees exactly the sources.
"""

import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import numpy as np
import pytest

from tav.runtime.cli import main as tav_run

from fixtures.serve_process import make_base, make_pack

REPO = Path(__file__).resolve().parents[1]
SIZE_GOAL_MB = 300
PROMPT = ["--prompt", "a red ball is bouncing", "--steps", "2", "--guidance", "7.5", "--seed", "3"]


def run(*command, **kwargs):
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=900, **kwargs)


def site_packages_mb(venv: Path) -> float:
    site = next(venv.glob("lib/python*/site-packages"))
    return sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("lean")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache", "demo_out", "out"))
    venv = root / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    done = run(venv / "bin" / "pip", "install", "-q", f"{source}[cpu]")
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def base_and_pack(tiny_sd, tmp_path_factory):
    root = tmp_path_factory.mktemp("lean-engine")
    base = make_base(tiny_sd, root / "base")
    return base, make_pack(tiny_sd, base, root / "runs", root / "vid.tavpack", seed=1)


def test_cpu_only_install_has_no_torch_and_stays_under_the_size_goal(lean_venv):
    python = lean_venv / "bin" / "python"
    for module in ("torch", "ray", "diffusers", "onnx"):
        assert run(python, "-c", f"import {module}").returncode != 0, f"{module} is importable in the lean install"
    size = site_packages_mb(lean_venv)
    print(f"lean .[cpu] site-packages: {size:.0f} MB")
    assert size <= SIZE_GOAL_MB, f"site-packages is {size:.0f} MB, over the {SIZE_GOAL_MB} MB goal"


def test_the_client_imports_in_the_lean_install_without_torch_or_ray(lean_venv):
    probe = ("import sys, tav.client; from tav.client import Client, Job, Result, ApiError; "
             "assert not {'torch', 'ray', 'fastapi'} & set(sys.modules), sorted(sys.modules)")
    done = run(lean_venv / "bin" / "python", "-c", probe)
    assert done.returncode == 0, done.stderr[-3000:]


def test_tav_run_in_the_lean_install_equals_the_full_install(lean_venv, base_and_pack, tmp_path):
    base, pack = base_and_pack
    lean = tmp_path / "lean.npy"
    done = run(lean_venv / "bin" / "tav-run", "--engine", base, "--video", pack, *PROMPT, "--out", lean, "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    full = tmp_path / "full.npy"
    tav_run(["--engine", str(base), "--video", str(pack), *PROMPT, "--out", str(full), "--quiet"])
    # Same graphs, same onnxruntime from the same index: the frames must be the same bytes.
    assert np.array_equal(np.load(lean), np.load(full))
    gif = tmp_path / "lean.gif"
    done = run(lean_venv / "bin" / "tav-run", "--engine", base, "--video", pack, *PROMPT, "--out", gif, "--quiet")
    assert done.returncode == 0 and gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a"), done.stderr[-3000:]


def test_every_command_answers_help_in_the_lean_install(lean_venv):
    commands = sorted(ep.name for ep in distribution("tav-runtime").entry_points if ep.group == "console_scripts")
    assert len(commands) >= 10, commands
    for command in commands:
        done = run(lean_venv / "bin" / command, "--help")
        assert done.returncode == 0 and done.stdout.startswith("usage: "), (command, done.stderr[-3000:])


def test_missing_extras_are_named_in_one_line(lean_venv, base_and_pack, tmp_path):
    base, pack = base_and_pack
    bin_dir = lean_venv / "bin"
    for command, extra in (("tav-tune", "tune"), ("tav-export", "export"), ("tav-serve", "serve")):
        done = run(bin_dir / command, "--out", tmp_path / "out")  # a run, not --help: that one answers
        assert done.returncode != 0 and done.stderr.strip() == (
            f"{command} needs the {extra} extra: pip install 'tav-runtime[{extra}]'"), done.stderr
    if shutil.which("ffmpeg") is None:  # no imageio-ffmpeg, no PyAV, no system ffmpeg: .mp4 is refused up front
        done = run(bin_dir / "tav-run", "--engine", base, "--video", pack, *PROMPT, "--out", tmp_path / "v.mp4")
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and "needs an encoder" in lines[0], done.stderr
    assert run(bin_dir / "pip", "uninstall", "-q", "-y", "onnxruntime").returncode == 0
    done = run(bin_dir / "tav-run", "--engine", base, "--video", pack, *PROMPT, "--out", tmp_path / "x.npy")
    assert done.returncode != 0 and done.stderr.strip().startswith("tav-run needs an inference backend: "
                                                                   "pip install 'tav-runtime[cpu]'"), done.stderr
