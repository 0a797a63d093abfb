"""The Ray Serve application: a FastAPI ingress deployment and a model deployment multiplexed by video id.

    HTTP -> Ingress (1 replica, async, light) --handle.options(multiplexed_model_id=video_id)--> VideoModel (N replicas)

Each VideoModel replica loads the base ENGINE_DIR once and keeps an LRU of resident packs
(``@serve.multiplexed``); Ray routes a video's requests to replicas already holding it.
On CUDA each replica takes one GPU (``num_gpus: 1``), so N replicas = N GPUs across the
cluster; on CPU, ``replica_cpus`` each.
"""

import asyncio
import logging
import sys
import time

import ray
from ray import serve

from .config import ServeConfig
from .encoding import MEDIA_TYPES, encode_frames
from .generation_job import generate_into_store
from .http_app import create_app
from .ingress import IngressService
from .preflight import INGRESS_CPUS, check_config, plan_resources, prepare_store
from .residency import load_video_into
from .store import Store

APP_NAME = "tav"
EVICTION_RETRIES = 5
# Serve's own logs at WARNING and without its access line: the ingress writes one JSON line per request
# (tav.serve.http_app), so Ray's would be a second line for every request.
SERVE_LOGGING = {"log_level": "WARNING", "enable_access_log": False}


class VideoModelReplica:
    """One base pipeline and its resident videos; the multiplexed loader is added by ``build_app``."""

    def __init__(self, config: ServeConfig):
        from tav.runtime import VideoPipeline

        device = "cuda" if config.use_gpu else "cpu"
        # Ray's multiplexing LRU decides which packs a replica keeps; the runtime's cap, the same size, bounds
        # the device copies, counting evicted videos that requests still sample until those requests end.
        self.pipe = VideoPipeline.load(config.base_dir, backend=config.backend, device=device,
                                       max_resident_videos=config.limits.resident_videos_per_replica,
                                       ort_threads=config.ort_threads or None)
        self.store = Store(config.store)
        # Which Ray node answered (X-TAV-Node): an opaque id prefix, for operators correlating with `ray status`.
        self.node = ray.get_runtime_context().get_node_id()[:12]

    async def _load_video(self, video_id: str):
        return await asyncio.to_thread(load_video_into, self.pipe, video_id, self.store)

    async def _with_resident_video(self, work):
        """``work(video)`` on a worker thread, with this request's video resident (the routing key names it)."""
        video_id = serve.get_multiplexed_model_id()  # the routing key is the only source of the video id
        from tav.runtime import UnknownVideoError

        for _ in range(EVICTION_RETRIES):
            video = await self.resident_video(video_id)
            try:  # once the call has begun, eviction waits for it (the runtime counts its users)
                return await asyncio.to_thread(work, video)
            except UnknownVideoError:  # Ray's LRU evicted it between handing it out and the call's start: load again
                continue
        raise RuntimeError(f"video {video_id!r} was evicted {EVICTION_RETRIES} times before it could run; "
                           "raise --resident-videos")

    async def generate(self, sampling: dict, fmt: str, fps: float) -> dict:
        result = await self._with_resident_video(lambda video: video.generate(**sampling))
        started = time.perf_counter()
        body = await asyncio.to_thread(encode_frames, result.frames, fmt, fps)
        timings = {**result.timings, "encode": time.perf_counter() - started}
        return {"video_id": serve.get_multiplexed_model_id(), "body": body, "media_type": MEDIA_TYPES[fmt],
                "timings": timings, "shape": list(result.frames.shape), "node": self.node}

    async def generate_job(self, job_id: str, sampling: dict, fmt: str, fps: float) -> dict:
        """An async generate: progress in the job record, the video in STORE/results (tav.serve.generation_job)."""
        return await self._with_resident_video(
            lambda video: generate_into_store(video, self.store, job_id, sampling, fmt, fps))

    def ready(self) -> bool:
        return True

    def __del__(self):
        pipe = getattr(self, "pipe", None)
        if pipe is not None:
            pipe.close()


class IngressReplica:
    """Holds the IngressService; the FastAPI app is built per replica around it (late-bound ingress)."""

    def __init__(self, config: ServeConfig, model_handle):
        _log_lines_to_stderr()
        self.service = IngressService(config, model_handle)

    def __serve_build_asgi_app__(self):
        return create_app(self.service)


def _log_lines_to_stderr() -> None:
    """tav.serve's log lines (one JSON line per request) to the replica's stderr, which Ray streams to the driver."""
    logger = logging.getLogger("tav.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def build_app(config: ServeConfig):
    """The bound Serve application for ``serve.run``: deployment options come from ``config``."""
    limits = config.limits

    class VideoModel(VideoModelReplica):
        @serve.multiplexed(max_num_models_per_replica=limits.resident_videos_per_replica)
        async def resident_video(self, video_id: str):
            return await self._load_video(video_id)

    model_actor = {"num_cpus": config.replica_cpus, "num_gpus": config.replica_gpus if config.use_gpu else 0}
    model = serve.deployment(
        VideoModel, name="VideoModel", num_replicas=config.replicas, ray_actor_options=model_actor,
        max_ongoing_requests=limits.max_ongoing_per_replica, max_queued_requests=limits.max_queued,
        graceful_shutdown_wait_loop_s=1, graceful_shutdown_timeout_s=limits.drain_timeout_s,
        health_check_period_s=5, health_check_timeout_s=30, logging_config=SERVE_LOGGING,
    )

    class Ingress(IngressReplica):
        pass

    ingress = serve.deployment(
        serve.ingress()(Ingress), name="Ingress", num_replicas=1, ray_actor_options={"num_cpus": INGRESS_CPUS},
        max_ongoing_requests=256, graceful_shutdown_wait_loop_s=1, graceful_shutdown_timeout_s=limits.drain_timeout_s,
        logging_config=SERVE_LOGGING,
    )
    return ingress.bind(config, model.bind(config))


def app_from_args(args: dict):
    """Entry point for Serve config files and KubeRay's RayService.

    ``import_path: tav.serve.deployments:app_from_args``.

    ``args`` holds ServeConfig's fields (``base_dir``, ``store``, ``sd_dir``, ``replicas``, ...) and optionally
    ``limits`` with Limits' fields. The same start-up as ``tav-serve`` (tav.serve.preflight): the config is
    checked, sized to the cluster Ray is connected to (or refused in one line), and unfinished jobs are failed.
    """
    import ray

    from .config import Limits

    fields = dict(args)
    limits = Limits(**fields.pop("limits", {}))
    replicas = fields.pop("replicas", None)
    config = check_config(ServeConfig(**fields, limits=limits))
    # Serve builds the application inside the cluster (Ray is up); a bare import (e.g. `serve build`) has no
    # cluster to fit.
    config = plan_resources(config, ray.cluster_resources() if ray.is_initialized() else None, replicas)
    prepare_store(config)
    return build_app(config)
