"""What each HTTP route does, on the ingress replica: checks, routing by video id, jobs; no model work here.

Generation goes to the model deployment through its handle with
``.options(multiplexed_model_id=video_id)``: Ray Serve sends it to a replica that already
holds that video's pack when one exists (and otherwise to one that loads it). Overload and
replica loss come back as 503 with Retry-After, never as a hang: the handle's
``max_queued_requests`` bounds the queue and every call has a timeout.
"""

import asyncio
import json
import logging

import ray
from pydantic import ValidationError
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError

from .config import ServeConfig
from .errors import ApiError, busy, client_message, root_cause
from .ids import BadId, check_job_id, check_video_id, new_job_id
from .jobs import create_job, fail_interrupted, fail_job, public_view, read_job, reserved_video_ids, update_job
from .metrics import RequestMetrics
from .residency import VideoNotFound, VideoUnusable
from .schemas import GenerateRequest, TuneOptions, one_line
from .store import Store
from .tuning_job import run_tuning_job
from .uploads import UploadRefused, accept, check_declared_size, clip_suffix, discard, probe_clip, save_incoming

log = logging.getLogger("tav.serve")

FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small text fields beside the clip
SCHEDULING_POLL_S = 5.0  # how often a queued job's record is told why it waits
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
        self._upload_lock = asyncio.Lock()
        self._watchers = {}  # job id -> the asyncio task watching its Ray task (a reference keeps it alive)
        self._tuning_task = ray.remote(run_tuning_job).options(
            num_cpus=config.job_cpus, num_gpus=config.job_gpus, max_retries=0, name="tav-serve-tuning-job")
        # One ingress replica, and its tuning tasks die with it: an unfinished job found now was this ingress's
        # before Ray restarted it (at a tav-serve start, preflight.prepare_store already failed them).
        orphans = fail_interrupted(self.store, "the tav-serve ingress restarted")
        if orphans:
            log.warning("ingress restart: marked %d orphaned job(s) failed: %s", len(orphans), ", ".join(orphans))
        self._max_steps = None

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
            meta = {"video_id": video_id, "usable": True, "bytes": path.stat().st_size,
                    "metadata": without_paths(read_pack_metadata(path))}
            json.dumps(meta)  # a header that parses but holds what JSON cannot carry is as unusable as a broken one
            return meta
        except Exception as err:
            # any broken pack (removed meanwhile, malformed header): listed and marked, never a 500
            log.warning("video %s is unusable: %r", video_id, err)
            return {"video_id": video_id, "usable": False, "error": client_message(err)}

    def _check_steps(self, steps: int) -> None:
        """The base's scheduler bound (999 for SD 1.x), which the schema cannot know: the runtime's own check, early."""
        if self._max_steps is None:
            from tav.runtime.ddim import DDIMConfig, DDIMScheduler

            self._max_steps = DDIMScheduler(DDIMConfig.from_file(self.base().path("scheduler_config.json"))).max_steps
        if steps > self._max_steps:
            raise ApiError(422, f"invalid request: steps: must be between 1 and {self._max_steps} "
                                "for this base's scheduler")

    async def generate(self, video_id: str, body: GenerateRequest, request_id: str = "-") -> dict:
        video_id = self._known_video(video_id)
        self._check_steps(body.steps)
        limits = self.config.limits
        response = self.model.options(multiplexed_model_id=video_id).generate.remote(body.sampling_args(), body.format,
                                                                                      body.fps)
        try:
            return await asyncio.wait_for(response, timeout=limits.generate_timeout_s)
        except BackPressureError:
            raise busy(f"all replicas are busy and the queue is full ({limits.max_queued} waiting); retry later",
                       limits.retry_after_s) from None
        except asyncio.TimeoutError:
            response.cancel()
            raise ApiError(504, f"generation took longer than {limits.generate_timeout_s:g} s and was cancelled; "
                                "ask for fewer steps") from None
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

    # -- tuning jobs ----------------------------------------------------------------------------

    def base(self):
        if self._base is None:
            from tav.runtime.manifest import read_manifest

            self._base = read_manifest(self.config.base_dir)
        return self._base

    async def submit_upload(self, request) -> dict:
        """Check the upload, stage its clip in STORE, write the job record, start the tuning task: 202's body."""
        if self.config.sd_dir is None:
            raise ApiError(501, "this server cannot tune: start tav-serve with --sd SD_FOLDER "
                                "(the base model's diffusers folder)")
        limits = self.config.limits
        try:
            check_declared_size(request.headers.get("content-length"), limits.max_upload_bytes + FORM_OVERHEAD_BYTES)
            form = await request.form(max_files=1, max_fields=16)
        except UploadRefused as err:
            raise ApiError(err.status, str(err)) from None
        except Exception as err:  # starlette's multipart errors: malformed body, too many parts
            raise ApiError(422, f"the body is not a valid multipart form ({client_message(err)}); "
                                "send the clip as file field 'clip' and the options as fields") from None
        try:
            try:
                options = TuneOptions.model_validate({k: v for k, v in form.multi_items() if k != "clip"})
            except ValidationError as err:
                raise ApiError(422, "invalid upload: " + one_line(err.errors())) from None
            video_id = self._video_id(options.video_id)
            clip_file = form.get("clip")
            if clip_file is None or isinstance(clip_file, str):
                raise ApiError(422, "no clip: send the video as the multipart file field 'clip' "
                                    "(curl -F clip=@video.mp4)")
            try:
                record = await self._stage_job(clip_file, video_id, options)
            except UploadRefused as err:
                raise ApiError(err.status, str(err)) from None
        finally:
            await form.close()  # the spooled upload's temp file
        job_id = record["job_id"]
        try:
            ref = self._tuning_task.remote(self.config, job_id)
        except Exception as err:  # Ray refused the task: the record must not stay "queued"
            await asyncio.to_thread(fail_job, self.store, job_id,
                                    f"could not start the tuning task: {client_message(err)}")
            raise busy("could not start the tuning task; retry later", limits.retry_after_s) from None
        self._watchers[job_id] = asyncio.create_task(self._watch(job_id, ref))
        log.info("job %s queued for video %s (%d steps)", job_id, video_id, options.steps)
        return {**public_view(record), "status_url": f"/v1/jobs/{job_id}"}

    async def _stage_job(self, clip_file, video_id: str, options: TuneOptions) -> dict:
        """Reserve the id, copy and probe the clip, move it under a new job id, write the record.

        Nothing stays on refusal.
        """
        suffix = clip_suffix(clip_file.filename)
        frames_needed = options.start + options.stride * (self.base().frames - 1) + 1
        async with self._upload_lock:  # check-and-reserve of the id, one upload at a time on this replica
            if video_id in await asyncio.to_thread(reserved_video_ids, self.store):
                raise ApiError(409, f"video id {video_id!r} is taken (by a pack or a running job); choose another")
            clip = await asyncio.to_thread(save_incoming, clip_file.file, self.store.uploads, suffix,
                                           self.config.limits.max_upload_bytes)
            try:
                await asyncio.to_thread(probe_clip, clip, frames_needed)
                job_id = new_job_id()
                clip = accept(clip, self.store.upload_dir(job_id))
            except BaseException:
                discard(clip)
                raise
            return create_job(self.store, job_id, video_id, clip.name, options.model_dump(exclude={"video_id"}))

    async def _watch(self, job_id: str, ref) -> None:
        """A task that dies without writing its record (worker killed, node lost) still ends its job as failed.

        While Ray has not started the task, the record says why it waits (``scheduling``).
        """
        try:
            outcome = asyncio.wrap_future(ref.future())
            while not (await asyncio.wait({outcome}, timeout=SCHEDULING_POLL_S))[0]:
                await asyncio.to_thread(self._note_waiting, job_id)
            outcome.result()
        except Exception as err:
            cause = root_cause(err)
            log.warning("job %s: the tuning task ended abnormally: %s", job_id, err)
            reason = (f"the tuning task ended abnormally ({type(cause).__name__}: {client_message(cause)}); "
                      "upload the clip again")
            await asyncio.to_thread(fail_job, self.store, job_id, reason)
        finally:
            self._watchers.pop(job_id, None)

    def _note_waiting(self, job_id: str) -> None:
        """A queued job's record gets the reason it is not running yet: what it needs against what is free."""
        try:
            record = read_job(self.store, job_id)
            if record.get("state") != "queued":
                return
            free = ray.available_resources()
            needs = {"CPU": self.config.job_cpus, "GPU": self.config.job_gpus}
            short = [f"{need:g} {kind} (free now: {free.get(kind, 0):g})" for kind, need in needs.items()
                     if need and free.get(kind, 0) < need]
            reason = ("waiting for " + " and ".join(short) + ": other tuning jobs or replicas hold them"
                      if short else "waiting for Ray to start the task")
            if record.get("scheduling") != reason:
                update_job(self.store, job_id, scheduling=reason)
        except Exception as err:  # a note, never a reason to fail the job
            log.warning("job %s: could not record why it waits: %s", job_id, err)

    async def job_status(self, job_id: str) -> dict:
        try:
            check_job_id(job_id)
        except BadId as err:
            raise ApiError(422, str(err)) from None
        try:
            return public_view(await asyncio.to_thread(read_job, self.store, job_id))
        except FileNotFoundError:
            raise ApiError(404, f"no job {job_id}") from None

