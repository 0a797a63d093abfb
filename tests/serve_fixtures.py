"""A tav-serve process on the tiny model for the serving tests: one base, packs in a STORE, a real local Ray.

The service is the real console script in a subprocess (its own local Ray instance,
its HTTP proxy on a free port), sized by tav-serve's defaults to this machine (on 2 cores:
2 model replicas of 0.45 CPU beside one tuning job of 1 CPU), ONNX Runtime pinned to 1
thread, a small queue so 16 concurrent requests meet back-pressure.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tav.export.cli import main as tav_export

from export_fixtures import make_run_dir

FRAMES, HEIGHT, WIDTH = 3, 64, 64
TOKEN = "test-token-123"
READY_TIMEOUT_S = 240  # Ray + Serve + replica start on a loaded 2-core machine


def make_base(sd_dir, out) -> Path:
    tav_export(["--base", str(sd_dir), "--frames", str(FRAMES), "--height", str(HEIGHT), "--width", str(WIDTH),
                "--precision", "fp32", "--out", str(out), "--quiet"])
    return Path(out)


def make_pack(sd_dir, base_dir, work, out, seed: int) -> Path:
    """A RUN_DIR whose tuned tensors differ by ``seed`` (export_fixtures), packed for ``base_dir``."""
    run_dir = make_run_dir(sd_dir, Path(work) / f"run-{seed}", FRAMES, HEIGHT, WIDTH, seed=seed)
    tav_export(["--weights", str(run_dir), "--pack-for", str(base_dir), "--out", str(out), "--quiet"])
    return Path(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``tav-serve`` in a subprocess; its stdout+stderr (replica log lines included) go to ``log``."""

    def __init__(self, base_dir, store, sd_dir, log: Path, replicas: int = 2, extra=()):
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        command = [str(Path(sys.executable).parent / "tav-serve"), "--base", str(base_dir), "--packs", str(store),
                   "--sd", str(sd_dir), "--port", str(self.port), "--replicas", str(replicas),
                   "--ort-threads", "1",  # CPUs: the defaults (replicas share what the ingress and one job leave)
                   "--max-ongoing", "2", "--max-queued", "4", "--resident-videos", "2", "--timeout", "120",
                   "--max-upload-mb", "1", "--metrics-port", str(self.metrics_port), *extra]
        env = dict(os.environ, TAV_SERVE_TOKEN=TOKEN, OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0")
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tav-serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"tav-serve not ready after {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def replica_pids(self, deployment: str = "VideoModel") -> list:
        """Process ids of this service's replicas of ``deployment`` (Ray titles them ray::ServeReplica:<app>:<name>)."""
        import psutil

        pids = []
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if f"ServeReplica:tav:{deployment}" in " ".join(child.cmdline()):
                    pids.append(child.pid)
            except psutil.Error:
                continue
        return pids

    def stop(self) -> int:
        """SIGTERM (tav-serve drains and shuts Ray down), SIGKILL of its session if that hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode
