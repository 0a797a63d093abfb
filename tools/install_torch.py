"""Install the PyTorch build this machine can use: `make install` runs it before the project's extras.

An unpinned `pip install torch==X` on Linux resolves PyPI's CUDA build (several GB of nvidia-* wheels), which a
machine without an NVIDIA GPU never uses. So, in order:

1. an NVIDIA GPU answers `nvidia-smi -L`: the CUDA build (PyPI's default wheel on Linux);
2. no GPU, PyTorch's CPU wheel index answers: ``torch==X+cpu`` from that index;
3. no GPU, a local CPU wheel is in pip's find-links (the project's own machines carry one): that wheel;
4. otherwise: the default build, with one line saying what is being installed and why.

The version pin ``X+cpu`` names the CPU build exactly, so no index can answer it with a CUDA one.
``--dry-run`` prints the decision and the pip command without running it (tests/test_install_torch.py).
Standard library only: it runs before anything is installed.
"""

import argparse
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def has_nvidia_gpu() -> bool:
    """True when `nvidia-smi -L` is on PATH and lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "GPU" in done.stdout


def index_answers(index_url: str, timeout_s: float) -> bool:
    """True when the index's page for torch answers 200 within timeout_s (a closed network fails fast)."""
    url = index_url.rstrip("/") + "/torch/"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def local_cpu_wheel(pip: list, spec: str) -> bool:
    """True when pip's find-links alone (no index) hold a wheel for `spec` that fits this interpreter.

    Asking pip itself keeps its configuration (find-links in pip.conf or PIP_FIND_LINKS) and its tag
    matching (Python version, platform) in one place.
    """
    probe = pip + ["install", "--dry-run", "--no-deps", "--ignore-installed", "--no-index", "--quiet", spec]
    try:
        return subprocess.run(probe, capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose(version: str, pip: list, cpu_index: str, timeout_s: float, platform: str) -> tuple[str, list]:
    """The reason (one line) and the pip install arguments for this machine."""
    cpu_spec = f"torch=={version}+cpu"
    if not platform.startswith("linux"):
        return (f"{platform}: PyPI's torch {version} for this platform is the one to use",
                [f"torch=={version}"])
    if has_nvidia_gpu():
        # Excluding +cpu keeps a local CPU wheel in find-links from shadowing PyPI's CUDA build.
        return (f"an NVIDIA GPU answers nvidia-smi: installing the CUDA build of torch {version} (several GB)",
                [f"torch=={version},!={version}+cpu"])
    if index_answers(cpu_index, timeout_s):
        return (f"no NVIDIA GPU: installing the CPU build of torch {version} from {cpu_index}",
                [cpu_spec, "--extra-index-url", cpu_index])
    if local_cpu_wheel(pip, cpu_spec):
        return (f"no NVIDIA GPU and {cpu_index} does not answer: installing the local CPU wheel of torch {version}",
                [cpu_spec])
    return (f"no NVIDIA GPU, but neither {cpu_index} nor a local CPU wheel answers: installing torch {version} "
            "from your index, which on Linux is the CUDA build (several GB; it runs on the CPU too)",
            [f"torch=={version}"])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Install the PyTorch build this machine can use (CPU without a GPU).")
    parser.add_argument("--version", required=True, help="the torch release, e.g. 2.13.0")
    parser.add_argument("--pip", default=None,
                        help="the pip command to run (default: this interpreter's `python -m pip`)")
    parser.add_argument("--cpu-index", default=CPU_INDEX, help="PyTorch's CPU wheel index (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the index (default: 10)")
    parser.add_argument("--platform", default=sys.platform, help=argparse.SUPPRESS)  # tests fake another OS
    parser.add_argument("--dry-run", action="store_true", help="print the decision and the command, install nothing")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    pip = shlex.split(args.pip) if args.pip else [sys.executable, "-m", "pip"]
    reason, install_args = choose(args.version, pip, args.cpu_index, args.timeout, args.platform)
    # Progress on: the download is hundreds of MB, and a silent pip reads as a hang.
    command = pip + ["install", "--progress-bar", "on"] + install_args
    print(f"torch: {reason}", flush=True)
    print("+ " + shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
