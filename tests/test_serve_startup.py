"""tav-serve's start-up and stop (issue 19, item 2): sized to the cluster, a deadline, signals at any moment.

The arithmetic is tested without Ray; one real service (default flags, --replicas 2, on this
machine's CPUs) shows it becomes ready, listens on the loopback address only (besides what Ray
Serve hard-codes, see docs/SECURITY.md) and stops on SIGTERM within 20 s leaving no process;
another takes SIGTERM during start-up.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray.serve", reason="tav-serve needs the [serve] extra (make install adds it)")
psutil = pytest.importorskip("psutil")

import httpx  # noqa: E402

from tav.serve.config import ServeConfig  # noqa: E402
from tav.serve.preflight import INGRESS_CPUS, StartError, plan_resources  # noqa: E402

from fixtures.serve_process import free_port  # noqa: E402

STOP_WITHIN_S = 20
READY_OR_REFUSED_S = 60


def planned(cluster, replicas=None, **fields):
    return plan_resources(ServeConfig(base_dir="b", store="s", **{"sd_dir": "sd", **fields}), cluster, replicas)


def test_defaults_fit_one_job_beside_the_replicas_on_two_cpus():
    one = planned({"CPU": 2.0})
    assert (one.replicas, one.job_cpus) == (1, 1.0) and INGRESS_CPUS + one.replica_cpus + one.job_cpus <= 2.0
    two = planned({"CPU": 2.0}, replicas=2)
    assert two.replica_cpus == pytest.approx(0.45) and INGRESS_CPUS + 2 * two.replica_cpus + two.job_cpus <= 2.0
    no_tuning = planned({"CPU": 2.0}, replicas=2, sd_dir=None)  # nothing kept for jobs
    assert no_tuning.replica_cpus == pytest.approx(0.95)


def test_a_deployment_that_cannot_fit_is_refused_in_one_line_naming_numbers_and_flags():
    with pytest.raises(StartError) as err:
        planned({"CPU": 2.0}, replicas=2, replica_cpus=1.0, job_cpus=1.0)
    message = str(err.value)
    assert "\n" not in message and "3.1 CPUs" in message and "has 2" in message and "--replica-cpus" in message
    with pytest.raises(StartError, match="CPUs left per replica.*--replicas"):
        planned({"CPU": 2.0}, replicas=20)


def test_gpus_keep_one_for_tuning_or_share_a_single_one():
    four = planned({"CPU": 8.0, "GPU": 4.0})
    assert (four.use_gpu, four.replicas, four.replica_gpus, four.job_gpus) == (True, 3, 1.0, 1.0)
    one = planned({"CPU": 8.0, "GPU": 1.0})
    assert (one.replicas, one.replica_gpus, one.job_gpus) == (1, 0.5, 0.5)
    assert planned({"CPU": 8.0, "GPU": 4.0}, sd_dir=None).replicas == 4
    with pytest.raises(StartError, match="5 GPUs, but the cluster has 4; lower --replicas"):
        planned({"CPU": 8.0, "GPU": 4.0}, replicas=4)


def test_start_up_module_imports_no_ray_and_serve_has_no_import_cycle():
    code = ("import sys; import tav.serve.preflight, tav.serve.cli; "
            "assert 'ray' not in sys.modules, 'preflight/cli imported Ray'; "
            "import tav.serve.deployments; assert 'tav.serve.launch' not in sys.modules, 'deployments imports launch'")
    subprocess.run([sys.executable, "-c", code], check=True)


class Service:
    """tav-serve with its default sizing (the machine's CPUs), in its own session.

    Every process it starts is tracked."""

    def __init__(self, base, store, log, *extra):
        self.port = free_port()
        self.log = log
        command = [str(os.path.join(os.path.dirname(sys.executable), "tav-serve")), "--base", str(base), "--packs",
                   str(store), "--port", str(self.port), "--ort-threads", "1", *extra]
        self.proc = subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                                     env=dict(os.environ, OMP_NUM_THREADS="1"))
        self.seen = set()

    def track(self) -> None:
        try:
            self.seen |= {child.pid for child in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.Error:
            pass

    def wait(self, seconds, until) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.track()
            if until():
                return True
            time.sleep(0.3)
        return False

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def terminate_and_time(self) -> float:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return time.monotonic() - started

    def leftovers(self) -> list:
        alive = []
        for pid in self.seen:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {psutil.Process(pid).name()}")
            except psutil.Error:
                continue
        return alive

    def text(self) -> str:
        return open(self.log, errors="replace").read()


@pytest.fixture(scope="module")
def base_and_store(base_engine, tmp_path_factory):
    """The suite's shared base (tav-serve only reads it) and a store of this module's own."""
    return base_engine, tmp_path_factory.mktemp("startup") / "store"


def test_two_replicas_with_default_flags_start_listen_on_loopback_and_stop_on_sigterm(base_and_store, tmp_path):
    base, store = base_and_store
    service = Service(base, store, tmp_path / "serve.log", "--replicas", "2")
    started = time.monotonic()
    ready = service.wait(READY_OR_REFUSED_S + 120, service.ready)  # slack for a loaded machine; the bound is below
    took = time.monotonic() - started
    if not ready:  # the other acceptable outcome: a one-line refusal within 60 s
        service.proc.wait(timeout=60)
        errors = [line for line in service.text().splitlines() if line.startswith("tav-serve: error:")]
        assert service.proc.returncode != 0 and len(errors) == 1 and took <= READY_OR_REFUSED_S, service.text()[-3000:]
        return
    listening = set()
    for pid in service.seen:
        try:
            listening |= {(c.laddr.ip, psutil.Process(pid).name()) for c in psutil.Process(pid).net_connections("inet")
                          if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            continue
    # Ray Serve 2.60 binds each replica's inter-deployment gRPC server to [::] (hard-coded; docs/SECURITY.md).
    exposed = {(ip, name) for ip, name in listening if ip not in ("127.0.0.1", "::ffff:127.0.0.1")
               and not (ip == "::" and name.startswith("ray::ServeReplica"))}
    assert not exposed, f"listening beyond the loopback address: {exposed}"
    stop_s = service.terminate_and_time()
    assert stop_s <= STOP_WITHIN_S and service.proc.returncode == 143, (stop_s, service.text()[-3000:])
    assert not service.leftovers(), service.leftovers()


def test_sigterm_during_start_up_stops_everything_within_20_s(base_and_store, tmp_path):
    base, store = base_and_store
    service = Service(base, store, tmp_path / "serve.log")
    # Signal once Ray's processes exist (start-up under way, nothing ready yet): the hardest moment to stop cleanly.
    service.wait(60, lambda: len(service.seen) >= 3 and not service.ready())
    assert service.proc.poll() is None, service.text()[-3000:]
    stop_s = service.terminate_and_time()
    assert stop_s <= STOP_WITHIN_S, (stop_s, service.text()[-3000:])
    assert service.proc.returncode == 143, service.text()[-3000:]
    assert not service.leftovers(), service.leftovers()
    assert "Traceback" not in service.text()


@pytest.mark.parametrize("flags, message", [
    (["--replicas", "2", "--replica-cpus", "64"], "CPUs, but the cluster has"),  # cannot fit: refused before deploying
    (["--start-timeout", "0.5"], "not ready after 0.5 s (--start-timeout)"),  # deadline: Ray's reason, then a stop
])
def test_a_start_that_cannot_succeed_ends_in_one_line_and_leaves_nothing(base_and_store, tmp_path, flags, message):
    base, store = base_and_store
    service = Service(base, store, tmp_path / "serve.log", *flags)
    service.wait(READY_OR_REFUSED_S, lambda: False)  # tracks its processes until it exits
    assert service.proc.poll() is not None, "still running after 60 s"
    errors = [line for line in service.text().splitlines() if line.startswith("tav-serve: error:")]
    assert service.proc.returncode == 1 and len(errors) == 1 and message in errors[0], service.text()[-3000:]
    assert "Traceback" not in service.text()
    time.sleep(1)
    assert not service.leftovers(), service.leftovers()
