"""Importing our packages does no work: no compiler starts and no file is written until the op is first used."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = ("c++", "g++", "gcc", "cc", "clang++", "ninja", "nvcc")


@pytest.fixture
def watched(tmp_path):
    """An environment whose home, cache and temp folders are fresh and empty, and whose compilers are spies."""
    spies = tmp_path / "spies"
    spies.mkdir()
    log = tmp_path / "spied.log"
    for tool in TOOLS:
        spy = spies / tool
        spy.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit 1\n')
        spy.chmod(0o755)
    folders = {name: tmp_path / name for name in ("home", "cache", "tmp", "torch_extensions")}
    for folder in folders.values():
        folder.mkdir()
    env = {**os.environ, "PATH": f"{spies}{os.pathsep}{os.environ.get('PATH', '')}", "CXX": str(spies / "c++"),
           "HOME": str(folders["home"]), "XDG_CACHE_HOME": str(folders["cache"]), "TMPDIR": str(folders["tmp"]),
           "TORCH_EXTENSIONS_DIR": str(folders["torch_extensions"])}
    return env, folders, log


def _run(script: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def _written(folders: dict) -> list:
    return [str(p) for folder in folders.values() for p in Path(folder).rglob("*")]


def test_importing_cpp_ext_and_the_video_unet_layers_starts_no_compiler_and_writes_nothing(watched):
    env, folders, log = watched
    _run("import tav.cpp_ext, tav.tuner.model, tav.tuner.model.frame_layers", env)
    assert not log.exists(), log.read_text()
    assert _written(folders) == []


def test_the_first_use_is_what_builds(watched):
    """The spies above would have seen a build: the first load runs ninja (a spy here, so it falls back)."""
    env, folders, log = watched
    result = _run("import tav.cpp_ext as e\nb = e.load()\nprint(sorted(b.devices), b.fallback_reason)", env)
    assert result.stdout.startswith("[] ") and "build failed" in result.stdout
    assert "ninja" in log.read_text()
    assert any("cpp_ext" in path for path in _written(folders))  # the build folder in the (fresh) cache
