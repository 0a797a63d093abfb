"""Claiming ``RUN_DIR.partial/`` for one tav-tune process, atomically.

Two runs with the same --out must not share the folder: their checkpoints would overwrite each
other. A fresh run creates the folder with a plain mkdir (atomic: of two racing runs exactly one
succeeds); every run, fresh or resumed, then holds an flock on it until it ends, so a second
``--resume`` of the same run is refused while the first one works. The kernel drops the lock when
the process dies, however it dies.
"""

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def claim_partial(partial: Path, resume: bool):
    """Yields True when this call created ``partial`` (a fresh run), False when it resumes one."""
    created = False
    if not resume:
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            partial.mkdir()
        except FileExistsError:
            raise FileExistsError(f"{partial} was just created by another tav-tune run with the same --out; "
                                  "let that one finish, or choose another --out") from None
        created = True
    fd = os.open(partial, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(f"another tav-tune run is using {partial}; "
                                  "let it finish (or stop it) first") from None
        yield created
    finally:
        os.close(fd)
