"""A Python client for tav-serve's REST API (the same public API the studio page and curl use).

    from tav.client import Client

    with Client("http://127.0.0.1:8000", token="s3cret") as tav:
        job = tav.tune("clip.mp4", "man-skiing", "a man is skiing", steps=300)
        video = job.wait(progress=True)                    # a tqdm bar of the tuning steps
        result = tav.generate("man-skiing", "a panda is skiing", steps=50, seed=33)
        result.frames                                      # uint8 [F, H, W, 3]

Needs only the base install (httpx and numpy; no torch, no Ray).
"""

from .api import ApiError, Client
from .job import Job, JobFailed
from .result import Result

__all__ = ["ApiError", "Client", "Job", "JobFailed", "Result"]
