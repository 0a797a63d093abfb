"""The settings of one tav-serve deployment: one small dataclass, passed to every Ray actor and task."""

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    """Request limits; past them a request gets 413 (too large), 503 (busy) or 504 (too slow) instead of harm.

    Value ranges (prompt length, steps, ...) are fixed in tav.serve.schemas.
    """

    max_upload_bytes: int = 200 * 1024 * 1024
    max_ongoing_per_replica: int = 2  # concurrent generations interleave step by step on one engine stream
    max_queued: int = 8  # per model deployment handle; past it: 503 with Retry-After
    retry_after_s: int = 5
    generate_timeout_s: float = 600.0
    start_timeout_s: float = 300.0  # replicas not running by then: one-line error and a clean stop
    drain_timeout_s: float = 10.0  # on SIGTERM, requests still running after this are cut off (stop within 20 s)
    resident_videos_per_replica: int = 8  # @serve.multiplexed LRU size


@dataclass(frozen=True)
class ServeConfig:
    base_dir: str  # the base ENGINE_DIR every replica loads
    store: str  # STORE: packs/, jobs/, uploads/; readable (and, for jobs, writable) by every node
    sd_dir: str | None = None  # the base SD folder the tuner starts from; None: tuning jobs are refused
    token: str | None = None  # bearer token; None: no authentication
    replicas: int = 1
    use_gpu: bool = False  # one replica per GPU (num_gpus=1) and GPU tuning tasks
    replica_cpus: float | None = None  # None: tav.serve.preflight.plan_resources shares out what the cluster has
    job_cpus: float | None = None  # None: 1 CPU (half the CPUs on a 1-CPU machine)
    replica_gpus: float = 0.0  # set by plan_resources: 1 per GPU replica, 0.5 when one GPU is shared with tuning
    job_gpus: float = 0.0  # set by plan_resources: a tuning task's GPU share beside the replicas'
    backend: str = "auto"
    ort_threads: int = 0  # 0: ONNX Runtime's default (all cores); small replicas on shared CPUs want 1
    tune_device: str = "auto"
    limits: Limits = field(default_factory=Limits)


def token_from_env(token: str | None) -> str | None:
    """--token wins over TAV_SERVE_TOKEN; an empty value means no token."""
    return (token if token is not None else os.environ.get("TAV_SERVE_TOKEN")) or None
