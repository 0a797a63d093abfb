"""Video and job ids: a safe charset, so an id from a URL or a form never becomes a path as given."""

import re
import uuid

VIDEO_ID_RULE = "1-64 characters from a-z, A-Z, 0-9, '_' and '-', starting with a letter or digit"
_VIDEO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_JOB_ID = re.compile(r"[0-9a-f]{32}")


class BadId(ValueError):
    """An id outside the safe charset; the message says the rule."""


def check_video_id(video_id: str) -> str:
    if not isinstance(video_id, str) or not _VIDEO_ID.fullmatch(video_id):
        raise BadId(f"video id {video_id!r} is not allowed: use {VIDEO_ID_RULE}")
    return video_id


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise BadId(f"job id {job_id!r} is not a job id (32 lowercase hex digits, as POST /v1/videos returned)")
    return job_id


def new_job_id() -> str:
    return uuid.uuid4().hex
