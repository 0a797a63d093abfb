"""Making a STORE pack resident on a replica's base pipeline, and dropping it again when Ray evicts it.

``load_video_into`` is the one place where a pack meets the runtime (tav.runtime's per-video
packs: ``pipe.add_video`` / ``pipe.remove_video`` / ``pipe(..., video=name)``), under the video
id itself. Ray Serve's multiplexing may evict a video while a request that already holds it is
still sampling: the runtime keeps a removed video for the calls still running it (it counts
them), so eviction here is one ``remove_video``.
"""


from .errors import client_message
from .store import Store


class VideoNotFound(LookupError):
    """No pack in STORE under that video id."""


class VideoUnusable(RuntimeError):
    """STORE holds a pack under that id that this base refuses (made for another base, tampered, truncated)."""


class ResidentVideo:
    """One pack made resident on ``pipe`` under its video id, until Ray's multiplexing evicts it."""

    def __init__(self, pipe, video_id: str):
        self.pipe, self.video_id = pipe, video_id
        self._removed = False

    def generate(self, prompt: str, negative_prompt: str, steps: int, guidance: float, seed: int, eta: float,
                 init: str, callback=None):
        """Sample with this video; tav.runtime's UnknownVideoError if it was evicted before the call began.

        ``callback(step_index, total, t, latents)`` after each denoising step (an async job's progress)."""
        return self.pipe(prompt, negative_prompt=negative_prompt, video=self.video_id, steps=steps, guidance=guidance,
                         seed=seed, eta=eta, init=init, callback=callback)

    def __del__(self):
        # Ray Serve's multiplexing calls __del__ when its LRU unloads a model, and Python calls it again at
        # collection, possibly after the same id was loaded anew: only the first call removes.
        if self._removed:
            return
        self._removed = True
        try:
            self.pipe.remove_video(self.video_id)
        except Exception:  # at interpreter exit the pipeline may already be gone
            pass


def load_video_into(pipe, video_id: str, store: Store) -> ResidentVideo:
    """Validate STORE's pack for ``video_id`` against ``pipe``'s base and make it resident."""
    path = store.pack_path(video_id)
    if not path.is_file():
        raise VideoNotFound(f"no video {video_id!r} in the store")
    try:
        pipe.add_video(video_id, path, replace=True)
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # PackError, or a header the reader trips on
        raise VideoUnusable(f"video {video_id!r} cannot be served: {client_message(err)}") from None
    return ResidentVideo(pipe, video_id)
