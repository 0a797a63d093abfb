"""What each HTTP route does, on the ingress replica: checks, routing by video id; no model work here
(tuning jobs: tav.serve.job_desk).

Generation goes to the model deployment through its handle with
``.options(multiplexed_model_id=video_id)``: Ray Serve sends it to a replica that already
holds that video's pack when one exists (and otherwise to one that loads it). Overload and
replica loss come back as 503 with Retry-After, never as a hang: the handle's
``max_queued_requests`` bounds the queue, a blocking generate has --timeout, and an async one
is a job its client polls and may cancel.
"""

import asyncio
import json
import logging
import time

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError

from .config import ServeConfig
from .errors import ApiError, busy, client_message, root_cause
from .ids import BadId, check_video_id, new_job_id
from .job_desk import JobDesk
from .job_view import public_view
from .jobs import JobAbandoned, create_job, discard_job, fail_interrupted, fail_job
from .metrics import RequestMetrics
from .residency import VideoNotFound, VideoUnusable
from .schemas import GenerateRequest, TuneOptions
from .store import Store

log = logging.getLogger("tav.serve")

BACK_PRESSURE_WAIT_S = 0.5  # an async generate waits this long for Ray Serve to refuse it (full queue) before 202

REPLICA_GONE = (ActorDiedError, ActorUnavailableError, RayActorError, DeploymentUnavailableError)
SERVER_PATH_KEYS = ("weights", "video", "pretrained_model_path", "pack")


def without_paths(meta):
    """Pack metadata as clients see it: the server's file paths (tuning folders, uploads) left out."""
    if isinstance(meta, dict):
        return {k: without_paths(v) for k, v in meta.items() if k not in SERVER_PATH_KEYS}
    return meta


class IngressService:
    def __init__(self, config: ServeConfig, model_handle):
        self.config, self.model = config, model_handle
        self.store = Store(config.store).create()
        self.metrics = RequestMetrics()
        self._base = None
        self.jobs = JobDesk(config, self.store, self.base, self._video_id)
        # One ingress replica, and its tuning tasks die with it: an unfinished job found now was this ingress's
        # before Ray restarted it (at a tav-serve start, preflight.prepare_store already failed them).
        orphans = fail_interrupted(self.store, "the tav-serve ingress restarted")
        if orphans:
            log.warning("ingress restart: marked %d orphaned job(s) failed: %s", len(orphans), ", ".join(orphans))
        self._max_steps = None
        self._step_seconds = None  # denoise seconds a step, from the last finished generation: 504's advice
        self._generations = {}  # job id -> the task finishing an async generate

    # -- videos ---------------------------------------------------------------------------------

    def _video_id(self, video_id: str) -> str:
        try:
            return check_video_id(video_id)
        except BadId as err:
            raise ApiError(422, str(err)) from None

    def _known_video(self, video_id: str) -> str:
        video_id = self._video_id(video_id)
        if not self.store.has_video(video_id):
            known = self.store.video_ids()
            listing = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "") if known else "none yet"
            raise ApiError(404, f"no video {video_id!r}; known videos: {listing} (GET /v1/videos)")
        return video_id

    async def list_videos(self) -> list:
        return await asyncio.to_thread(lambda: [self._metadata(v) for v in self.store.video_ids()])

    async def describe_video(self, video_id: str) -> dict:
        video_id = self._known_video(video_id)
        return await asyncio.to_thread(self._metadata, video_id)

    def _metadata(self, video_id: str) -> dict:
        from tav.runtime import read_pack_metadata

        path = self.store.pack_path(video_id)
        try:
            stat = path.stat()
            meta = {"video_id": video_id, "usable": True, "bytes": stat.st_size,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime)),
                    "preview": (f"/v1/videos/{video_id}/preview" if self.store.preview_path(video_id).is_file()
                                else None),
                    "metadata": without_paths(read_pack_metadata(path))}
            # A header that parses but holds what the response encoder refuses (NaN, Infinity) is as unusable as
            # a broken one: checked with the same rule, so one pack never fails the listing.
            json.dumps(meta, allow_nan=False)
            return meta
        except Exception as err:
            # any broken pack (removed meanwhile, malformed header): listed and marked, never a 500
            log.warning("video %s is unusable: %r", video_id, err)
            return {"video_id": video_id, "usable": False, "error": client_message(err)}

    def describe_service(self) -> dict:
        """What a client needs before its first request: the base's fixed frames and size, whether it tunes, and
        the request fields with their defaults (the same schemas that check the requests)."""
        base = self.base()
        return {"base": {"frames": base.frames, "height": base.height, "width": base.width,
                         "precision": base.precision},
                "tuning": self.config.sd_dir is not None,
                "max_upload_bytes": self.config.limits.max_upload_bytes,
                "defaults": {"generate": GenerateRequest.defaults(), "tune": TuneOptions.defaults()}}

    async def result(self, job_id: str) -> tuple:
        """An async generate's video: (bytes, media type); 404 before it is done, 409 when it failed."""
        record = await self.jobs.record(job_id)
        job_id = record["job_id"]
        if record.get("kind") != "generate":
            raise ApiError(404, f"job {job_id} is a tuning job: its result is a video, GET /v1/videos/"
                                f"{record['video_id']}")
        if record["state"] != "done":
            status = 409 if record["state"] in ("failed", "cancelled") else 404
            raise ApiError(status, f"job {job_id} is {record['state']}"
                                   + (f": {record['error']}" if record.get("error") else "; poll /v1/jobs/" + job_id))
        path = self.store.result_path(job_id, record["result"]["format"])
        return await asyncio.to_thread(path.read_bytes), record["result"]["media_type"]

    async def preview(self, video_id: str) -> bytes:
        video_id = self._known_video(video_id)
        try:
            return await asyncio.to_thread(self.store.preview_path(video_id).read_bytes)
        except FileNotFoundError:
            raise ApiError(404, f"video {video_id!r} has no preview (packs made outside a tuning job have none)"
                           ) from None

    def _check_steps(self, steps: int) -> None:
        """The base's scheduler bound (999 for SD 1.x), which the schema cannot know: the runtime's own check, early."""
        if self._max_steps is None:
            from tav.runtime.ddim import DDIMConfig, DDIMScheduler

            self._max_steps = DDIMScheduler(DDIMConfig.from_file(self.base().path("scheduler_config.json"))).max_steps
        if steps > self._max_steps:
            raise ApiError(422, f"invalid request: steps: must be between 1 and {self._max_steps} "
                                "for this base's scheduler")

    async def generate(self, video_id: str, body: GenerateRequest, request_id: str = "-") -> dict:
        """The video's bytes, after at most --timeout seconds (504 past it, saying how long the steps need)."""
        video_id = self._known_video(video_id)
        self._check_steps(body.steps)
        limits = self.config.limits
        response = self.model.options(multiplexed_model_id=video_id).generate.remote(body.sampling_args(), body.format,
                                                                                      body.fps)
        try:
            result = await asyncio.wait_for(self._answer(response, video_id, request_id), limits.generate_timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise ApiError(504, self._too_slow(body.steps)) from None
        self._step_seconds = result["timings"].get("denoise_per_step", self._step_seconds)
        return result

    async def generate_async(self, video_id: str, body: GenerateRequest, request_id: str = "-") -> dict:
        """202's body: a job whose record follows the steps; the video goes to STORE/results (no --timeout: a
        client polls, and DELETE /v1/jobs/{id} stops it). A full queue is still a 503, at once."""
        video_id = self._known_video(video_id)
        self._check_steps(body.steps)
        job_id = new_job_id()
        request = body.model_dump(exclude={"run_async"})
        record = await asyncio.to_thread(create_job, self.store, job_id, video_id, None, request, "generate")
        response = self.model.options(multiplexed_model_id=video_id).generate_job.remote(
            job_id, body.sampling_args(), body.format, body.fps)
        finishing = asyncio.create_task(self._finish_generation(job_id, response, video_id, request_id))
        done, _ = await asyncio.wait({finishing}, timeout=BACK_PRESSURE_WAIT_S)
        refused = finishing.result() if done else None
        if isinstance(refused, ApiError) and refused.status == 503:
            await asyncio.to_thread(discard_job, self.store, job_id)  # refused, not failed: no record stays
            raise refused
        self._generations[job_id] = finishing  # a reference keeps the task alive
        finishing.add_done_callback(lambda _: self._generations.pop(job_id, None))
        return {**public_view(record), "status_url": f"/v1/jobs/{job_id}", "result_url": f"/v1/jobs/{job_id}/result"}

    async def _finish_generation(self, job_id: str, response, video_id: str, request_id: str) -> ApiError | None:
        """Wait for the replica; on failure write the error to the record and return it (never raised: nobody
        awaits this task once the 202 has gone, and an exception would only be logged as never retrieved)."""
        try:
            outcome = await self._answer(response, video_id, request_id)
        except ApiError as err:
            await asyncio.to_thread(fail_job, self.store, job_id, f"{err.message} (HTTP {err.status})")
            return err
        self._step_seconds = outcome["timings"].get("denoise_per_step", self._step_seconds)
        return None

    def _too_slow(self, steps: int) -> str:
        """504's message: what the operator's --timeout allowed, and what these steps need at the last measured rate."""
        limit = self.config.limits.generate_timeout_s
        message = f"generation took longer than {limit:g} s (tav-serve --timeout) and was cancelled; "
        if self._step_seconds:
            need = steps * self._step_seconds
            return message + (f"{steps} steps take about {need:.0f} s on this server ({self._step_seconds:.2f} s a "
                              f"step): ask for fewer steps, send \"async\": true and poll the job, or have tav-serve "
                              f"started with --timeout {max(limit * 2, need * 1.5 + 30):.0f}")
        return message + ("ask for fewer steps, send \"async\": true and poll the job, or have tav-serve started "
                          f"with a larger --timeout (e.g. {limit * 4:g})")

    async def _answer(self, response, video_id: str, request_id: str) -> dict:
        """A replica's answer, or the ApiError its failure means (503 for back-pressure or a lost replica)."""
        limits = self.config.limits
        try:
            return await response
        except BackPressureError:
            raise busy(f"all replicas are busy and the queue is full ({limits.max_queued} waiting); retry later",
                       limits.retry_after_s) from None
        except RequestCancelledError:
            raise busy("the request was cancelled on the replica (shutting down?); retry",
                       limits.retry_after_s) from None
        except REPLICA_GONE as err:
            log.warning("replica lost during generate for %s: %s", video_id, client_message(err))
            raise busy("the replica serving this request went away; retry (Ray is replacing it)",
                       limits.retry_after_s) from None
        except Exception as err:  # raised on the replica: Ray wraps it (RayTaskError), the cause says what it was
            raise self._replica_error(err, video_id, request_id) from None

    def _replica_error(self, err: Exception, video_id: str, request_id: str) -> ApiError:
        """A replica's exception as a one-line ApiError; the full text (Ray's traceback) goes to the server log only."""
        cause = root_cause(err)
        if isinstance(cause, JobAbandoned):  # an async generate cancelled while it ran: its record says so
            return ApiError(409, client_message(cause))
        if isinstance(cause, VideoNotFound):
            return ApiError(404, f"no video {video_id!r} (it was removed from the store)")
        if isinstance(cause, VideoUnusable):  # the store's fault, not the client's; the listing marks it too
            log.warning("request %s: video %s is unusable: %s", request_id, video_id, err)
            return ApiError(500, client_message(cause))
        # the runtime's own argument checks, e.g. inverted without latents
        if isinstance(cause, (ValueError, TypeError)):
            return ApiError(422, client_message(cause))
        log.error("request %s: generate for %s failed: %s", request_id, video_id, err)
        return ApiError(500, f"generation failed ({type(cause).__name__}); the server log has the details under "
                             f"request id {request_id}")

    async def check_ready(self) -> None:
        try:
            await asyncio.wait_for(self.model.ready.remote(), timeout=10)
        except (asyncio.TimeoutError, BackPressureError, *REPLICA_GONE) as err:
            raise busy(f"no model replica answered ({type(err).__name__})", self.config.limits.retry_after_s) from None

    # -- tuning jobs: tav.serve.job_desk ------------------------------------------------------

    def base(self):
        if self._base is None:
            from tav.runtime.manifest import read_manifest

            self._base = read_manifest(self.config.base_dir)
        return self._base
