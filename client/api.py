"""``Client``: one method per route of tav-serve's API; every HTTP error raises ``ApiError`` with the server's line."""

import time
from pathlib import Path

import httpx

from .job import Job
from .result import Result, result_from_response

DEFAULT_TIMEOUT_S = 600.0  # a generate at SD-1.5 size on a CPU takes minutes; the server's own --timeout bounds it
MAX_RETRY_WAIT_S = 60.0


class ApiError(Exception):
    """An HTTP error from tav-serve (``status``: 4xx/5xx) or no answer at all (``status`` None).

    ``message`` is the server's one-line ``error`` (what is wrong and what to do); ``request_id`` names the
    request in the server's log.
    """

    def __init__(self, status: int | None, message: str, request_id: str | None = None):
        super().__init__(f"{status}: {message}" if status else message)
        self.status, self.message, self.request_id = status, message, request_id


class Client:
    """``Client(url, token=None, timeout=600, busy_retries=2)``.

    ``busy_retries``: how many times a 503 (all replicas busy, queue full) is retried, each after the
    server's ``Retry-After`` (at most MAX_RETRY_WAIT_S); then ApiError(503).
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, busy_retries: int = 2):
        if busy_retries < 0:
            raise ValueError(f"busy_retries must be >= 0, got {busy_retries}")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.busy_retries = busy_retries
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the routes ------------------------------------------------------------------------------

    def service(self) -> dict:
        """The base's frames and size, whether the server tunes, and each request field's default."""
        return self._request("GET", "/v1/service").json()

    def videos(self) -> list:
        return self._request("GET", "/v1/videos").json()["videos"]

    def video(self, video_id: str) -> dict:
        return self._request("GET", f"/v1/videos/{video_id}").json()

    def preview(self, video_id: str) -> bytes:
        """The gif of the frames the video was tuned on (404 for packs made outside a tuning job)."""
        return self._request("GET", f"/v1/videos/{video_id}/preview").content

    def generate(self, video_id: str, prompt: str, progress: bool = False, **settings) -> Result:
        """Edit ``video_id`` with ``prompt``; ``settings``: negative_prompt, steps, guidance, seed, eta, init, fps and
        format (default "npy": ``Result.frames``; "mp4"/"gif": ``Result.data``). Blocks until the video is made.

        ``progress``: run it as an async job and show a tqdm bar of its steps (no silent minutes on a slow
        server, and no request held open past the server's --timeout)."""
        body = {"prompt": prompt, "format": "npy", **settings}
        path = f"/v1/videos/{video_id}/generate"
        if not progress:
            return result_from_response(video_id, body["format"], self._request("POST", path, json=body))
        job = Job(self, self._request("POST", path, json={**body, "async": True}).json())
        record = job.follow(progress=True, desc=f"generating {video_id}")
        response = self._request("GET", record["result"]["url"])
        return Result(video_id, body["format"], response.content, record["result"]["timings"],
                      response.headers.get("x-request-id"), job.id)

    def tune(self, clip_path, video_id: str, prompt: str, **settings) -> Job:
        """Upload ``clip_path`` to tune a new video ``video_id`` captioned ``prompt``; ``settings``: steps, lr, seed,
        stride, start, inversion_steps, eval_pairs (the server's defaults otherwise). Returns at once."""
        clip = Path(clip_path)
        fields = {"video_id": video_id, "prompt": prompt, **{k: str(v) for k, v in settings.items()}}
        with open(clip, "rb") as handle:
            response = self._request("POST", "/v1/videos", data=fields, files={"clip": (clip.name, handle)})
        return Job(self, response.json())

    def job(self, job_id: str) -> dict:
        return self._request("GET", f"/v1/jobs/{job_id}").json()

    def jobs(self) -> list:
        """Every job record, newest first."""
        return self._request("GET", "/v1/jobs").json()["jobs"]

    def cancel(self, job_id: str) -> dict:
        """Stop a queued or running job; its upload and work files go. Returns the cancelled record."""
        return self._request("DELETE", f"/v1/jobs/{job_id}").json()

    # -- one request -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(self.busy_retries + 1):
            for part in kwargs.get("files", {}).values():
                part[1].seek(0)  # a retried upload sends the clip again from its start
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as err:
                raise ApiError(None, f"no answer from {self.url}{path}: {err}") from None
            if response.status_code == 503 and attempt < self.busy_retries:
                time.sleep(_retry_after(response))
                continue
            if response.is_error:
                raise ApiError(response.status_code, _error_line(response), response.headers.get("x-request-id"))
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", "1")), 0.0), MAX_RETRY_WAIT_S)
    except ValueError:
        return 1.0


def _error_line(response: httpx.Response) -> str:
    try:
        message = response.json().get("error")
    except ValueError:
        message = None
    return message if isinstance(message, str) else f"HTTP {response.status_code} {response.reason_phrase}"
