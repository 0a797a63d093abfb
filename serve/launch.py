"""Starting and stopping the service: Ray (local or an existing cluster), Serve's HTTP proxy, the application."""

import dataclasses
import logging
from pathlib import Path

import ray
from ray import serve

from .config import ServeConfig
from .deployments import APP_NAME, build_app
from .jobs import fail_interrupted
from .store import Store

log = logging.getLogger("tav.serve")


class StartError(ValueError):
    """A bad start-up argument; the message is one line saying what to do."""


def check_config(config: ServeConfig) -> ServeConfig:
    """Refuse before starting Ray: a base that does not load, a STORE that cannot be written, a bad SD folder."""
    from tav.runtime.manifest import EngineDirError, read_manifest

    try:
        manifest = read_manifest(config.base_dir)
    except EngineDirError as err:
        raise StartError(f"--base: {err}") from None
    try:
        Store(config.store).create()
    except OSError as err:
        raise StartError(f"--packs {config.store}: cannot create the store folders ({err.strerror}); pass a writable folder") from None
    sd_dir = config.sd_dir
    if sd_dir is None:  # the exporter records the base model's folder; use it when it is still there
        recorded = (manifest.raw.get("source") or {}).get("base_model")
        sd_dir = recorded if recorded and Path(recorded, "model_index.json").is_file() else None
        if sd_dir is None:
            log.warning("no --sd and the base's recorded SD folder is gone: POST /v1/videos (tuning) is disabled")
    elif not Path(sd_dir, "model_index.json").is_file():
        raise StartError(f"--sd {sd_dir}: not a diffusers SD folder (no model_index.json)")
    return dataclasses.replace(config, sd_dir=str(Path(sd_dir).absolute()) if sd_dir else None)


def start_ray(address: str | None, num_cpus: float | None = None, metrics_port: int | None = None) -> bool:
    """Connect to ``address``, or start a local Ray instance when it is None; True when we started it."""
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    # "local": a new instance even when a `ray start` cluster runs on this machine (that one needs --address).
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
             _metrics_export_port=metrics_port)
    return True


def fit_to_cluster(config: ServeConfig, replicas: int | None) -> ServeConfig:
    """One replica per GPU when the cluster has GPUs (and GPU tuning tasks), CPU replicas otherwise."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return dataclasses.replace(config, use_gpu=True, replicas=replicas or gpus, job_gpus=1.0)
    return dataclasses.replace(config, use_gpu=False, replicas=replicas or 1, job_gpus=0.0)


def deploy(config: ServeConfig, host: str, port: int) -> None:
    """Fail unfinished jobs of a previous run, start Serve's proxy on host:port, run the application (blocks until ready)."""
    interrupted = fail_interrupted(Store(config.store))
    if interrupted:
        log.warning("marked %d interrupted job%s failed: %s", len(interrupted), "" if len(interrupted) == 1 else "s",
                    ", ".join(interrupted))
    # The proxy's own end-to-end timeout backs up the ingress's per-call one (which answers 504 with a message).
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": config.limits.generate_timeout_s + 60})
    serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)


def stop(config: ServeConfig, started_ray: bool) -> None:
    """Drain and delete the application (replicas finish their requests first), then stop Ray if we started it.

    Tuning tasks belong to the ingress replica and die with it, so their jobs are marked failed here
    rather than left "running" until the next start.
    """
    try:
        if started_ray:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)  # on a shared cluster only our application goes
    finally:
        try:
            fail_interrupted(Store(config.store), "interrupted: tav-serve stopped while this job ran; upload the clip again")
        finally:
            if started_ray:
                ray.shutdown()
