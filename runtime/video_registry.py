"""The videos a base-ENGINE_DIR pipeline serves: name -> pack, with an LRU cap on those resident on the device.

Every video keeps its pack's tensors in host memory; a *resident* one also has them on the
engine's device (``upload``: ORT CUDA OrtValues or TensorRT device buffers; on the CPU the host
arrays themselves, so residency costs nothing there). Past ``max_resident`` the least recently
used video is evicted to host memory (``release``) and uploaded again on its next request.

Thread safety: the registry's lock guards the name map and the LRU order. Uploads, releases
and engine runs happen under the pipeline's engine lock (taken first, always), so a video is
never evicted between binding its weights and the UNet call that reads them.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from .packs import Pack


class UnknownVideoError(KeyError):
    """A video name that is not registered; the message lists the known ones."""

    def __str__(self):
        return self.args[0]


@dataclass(eq=False)
class Video:
    name: str
    pack: Pack
    device: object = None  # the backend's resident form of pack.tensors, or None when evicted
    removed: bool = False
    info: dict = field(default_factory=dict)


class VideoRegistry:
    def __init__(self, upload, release, max_resident: int | None = None):
        if max_resident is not None and (isinstance(max_resident, bool) or int(max_resident) < 1):
            raise ValueError(f"max_resident_videos must be a positive integer or None, got {max_resident!r}")
        self._upload, self._release = upload, release
        self.max_resident = None if max_resident is None else int(max_resident)
        self._videos = {}  # name -> Video
        self._resident = OrderedDict()  # Video -> None, least recently used first
        self._lock = threading.Lock()

    def check_free(self, name: str, replace: bool) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a video name must be a non-empty string, got {name!r}")
        with self._lock:
            if name in self._videos and not replace:
                raise ValueError(f"a video named {name!r} is already added (from {self._videos[name].pack.path}); "
                                 "pass replace=True to swap it, or remove_video it first")

    def add(self, name: str, pack: Pack, replace: bool) -> Video:
        """Upload and register; on any failure nothing is registered and the old video (if any) stays."""
        self.check_free(name, replace)
        video = Video(name, pack, info=_describe(pack))
        self._make_room(exclude=None)
        video.device = self._upload(pack.tensors)
        with self._lock:
            if name in self._videos and not replace:  # added by another thread meanwhile
                self._release(video.device)
                raise ValueError(f"a video named {name!r} was added meanwhile; pass replace=True to swap it")
            old = self._videos.get(name)
            self._videos[name] = video
            self._resident[video] = None
        if old is not None:
            self._drop(old)
        return video

    def remove(self, name: str) -> None:
        with self._lock:
            video = self._videos.pop(name, None)
        if video is None:
            raise UnknownVideoError(self._unknown(name))
        self._drop(video)

    def get(self, name) -> Video:
        with self._lock:
            video = self._videos.get(name)
            if video is None:
                raise UnknownVideoError(self._unknown(name))
            return video

    def weights(self, video: Video):
        """The video's resident tensors for the next UNet call, uploading (and evicting) as needed."""
        if video.removed:
            raise UnknownVideoError(f"video {video.name!r} was removed while it was being sampled")
        with self._lock:
            if video.device is not None:
                self._resident.move_to_end(video)
                return video.device
        self._make_room(exclude=video)
        video.device = self._upload(video.pack.tensors)
        with self._lock:
            self._resident[video] = None
        return video.device

    def describe(self) -> dict:
        with self._lock:
            return {name: {**v.info, "resident": v.device is not None} for name, v in self._videos.items()}

    def close(self) -> None:
        with self._lock:
            videos, self._videos = list(self._videos.values()), {}
        for video in videos:
            self._drop(video)

    def _make_room(self, exclude) -> None:
        """Evict least recently used videos until one more fits under the cap."""
        while self.max_resident is not None:
            with self._lock:
                if len(self._resident) < self.max_resident:
                    return
                victim = next(v for v in self._resident if v is not exclude)
                del self._resident[victim]
                device, victim.device = victim.device, None
            self._release(device)

    def _drop(self, video: Video) -> None:
        with self._lock:
            video.removed = True
            self._resident.pop(video, None)
            device, video.device = video.device, None
        if device is not None:
            self._release(device)

    def _unknown(self, name) -> str:
        known = ", ".join(repr(n) for n in sorted(self._videos)) or "none; add one with add_video(name, pack_path)"
        return f"unknown video {name!r}; known videos: {known}"


def _describe(pack: Pack) -> dict:
    meta = pack.metadata
    return {"pack": str(pack.path), "sha256": meta.get("sha256"), "prompt": meta.get("prompt"), "base": meta.get("base"),
            "run": meta.get("run"), "has_inverted_latents": pack.inverted_latents is not None, "tensor_bytes": pack.nbytes}
