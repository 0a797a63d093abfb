"""The ingress's side of jobs: accept an upload, start its Ray task, watch it; list, show and cancel any job.

A tuning job's Ray task is started with ``max_retries=0``; its ObjectRef stays here while it runs, so
a cancel can stop it (``ray.cancel(force=True)`` kills the worker: the record is already marked
cancelled, and the kernel releases the worker's flock on the job lock if it held it). An async
generate is stopped by its record alone: the replica's next step write sees it cancelled. While Ray
has not started a task, its record says why it waits (``scheduling``), and the note goes once it runs.
"""

import asyncio
import logging

import ray
from pydantic import ValidationError

from .config import ServeConfig
from .errors import ApiError, busy, client_message, root_cause
from .ids import BadId, check_job_id, new_job_id
from .job_record import JobRecordError
from .job_view import public_view
from .jobs import JobAbandoned, cancel_job, create_job, fail_job, list_jobs, read_job, reserved_video_ids, update_job
from .schemas import TuneOptions, one_line
from .store import Store
from .tuning_job import run_tuning_job
from .uploads import UploadRefused, accept, check_declared_size, clip_suffix, discard, probe_clip, save_incoming

log = logging.getLogger("tav.serve")

FORM_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the small text fields beside the clip
FIRST_SCHEDULING_NOTE_S = 1.0  # a job Ray has not started after this says why (most start well within it)
SCHEDULING_POLL_S = 5.0  # then how often its record is told why it still waits
MAX_LISTED_JOBS = 200


class JobDesk:
    def __init__(self, config: ServeConfig, store: Store, base, check_video_id):
        self.config, self.store, self._base, self._check_video_id = config, store, base, check_video_id
        self._upload_lock = asyncio.Lock()
        self._watchers = {}  # job id -> the asyncio task watching its Ray task (a reference keeps it alive)
        self._refs = {}  # job id -> its Ray task's ObjectRef, for cancel
        self._cancelled = set()  # job ids whose task this ingress stopped: their end is expected, not a failure
        self._tuning_task = ray.remote(run_tuning_job).options(
            num_cpus=config.job_cpus, num_gpus=config.job_gpus, max_retries=0, name="tav-serve-tuning-job")

    async def submit(self, request) -> dict:
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
            video_id = self._check_video_id(options.video_id)
            clip_file = form.get("clip")
            if clip_file is None or isinstance(clip_file, str):
                raise ApiError(422, "no clip: send the video as the multipart file field 'clip' "
                                    "(curl -F clip=@video.mp4)")
            try:
                record = await self._stage(clip_file, video_id, options)
            except UploadRefused as err:
                raise ApiError(err.status, str(err)) from None
        finally:
            await form.close()  # the spooled upload's temp file
        job_id = record["job_id"]
        try:
            ref = self._tuning_task.remote(self.config, job_id)
        except Exception as err:  # Ray refused the task: the record must not stay "queued"
            await asyncio.to_thread(fail_job, self.store, job_id,
                                    f"could not start the tuning task: {client_message(err)}; upload again later")
            raise busy("could not start the tuning task; retry later", limits.retry_after_s) from None
        self._refs[job_id] = ref
        self._watchers[job_id] = asyncio.create_task(self._watch(job_id, ref))
        log.info("job %s queued for video %s (%d steps)", job_id, video_id, options.steps)
        return {**public_view(record), "status_url": f"/v1/jobs/{job_id}"}

    async def _stage(self, clip_file, video_id: str, options: TuneOptions) -> dict:
        """Reserve the id, copy and probe the clip, move it under a new job id, write the record.

        Nothing stays on refusal.
        """
        suffix = clip_suffix(clip_file.filename)
        frames_needed = options.start + options.stride * (self._base().frames - 1) + 1
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
            wait_s = FIRST_SCHEDULING_NOTE_S
            while not (await asyncio.wait({outcome}, timeout=wait_s))[0]:
                await asyncio.to_thread(self._note_waiting, job_id)
                wait_s = SCHEDULING_POLL_S
            outcome.result()
        except Exception as err:
            if job_id in self._cancelled:
                return  # the cancel wrote the record and removed the files
            cause = root_cause(err)
            if not isinstance(cause, JobAbandoned):
                log.warning("job %s: the tuning task ended abnormally: %s", job_id, err)
            reason = (f"the tuning task ended abnormally ({type(cause).__name__}: {client_message(cause)}); "
                      "upload the clip again (POST /v1/videos)")
            await asyncio.to_thread(fail_job, self.store, job_id, reason)  # no-op for a cancelled job
        finally:
            self._watchers.pop(job_id, None)
            self._refs.pop(job_id, None)
            self._cancelled.discard(job_id)

    def _note_waiting(self, job_id: str) -> None:
        """A queued job's record gets the reason it is not running yet: what it needs against what is free."""
        try:
            if read_job(self.store, job_id).get("state") != "queued":
                return
            free = ray.available_resources()
            needs = {"CPU": self.config.job_cpus, "GPU": self.config.job_gpus}
            short = [f"{need:g} {kind} (free now: {free.get(kind, 0):g})" for kind, need in needs.items()
                     if need and free.get(kind, 0) < need]
            reason = ("waiting for " + " and ".join(short) + ": other tuning jobs or replicas hold them"
                      if short else "waiting for Ray to start the task")
            update_job(self.store, job_id, only_if="queued", scheduling=reason)
        except JobAbandoned:
            return
        except Exception as err:  # a note, never a reason to fail the job
            log.warning("job %s: could not record why it waits: %s", job_id, err)

    def checked_job_id(self, job_id: str) -> str:
        try:
            return check_job_id(job_id)
        except BadId as err:
            raise ApiError(422, str(err)) from None

    async def status(self, job_id: str) -> dict:
        return public_view(await self.record(job_id))

    async def record(self, job_id: str) -> dict:
        """Job ``job_id``'s checked record; 422 for a malformed id, 404 for no such job, 500 for a garbled record."""
        job_id = self.checked_job_id(job_id)
        try:
            return await asyncio.to_thread(read_job, self.store, job_id)
        except FileNotFoundError:
            raise ApiError(404, f"no job {job_id} (GET /v1/jobs lists them)") from None
        except JobRecordError as err:  # garbled on disk: say so, and what to send next
            raise ApiError(500, f"job {job_id}'s record is corrupt ({err.problem}); it cannot be shown or resumed: "
                                "upload the clip again (POST /v1/videos)") from None

    async def listing(self) -> list:
        """Newest first, at most MAX_LISTED_JOBS."""
        records = await asyncio.to_thread(list_jobs, self.store)
        return [public_view(r) for r in records[:MAX_LISTED_JOBS]]

    async def cancel(self, job_id: str) -> dict:
        """Mark the job cancelled, stop its task, remove its upload and work folders: the cancelled record."""
        job_id = self.checked_job_id(job_id)
        try:
            record = await asyncio.to_thread(cancel_job, self.store, job_id)
        except FileNotFoundError:
            raise ApiError(404, f"no job {job_id} (GET /v1/jobs lists them)") from None
        except JobAbandoned:
            state = (await asyncio.to_thread(read_job, self.store, job_id))["state"]
            raise ApiError(409, f"job {job_id} is already {state}; only a queued or running job can be cancelled"
                           ) from None
        ref = self._refs.get(job_id)
        if ref is not None:
            self._cancelled.add(job_id)
            ray.cancel(ref, force=True)  # queued: never starts; running: its worker is stopped now
        log.info("job %s cancelled", job_id)
        return public_view(record)
