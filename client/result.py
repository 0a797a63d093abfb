"""What ``Client.generate`` returns: the frames (npy) or the file's bytes (mp4/gif), and the server's timings."""

import io
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np


@dataclass
class Result:
    video_id: str
    format: str  # npy | mp4 | gif
    data: bytes  # the response body: an .npy, .mp4 or .gif file
    timings: dict = field(default_factory=dict)  # stage -> seconds, from the Server-Timing header
    request_id: str | None = None  # the server log's name for the request
    job_id: str | None = None  # generate(..., progress=True): the async job that made it

    @property
    def frames(self) -> np.ndarray:
        """uint8 [F, H, W, 3]; only for format "npy" (mp4 and gif are lossy: decode them yourself if you must)."""
        if self.format != "npy":
            raise ValueError(f"this result is {self.format} bytes (.data); ask generate(..., format='npy') for frames")
        return np.load(io.BytesIO(self.data), allow_pickle=False)

    def save(self, path) -> Path:
        path = Path(path)
        path.write_bytes(self.data)
        return path


def server_timings(header: str | None) -> dict:
    """``"denoise;dur=812.5, decode;dur=40.1"`` -> ``{"denoise": 0.8125, "decode": 0.0401}`` (seconds)."""
    timings = {}
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                timings[name] = float(value) / 1000
    return timings


def result_from_response(video_id: str, fmt: str, response: httpx.Response) -> Result:
    return Result(video_id, fmt, response.content, server_timings(response.headers.get("server-timing")),
                  response.headers.get("x-request-id"))
