"""Making a STORE pack resident on a replica's base pipeline, and dropping it again when Ray evicts it.

``load_video_into`` is the one place where a pack meets the runtime (tav.runtime's
per-video packs: ``pipe.add_video`` / ``pipe.remove_video`` / ``pipe(..., video=name)``).

Each load registers the pack under a name of its own (``<video_id>#<n>``). Ray Serve's
multiplexing may evict a video while a request that already holds it is still sampling,
and then load it again for the next request; distinct names keep the old and the new copy
apart, and the old one is removed only when its last request ends.
"""

import itertools
import threading
from contextlib import contextmanager

from .errors import client_message
from .store import Store

_load_counter = itertools.count(1)


class VideoNotFound(LookupError):
    """No pack in STORE under that video id."""


class VideoUnusable(RuntimeError):
    """STORE holds a pack under that id that this base refuses (made for another base, tampered, truncated)."""


class ResidentVideo:
    """One pack made resident on ``pipe``. ``use()`` holds it for one request; None once evicted."""

    def __init__(self, pipe, video_id: str, name: str):
        self.pipe, self.video_id, self.name = pipe, video_id, name
        self._lock = threading.Lock()
        self._users, self._evicted, self._removed = 0, False, False

    @contextmanager
    def use(self):
        """Yields self while a request samples with it, or None if Ray already evicted it (then load it again)."""
        with self._lock:
            usable = not self._evicted
            self._users += usable
        if not usable:
            yield None
            return
        try:
            yield self
        finally:
            with self._lock:
                self._users -= 1
                drop = self._evicted and self._users == 0
            if drop:
                self._remove()

    def generate(self, prompt: str, negative_prompt: str, steps: int, guidance: float, seed: int, eta: float, init: str):
        """Sample with this video; call inside ``use()``."""
        return self.pipe(prompt, negative_prompt=negative_prompt, video=self.name, steps=steps, guidance=guidance,
                         seed=seed, eta=eta, init=init)

    def evict(self) -> None:
        """Remove from the pipeline now, or after the requests still using it end."""
        with self._lock:
            self._evicted = True
            drop = self._users == 0
        if drop:
            self._remove()

    def _remove(self) -> None:
        with self._lock:
            if self._removed:
                return
            self._removed = True
        self.pipe.remove_video(self.name)

    def __del__(self):
        # Ray Serve's multiplexing calls __del__ when its LRU unloads a model.
        try:
            self.evict()
        except Exception:  # at interpreter exit the pipeline may already be gone
            pass


def load_video_into(pipe, video_id: str, store: Store) -> ResidentVideo:
    """Validate STORE's pack for ``video_id`` against ``pipe``'s base and make it resident."""
    path = store.pack_path(video_id)
    if not path.is_file():
        raise VideoNotFound(f"no video {video_id!r} in the store")
    name = f"{video_id}#{next(_load_counter)}"
    try:
        pipe.add_video(name, path)
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # PackError, or a header the reader trips on
        raise VideoUnusable(f"video {video_id!r} cannot be served: {client_message(err)}") from None
    return ResidentVideo(pipe, video_id, name)
