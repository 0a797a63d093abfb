"""Hidden siblings an export left behind when it was killed (SIGKILL, power loss), and removing them safely.

An export builds in ``.<out>.partial-<pid>-<random>/`` and, with --overwrite, moves the previous
ENGINE_DIR aside into ``.<out>.old-<pid>-<random>/engine`` for the milliseconds of the swap. The
process holds an flock on each while it works (released by the kernel when it dies, however it
dies). A sibling is stale only when both say its owner is gone: the pid in its name is not a
running process here, and its lock is free. Anything else, including folders without a pid in
the name (exports before this scheme), is left alone and only listed.

A stale ``.old-*`` is the previous ENGINE_DIR of a swap that was cut between its two renames: when
--out is missing it is put back there, never deleted.
"""

import fcntl
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial-"
OLD = ".old-"


def hold_lock(folder: Path) -> int:
    """An exclusive flock on ``folder``, held until the returned fd is closed (or the process dies)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def lock_folder(folder: Path):
    """Hold an exclusive flock on ``folder`` while the block runs."""
    fd = hold_lock(folder)
    try:
        yield
    finally:
        os.close(fd)


def leftovers(out_dir: Path) -> list:
    """[(path, state)] for every hidden sibling an export of ``out_dir`` made.

    ``state`` is "stale", "in use" or "unknown".
    """
    out_dir = Path(out_dir).absolute()
    if not out_dir.parent.is_dir():
        return []
    found = []
    for kind in (PARTIAL, OLD):
        pattern = re.compile(re.escape(f".{out_dir.name}{kind}") + r"(?:(\d+)-)?[^/]*")
        for path in sorted(out_dir.parent.glob(f".{glob_escape(out_dir.name)}{kind}*")):
            match = pattern.fullmatch(path.name)
            if not match or path.is_symlink() or not path.is_dir():
                continue
            found.append((path, _state(path, match.group(1))))
    return found


def clean(out_dir: Path) -> list:
    """Remove the stale siblings of ``out_dir`` (restoring a cut swap's ENGINE_DIR).

    Returns what was done, one line each.
    """
    out_dir = Path(out_dir).absolute()
    done = []
    for path, state in leftovers(out_dir):
        if state != "stale":
            continue
        previous = path / "engine"
        if OLD in path.name and previous.is_dir() and not out_dir.exists():
            os.rename(previous, out_dir)  # restores a published ENGINE_DIR as it was: a move back, not a publish
            done.append(f"restored {out_dir} from {path}")
        shutil.rmtree(path, ignore_errors=True)
        done.append(f"removed {path}")
    return done


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _state(path: Path, pid) -> str:
    if pid is None:
        return "unknown"  # no pid in the name: cannot tell whether its export still runs
    if _running(int(pid)) or not _lock_free(path):
        return "in use"
    return "stale"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _lock_free(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
