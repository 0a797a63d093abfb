"""bench/gpu's wheel carrying: a wheel over one device call's 64 MiB travels in parts, one per call,
and is joined there only when every byte checks out. Run here with a small file and small parts."""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "bench" / "gpu"


def _run(script, *args, env, cwd):
    return subprocess.run(["bash", str(SCRIPTS / script), *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True)


@pytest.fixture
def split_wheel(tmp_path):
    wheel = tmp_path / "onnxruntime_gpu-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(os.urandom(5 * 2**20 + 123))  # 5 MiB + a ragged tail: 3 parts of 2 MiB
    here = tmp_path / "here"
    here.mkdir()
    result = _run("split_wheel.sh", str(wheel), "2", env={}, cwd=here)
    assert result.returncode == 0, result.stderr
    return wheel, here / ".whl_parts"


def test_parts_sent_one_call_at_a_time_join_into_the_same_wheel(split_wheel, tmp_path):
    wheel, parts = split_wheel
    name, sha, count = (parts / "PARTS").read_text().split()
    assert (name, sha, int(count)) == (wheel.name, hashlib.sha256(wheel.read_bytes()).hexdigest(), 3)
    stash = tmp_path / "stash"  # what stays on the warm device machine between calls
    for i, part in enumerate(sorted(parts.glob("part-*"))):
        call = tmp_path / f"call{i}" / ".whl_parts"  # each call's tree carries PARTS and one part
        call.mkdir(parents=True)
        shutil.copy(parts / "PARTS", call)
        shutil.copy(part, call)
        result = _run("receive_part.sh", env={"STASH": str(stash)}, cwd=call.parent)
        assert result.returncode == 0, result.stderr
        if i < 2:
            assert f"{i + 1} of 3 parts" in result.stdout and not (stash / "wheels" / wheel.name).exists()
    assert (stash / "wheels" / wheel.name).read_bytes() == wheel.read_bytes()


def test_a_corrupt_part_never_becomes_a_wheel(split_wheel, tmp_path):
    wheel, parts = split_wheel
    first = sorted(parts.glob("part-*"))[0]
    data = bytearray(first.read_bytes())
    data[100] ^= 0xFF
    first.write_bytes(bytes(data))
    stash = tmp_path / "stash"
    result = _run("receive_part.sh", env={"STASH": str(stash)}, cwd=parts.parent)
    assert result.returncode == 1 and "sha256" in result.stderr
    assert list((stash / "wheels").iterdir()) == []
