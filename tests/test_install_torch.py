"""`make install` picks the torch build a machine can use (tools/install_torch.py, issue 31).

Each machine is faked: PATH with or without an `nvidia-smi`, PyTorch's CPU index reachable (a local HTTP server)
or not (a closed port), a local CPU wheel in pip's find-links or not (a stand-in pip that answers the probe).
The script's --dry-run prints the pip command it would run; these tests read it.
"""

import http.server
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "install_torch.py"
CLOSED_INDEX = "http://127.0.0.1:9/whl/cpu"  # the discard port: nothing listens, refused at once


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def _fake_pip(tmp_path: Path, has_local_wheel: bool) -> Path:
    """A pip whose `--no-index` probe succeeds only when the machine 'carries' a local CPU wheel."""
    return _executable(tmp_path / "fake-pip", f"#!/bin/sh\nexit {0 if has_local_wheel else 1}\n")


def _dry_run(tmp_path, *, gpu=False, index=CLOSED_INDEX, local_wheel=False, platform="linux") -> tuple[str, list]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if gpu:
        _executable(bin_dir / "nvidia-smi", "#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    env = {**os.environ, "PATH": str(bin_dir)}  # no system nvidia-smi: only the fake one, where asked for
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--version", "2.13.0", "--dry-run", "--timeout", "2", "--cpu-index", index,
         "--pip", str(_fake_pip(tmp_path, local_wheel)), "--platform", platform],
        capture_output=True, text=True, env=env, check=True, timeout=60)
    reason, command = done.stdout.splitlines()
    assert command.startswith("+ ")
    return reason, shlex.split(command[2:])[1:]  # the arguments after the pip command


class _TorchIndex(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path.endswith("/torch/") else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def reachable_index():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TorchIndex)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/whl/cpu"
    server.shutdown()


def test_makefile_installs_torch_through_the_script():
    makefile = (ROOT / "Makefile").read_text()
    assert "tools/install_torch.py --version" in makefile
    assert 'pip install -q "torch' not in makefile  # no second, unconditional torch install


def test_no_gpu_and_the_cpu_index_answers_installs_the_cpu_build_from_it(tmp_path, reachable_index):
    reason, args = _dry_run(tmp_path, index=reachable_index, local_wheel=True)
    assert args == ["install", "--progress-bar", "on", "torch==2.13.0+cpu", "--extra-index-url", reachable_index]
    assert reason.startswith("torch: no NVIDIA GPU: installing the CPU build")


def test_no_gpu_and_no_index_installs_the_local_cpu_wheel(tmp_path):
    reason, args = _dry_run(tmp_path, local_wheel=True)
    assert args == ["install", "--progress-bar", "on", "torch==2.13.0+cpu"]
    assert "local CPU wheel" in reason


def test_no_gpu_no_index_no_wheel_says_in_one_line_what_it_installs(tmp_path):
    reason, args = _dry_run(tmp_path)
    assert args == ["install", "--progress-bar", "on", "torch==2.13.0"]
    assert "CUDA build" in reason and CLOSED_INDEX in reason


def test_a_gpu_gets_the_cuda_build_even_beside_a_local_cpu_wheel(tmp_path, reachable_index):
    reason, args = _dry_run(tmp_path, gpu=True, index=reachable_index, local_wheel=True)
    assert args == ["install", "--progress-bar", "on", "torch==2.13.0,!=2.13.0+cpu"]
    assert "NVIDIA GPU answers" in reason


def test_outside_linux_pypi_torch_is_taken_as_is(tmp_path):
    _, args = _dry_run(tmp_path, platform="darwin")
    assert args == ["install", "--progress-bar", "on", "torch==2.13.0"]


def test_this_machines_choice_resolves_without_nvidia_packages(tmp_path):
    """The real pip resolves the command the script picks here; on a machine without a GPU no nvidia-* comes in."""
    pip = [sys.executable, "-m", "pip"]
    done = subprocess.run([sys.executable, str(SCRIPT), "--version", "2.13.0", "--dry-run", "--timeout", "5"],
                          capture_output=True, text=True, check=True, timeout=180)
    if "an NVIDIA GPU answers" in done.stdout:
        pytest.skip("this machine has a GPU: the CUDA build is the right choice")
    args = shlex.split(done.stdout.splitlines()[1][2:])[len(pip) + 1:]  # after `python -m pip install`
    report = tmp_path / "report.json"
    resolved = subprocess.run(pip + ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
                              + args, capture_output=True, text=True, timeout=300)
    if resolved.returncode != 0:
        pytest.skip(f"pip cannot resolve here (no network?): {resolved.stderr.strip().splitlines()[-1:]}")
    versions = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert versions["torch"].endswith("+cpu")
    names = list(versions)
    assert not [name for name in names if name.startswith("nvidia") or name == "triton"], names


def test_building_the_package_prints_no_setuptools_warning(tmp_path):
    """The install's build step (what `pip install -e .` runs) says nothing about the project's metadata: no
    deprecated license table, no package-data folder that is not a package (issue 31's install noise)."""
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
                           "-w", str(tmp_path / "wheel"), str(ROOT)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    # pip's own notes about this machine's local indexes ("WARNING: Location ... is ignored") are not the build's
    warned = [line for line in output.splitlines()
              if "warning" in line.lower() and not line.startswith("WARNING: Location")]
    assert warned == [], "\n".join(warned[:10])
