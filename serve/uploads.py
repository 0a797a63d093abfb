"""Receiving a clip for a tuning job: size and type checks, into STORE only once it is known to be a usable video.

The clip is streamed into ``STORE/uploads/.incoming-*`` and probed with imageio (real
decoding of as many frames as tuning will read); any refusal deletes it before the answer
goes out, so a refused upload leaves nothing behind. Accepted, it is renamed to
``STORE/uploads/<job_id>/``.
"""

import shutil
import tempfile
from pathlib import Path

from tav.runtime.atomic_files import publish_folder

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".gif")
COPY_CHUNK = 1 << 20


class UploadRefused(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_declared_size(content_length: str | None, max_bytes: int) -> None:
    """Refuse before reading: no Content-Length (411) or more than the limit (413)."""
    if content_length is None:
        raise UploadRefused(411, "send the upload with a Content-Length header (curl -F does)")
    try:
        size = int(content_length)
    except ValueError:
        raise UploadRefused(400, f"Content-Length {content_length!r} is not a number") from None
    if size > max_bytes:
        raise UploadRefused(413, f"the upload is {size} bytes, over the limit of {max_bytes} bytes; "
                                 "send a shorter or smaller clip")


def clip_suffix(filename: str | None) -> str:
    suffix = Path(filename or "").suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise UploadRefused(422, f"clip {filename!r} is not a video file: send one of {', '.join(VIDEO_SUFFIXES)}")
    return suffix


def save_incoming(upload_file, uploads_dir: Path, suffix: str, max_bytes: int) -> Path:
    """Copy the uploaded file into a fresh ``.incoming-*`` folder under ``uploads_dir``; returns the clip path."""
    folder = Path(tempfile.mkdtemp(prefix=".incoming-", dir=uploads_dir))
    clip = folder / f"clip{suffix}"
    try:
        copied = 0
        with open(clip, "wb") as out:
            while chunk := upload_file.read(COPY_CHUNK):
                copied += len(chunk)
                if copied > max_bytes:
                    raise UploadRefused(413, f"the clip is over the limit of {max_bytes} bytes; "
                                             "send a shorter or smaller clip")
                out.write(chunk)
        if copied == 0:
            raise UploadRefused(422, "the clip is empty; send a video file")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return clip


def probe_clip(clip: Path, frames_needed: int) -> None:
    """Decode the clip up to the last frame tuning reads; a clear refusal if it is no video or too short."""
    import imageio.v3 as iio

    seen = 0
    try:
        for _ in iio.imiter(clip):
            seen += 1
            if seen >= frames_needed:
                return
    except Exception as err:  # imageio raises plugin-specific errors for files it cannot decode
        if seen == 0:
            raise UploadRefused(422, f"the clip could not be decoded as a video ({type(err).__name__}); "
                                     "send an mp4/webm/mov/gif") from None
        raise UploadRefused(422, f"the clip broke off after {seen} frames ({type(err).__name__}); "
                                 "send a complete video") from None
    if seen == 0:
        raise UploadRefused(422, "the clip has no frames; send a video file")
    raise UploadRefused(422, f"the clip has {seen} frames but tuning reads {frames_needed} "
                             "(start + stride * (frames - 1) + 1); send a longer clip or lower stride/start")


def discard(clip: Path) -> None:
    shutil.rmtree(clip.parent, ignore_errors=True)


def accept(clip: Path, job_dir: Path) -> Path:
    """Move the probed clip's folder to the job's upload folder; returns the clip's new path."""
    publish_folder(clip.parent, job_dir)  # one rename inside STORE/uploads: the job sees a whole clip or none
    return job_dir / clip.name
