"""Start-up checks of tav-serve, shared by the CLI and ``app_from_args`` (KubeRay): no Ray import here.

Three steps before anything is deployed:
- ``check_config``: the base loads, STORE is writable, the SD folder (for tuning) is one;
- ``plan_resources``: what the replicas, the ingress and one tuning job reserve, against what the
  cluster has (``ray.cluster_resources()``, passed in): fit, or refuse in one line naming the
  numbers and the flag to change. Ray would otherwise leave an unschedulable replica pending
  forever and only log a warning every 30 s;
- ``prepare_store``: jobs a previous run left unfinished are failed, and their files swept.
"""

import dataclasses
import errno
import importlib.util
import logging
import math
import os
import socket
import sys
from pathlib import Path

from .config import ServeConfig
from .jobs import fail_interrupted, sweep_orphans
from .store import Store

log = logging.getLogger("tav.serve")

INGRESS_CPUS = 0.1  # the FastAPI ingress replica: light async work, no model
MIN_REPLICA_CPUS = 0.1  # below this a CPU replica's share is too small to be worth scheduling
DEFAULT_JOB_CPUS = 1.0
TUNING_MODULES = ("torch", "diffusers", "onnx")  # what a tuning job imports beyond the service
EPS = 1e-9  # Ray rounds resources to 1e-4; compare sums with a little slack


LOOPBACK = "127.0.0.1"
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class StartError(ValueError):
    """A bad start-up argument or a deployment that cannot fit; the message is one line saying what to do."""


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived during start-up (or while serving): unwind and stop."""


def bind_ray_to_loopback() -> None:
    """Call before Ray is imported: a local Ray instance then listens on 127.0.0.1 only.

    Ray reads this switch (meant for laptops) at import and then gives its node the loopback
    address: the GCS, raylet, object manager, workers and agents bind there instead of all
    interfaces (checked with `ss -ltnp` on Ray 2.60). An operator who wants other nodes to
    join passes --ray-host.
    """
    if "ray" in sys.modules:
        raise RuntimeError("bind_ray_to_loopback must run before Ray is imported")
    os.environ.setdefault(LOCAL_ONLY_ENV, "0")


def check_ports(host: str, port: int, ray_host: str, metrics_port: int | None) -> None:
    """--port free on --host (and --metrics-port on --ray-host): found out now, not once Ray and the replicas run."""
    if metrics_port is not None and metrics_port == port and ray_host == host:
        raise StartError(f"--metrics-port {metrics_port} is --port too; pass two different ports")
    check_free(host, port, "--port", "--host")
    if metrics_port is not None:
        check_free(ray_host, metrics_port, "--metrics-port", "--ray-host")


def check_free(host: str, port: int, flag: str, host_flag: str) -> None:
    """Bind ``host``:``port`` for a moment, as the server will (SO_REUSEADDR: a port in TIME_WAIT counts as free)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise StartError(f"{host_flag} {host} cannot be resolved ({getattr(err, 'strerror', None) or err}); "
                         "pass an address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise StartError(f"{flag} {port} is in use on {host}; pass a free port, or stop what listens "
                                 "there") from None
            if err.errno == errno.EACCES:
                raise StartError(f"{flag} {port} needs privileges this process lacks (ports below 1024); "
                                 "pass a port from 1024 up") from None
            raise StartError(f"{host_flag} {host} cannot be listened on ({err.strerror or err}); "
                             "pass an address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None


def check_config(config: ServeConfig) -> ServeConfig:
    """Refuse before starting Ray: a base that does not load (or is no base), a STORE that cannot be written, a bad
    SD folder."""
    from tav.runtime.manifest import EngineDirError, read_manifest

    try:
        manifest = read_manifest(config.base_dir)
    except EngineDirError as err:
        raise StartError(f"--base: {err}") from None
    if manifest.base is None:
        raise StartError(f"--base {config.base_dir} is a full ENGINE_DIR (one tuned video), not a base: replicas load "
                         "packs onto a base; pass one made with tav-export --base MODEL")
    try:
        Store(config.store).create()
    except OSError as err:
        raise StartError(f"--packs {config.store}: cannot create the store folders ({err.strerror}); "
                         "pass a writable folder") from None
    sd_dir = config.sd_dir
    if sd_dir is None:  # the exporter records the base model's folder; use it when it is still there
        source = manifest.raw.get("source")
        recorded = source.get("base_model") if isinstance(source, dict) else None
        sd_dir = recorded if isinstance(recorded, str) and Path(recorded, "model_index.json").is_file() else None
        if sd_dir is None:
            log.warning("no --sd and the base's recorded SD folder is gone: POST /v1/videos (tuning) is disabled")
    elif not Path(sd_dir, "model_index.json").is_file():
        raise StartError(f"--sd {sd_dir}: not a diffusers SD folder (no model_index.json)")
    missing = [m for m in TUNING_MODULES if importlib.util.find_spec(m) is None] if sd_dir else []
    if missing:  # a lean serving install: serve the packs, refuse uploads with 501 rather than fail every job
        log.warning("tuning jobs need the export extra (%s missing): POST /v1/videos (tuning) is disabled; "
                    "pip install 'tav-runtime[export]' to enable it", ", ".join(missing))
        sd_dir = None
    return dataclasses.replace(config, sd_dir=str(Path(sd_dir).absolute()) if sd_dir else None)


def plan_resources(config: ServeConfig, cluster: dict | None, replicas: int | None = None) -> ServeConfig:
    """Size the deployment to ``cluster`` (Ray's resource totals) so every replica and one tuning job can run.

    GPU cluster: one replica per GPU, and with tuning on, one GPU kept for jobs (on a single GPU,
    replica and job share it, half each). CPU cluster: ``replica_cpus``/``job_cpus`` left as None are
    filled in: a job takes 1 CPU (less on a 1-CPU machine) and the replicas share the rest equally.
    Given values are checked as given. ``cluster`` None (no Ray to ask): 1 CPU each, nothing checked.
    """
    if cluster is None:
        log.warning("no Ray cluster to size the deployment against: 1 CPU per replica and per tuning job, unchecked")
        return dataclasses.replace(config, replicas=replicas or config.replicas,
                                   replica_cpus=config.replica_cpus or 1.0,
                                   job_cpus=config.job_cpus or DEFAULT_JOB_CPUS)
    cpus, gpus = float(cluster.get("CPU", 0)), int(cluster.get("GPU", 0))
    tuning = config.sd_dir is not None
    if gpus:
        config = _plan_gpu(config, gpus, replicas, tuning)
    else:
        config = dataclasses.replace(config, use_gpu=False, replicas=replicas or 1, job_gpus=0.0, replica_gpus=0.0)
    job_cpus = config.job_cpus
    if job_cpus is None:
        job_cpus = min(DEFAULT_JOB_CPUS, cpus / 2) if tuning else DEFAULT_JOB_CPUS
    job_reserved = job_cpus if tuning else 0.0
    replica_cpus = config.replica_cpus
    if replica_cpus is None:
        spare = cpus - INGRESS_CPUS - job_reserved
        # 0.01 steps read better; 1e-6: float noise
        replica_cpus = math.floor(spare / config.replicas * 100 + 1e-6) / 100
        if config.use_gpu:
            replica_cpus = min(1.0, replica_cpus)  # a GPU replica's CPU work is feeding the GPU
        if replica_cpus < MIN_REPLICA_CPUS:
            raise StartError(_refusal(config.replicas, replica_cpus, job_reserved, cpus, "CPUs left per replica",
                                      "lower --replicas or --job-cpus, or give Ray more CPUs (--num-cpus)"))
    needed = INGRESS_CPUS + config.replicas * replica_cpus + job_reserved
    if needed > cpus + EPS:
        raise StartError(_refusal(config.replicas, replica_cpus, job_reserved, cpus, "CPUs each",
                                  "lower --replicas, --replica-cpus or --job-cpus, or give Ray more CPUs (--num-cpus)"))
    return dataclasses.replace(config, replica_cpus=replica_cpus, job_cpus=job_cpus)


def _plan_gpu(config: ServeConfig, gpus: int, replicas: int | None, tuning: bool) -> ServeConfig:
    if tuning and gpus == 1:
        replica_gpus, job_gpus, default_replicas = 0.5, 0.5, 1
    else:
        replica_gpus, job_gpus, default_replicas = 1.0, 1.0 if tuning else 0.0, gpus - 1 if tuning else gpus
    count = replicas or default_replicas
    needed = count * replica_gpus + job_gpus
    if needed > gpus + EPS:
        raise StartError(f"{count} replica(s) x {replica_gpus:g} GPU + {job_gpus:g} GPU for a tuning job "
                         f"= {needed:g} GPUs, "
                         f"but the cluster has {gpus}; lower --replicas (or start without --sd: no tuning)")
    return dataclasses.replace(config, use_gpu=True, replicas=count, replica_gpus=replica_gpus, job_gpus=job_gpus)


def _refusal(replicas, replica_cpus, job_cpus, cpus, what, fix) -> str:
    return (f"{replicas} replica(s) x {replica_cpus:g} {what} + ingress {INGRESS_CPUS:g} + one tuning job {job_cpus:g} "
            f"= {INGRESS_CPUS + replicas * replica_cpus + job_cpus:g} CPUs, but the cluster has {cpus:g}; {fix}")


def prepare_store(config: ServeConfig, reason: str | None = None) -> list:
    """Fail the jobs a previous run left unfinished and sweep their files; returns the failed job ids."""
    store = Store(config.store)
    failed = fail_interrupted(store) if reason is None else fail_interrupted(store, reason)
    if failed:
        log.warning("marked %d interrupted job(s) failed: %s", len(failed), ", ".join(failed))
    swept = sweep_orphans(store)
    if swept:
        log.warning("removed %d leftover upload/work folder(s) of finished jobs", swept)
    return failed
