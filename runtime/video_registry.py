"""The videos a pipeline serves: name -> pack, reference-counted, with an LRU cap on those resident on the device.

A baked ENGINE_DIR serves one implicit video (no name, no pack: its weights are in the graphs,
its inverted latents beside them); a base ENGINE_DIR serves the packs added to it by name. Both
go through ``hold``, so the pipeline has one code path.

Every added video keeps its pack's tensors in host memory; a *resident* one also has them on the
engine's device (``upload``: ORT CUDA OrtValues or TensorRT device buffers; on the CPU the host
arrays themselves, so residency costs nothing there). Past ``max_resident`` the least recently
used video that no call holds is evicted to host memory (``release``) and uploaded again on its
next request.

Reference counts: a call ``hold``s its video from start to end. ``remove`` (or ``add`` with
``replace``) forgets the name at once, so the next call is refused, but a held video keeps its
device memory until its last call ends. So a service can drop a video whenever it likes.

Thread safety: the registry's lock guards the name map, the counts and the LRU order. Uploads,
releases and engine runs happen under the pipeline's engine lock (taken first, always), so a video
is never evicted between binding its weights and the UNet call that reads them.
"""

import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .packs import Pack


class UnknownVideoError(KeyError):
    """A video name that is not registered; the message lists the known ones."""

    def __str__(self):
        return self.args[0]


@dataclass(eq=False)
class Video:
    name: str | None  # None: a baked ENGINE_DIR's implicit video
    pack: Pack | None  # None: the weights are baked into the graphs
    inverted_latents: np.ndarray | None
    no_latents_hint: str  # the one-line error for init="inverted" when there are none
    device: object = None  # the backend's resident form of pack.tensors, or None when evicted (or baked)
    users: int = 0  # calls holding it
    removed: bool = False
    info: dict = field(default_factory=dict)


class VideoRegistry:
    def __init__(self, upload, release, engine_lock, max_resident: int | None = None, implicit: Video | None = None,
                 owner: str = "this ENGINE_DIR"):
        """``implicit``: the one video of a baked ENGINE_DIR (then none can be added); ``owner`` names it in errors.

        ``engine_lock``: the pipeline's, taken to release a video whose last call ends (the other
        paths run with it already held).
        """
        if max_resident is not None and (isinstance(max_resident, bool) or int(max_resident) < 1):
            raise ValueError(f"max_resident_videos must be a positive integer or None, got {max_resident!r}")
        self._upload, self._release, self._engine_lock = upload, release, engine_lock
        self.max_resident = None if max_resident is None else int(max_resident)
        self.implicit, self.owner = implicit, owner
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

    def add(self, name: str, pack: Pack, replace: bool, no_latents_hint: str) -> Video:
        """Upload and register; on any failure nothing is registered and the old video (if any) stays."""
        self.check_free(name, replace)
        video = Video(name, pack, pack.inverted_latents, no_latents_hint, info=_describe(pack))
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
            self._forget(old)
        return video

    def remove(self, name: str) -> None:
        """Forget ``name`` now; its device memory goes when the last call holding it ends."""
        with self._lock:
            video = self._videos.pop(name, None)
            if video is None:
                raise UnknownVideoError(self._unknown(name))
        self._forget(video)

    def get(self, name: str | None) -> Video:
        with self._lock:
            return self._find(name)

    @contextmanager
    def hold(self, name: str | None):
        """The video ``name`` (None: the implicit one), kept for the duration of a call."""
        with self._lock:
            video = self._find(name)
            video.users += 1
        try:
            yield video
        finally:
            with self._lock:
                video.users -= 1
                drop = video.removed and video.users == 0
            if drop:
                with self._engine_lock:
                    self._drop(video)

    def weights(self, video: Video):
        """The video's resident tensors for the next UNet call (None when baked), uploading (and evicting) as needed."""
        if video.pack is None:
            return None
        with self._lock:
            if video.device is not None:
                if video in self._resident:
                    self._resident.move_to_end(video)
                return video.device
        self._make_room(exclude=video)
        video.device = self._upload(video.pack.tensors)
        with self._lock:
            if not video.removed:  # a removed video is dropped when its last call ends, not kept in the LRU
                self._resident[video] = None
        return video.device

    def describe(self) -> dict:
        with self._lock:
            return {name: {**v.info, "resident": v.device is not None} for name, v in self._videos.items()}

    def close(self) -> None:
        with self._lock:
            videos, self._videos = list(self._videos.values()), {}
            held = {v for v in self._resident if v.users}
        for video in videos:
            video.removed = True
            if video not in held:
                self._drop(video)

    def _find(self, name) -> Video:
        if self.implicit is not None:
            if name is not None:
                raise ValueError(f"video={name!r}: {self.owner} has its tuned weights baked in and serves only its own "
                                 "video; omit video=, or load a base ENGINE_DIR")
            return self.implicit
        if name is None:
            known = ", ".join(repr(n) for n in sorted(self._videos)) or "none yet; add_video(name, pack_path) first"
            raise ValueError(f"{self.owner} is a base ENGINE_DIR: pass video=NAME (known videos: {known})")
        video = self._videos.get(name)
        if video is None:
            raise UnknownVideoError(self._unknown(name))
        return video

    def _make_room(self, exclude) -> None:
        """Evict least recently used videos that no call holds until one more fits under the cap."""
        while self.max_resident is not None:
            with self._lock:
                if len(self._resident) < self.max_resident:
                    return
                victim = next((v for v in self._resident if v is not exclude and not v.users), None)
                if victim is None:  # every resident video is in use: exceed the cap until one is released
                    return
                del self._resident[victim]
                device, victim.device = victim.device, None
            self._release(device)

    def _forget(self, video: Video) -> None:
        with self._lock:
            video.removed = True
            self._resident.pop(video, None)
            held = video.users > 0
        if not held:
            self._drop(video)

    def _drop(self, video: Video) -> None:
        with self._lock:
            self._resident.pop(video, None)
            device, video.device = video.device, None
        if device is not None:
            self._release(device)

    def _unknown(self, name) -> str:
        known = ", ".join(repr(n) for n in sorted(self._videos)) or "none; add one with add_video(name, pack_path)"
        return f"unknown video {name!r}; known videos: {known}"


def _describe(pack: Pack) -> dict:
    meta = pack.metadata
    return {"pack": str(pack.path), "sha256": meta.get("sha256"), "prompt": meta.get("prompt"),
            "base": meta.get("base"), "run": meta.get("run"),
            "has_inverted_latents": pack.inverted_latents is not None, "tensor_bytes": pack.nbytes}
