"""Publishing a file or a folder whole: built under a temp name beside the target, then renamed onto it.

A reader sees the old target or the complete new one, never part of one. The temp sits in the target's
folder (one file system, so the rename is atomic); its bytes are fsynced before the rename and the folder
after it, so a power cut cannot leave a renamed but empty file; and it is removed on any failure, Ctrl-C
included. Every site that publishes an output (videos, RUN_DIRs, ENGINE_DIRs, packs, job records, caches)
goes through here.

One mode policy for all of it: files 0644 and folders 0755, less the process umask. Services under other
users read what a user exported, and a stricter umask (027, 077) still holds. The umask is read, never set:
``os.umask`` is process-wide, and setting it even briefly changes the mode of what other threads create.
"""

import errno
import json
import os
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o644
FOLDER_MODE = 0o755


def current_umask(folder) -> int:
    """The process umask, read without changing it (``folder``: where to probe if /proc cannot tell)."""
    try:  # Linux 4.7+ reports it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    probe = temp_path(Path(folder) / "umask-probe")  # elsewhere: what the kernel makes of a 0777 create
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o777)
    try:
        return 0o777 & ~stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        probe.unlink()


def temp_path(target, suffix: str = "") -> Path:
    """An unused hidden name beside ``target``: ``.<name>.<random>.tmp<suffix>`` (suffix: for writers that
    choose the format by extension, such as ".gif")."""
    target = Path(target)
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp{suffix}")


def publish_file(temp, target) -> Path:
    """Give ``temp`` the file mode, fsync it, rename it onto ``target`` and fsync the folder.
    ``temp`` is gone afterwards, whether this succeeded or raised."""
    temp, target = Path(temp), Path(target)
    try:
        os.chmod(temp, FILE_MODE & ~current_umask(target.parent))
        _fsync(temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return target


@contextmanager
def atomic_file(target, suffix: str = ""):
    """Yields a temp path beside ``target`` to write; published when the block ends, removed if it raises."""
    temp = temp_path(target, suffix)
    try:
        yield temp
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    publish_file(temp, target)


def write_bytes_atomic(target, data: bytes) -> Path:
    with atomic_file(target) as temp:
        with open(temp, "xb") as fh:
            fh.write(data)
    return Path(target)


def write_json_atomic(target, data, indent: int = 2) -> Path:
    """``data`` as indented JSON: a reader never sees half a record or manifest."""
    return write_bytes_atomic(target, (json.dumps(data, indent=indent) + "\n").encode())


def staging_folder(target, prefix: str | None = None) -> Path:
    """A new empty folder beside ``target`` to build it in (``prefix``: its name's start, default ``.<name>.``).
    Creates ``target``'s parent folders if needed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix or f".{target.name}.", dir=target.parent))


def publish_folder(staging, target, *, replace: bool = False, aside=None) -> Path:
    """Give the tree in ``staging`` the modes, fsync it, rename it onto ``target`` and fsync the parent folder.

    ``target`` may be absent or an empty folder (replaced by the one rename); a non-empty one is an
    OSError and nothing moves. With ``replace`` an existing ``target`` is first renamed to ``aside``
    (default: a temp name beside it), renamed back if the second rename fails, and deleted once the new
    one is in place. ``staging`` is left as it is on failure: the caller decides (``atomic_folder``
    removes it; tav-tune keeps a finished run for the user to move).
    """
    staging, target = Path(staging), Path(target)
    _settle_tree(staging, current_umask(target.parent))
    if replace and target.exists():
        aside = Path(aside) if aside is not None else temp_path(target, ".old")
        os.rename(target, aside)
        try:
            os.rename(staging, target)
        except BaseException:
            os.rename(aside, target)  # put the previous one back rather than lose it
            raise
        _fsync_folder(target.parent)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(staging, target)
        _fsync_folder(target.parent)
    return target


@contextmanager
def atomic_folder(target, *, replace: bool = False, prefix: str | None = None):
    """Yields a staging folder beside ``target`` to fill; published (``publish_folder``) when the block
    ends, removed if the block or the publishing raises."""
    staging = staging_folder(target, prefix)
    try:
        yield staging
        publish_folder(staging, target, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _settle_tree(folder: Path, umask: int) -> None:
    """The mode policy on ``folder`` and everything in it, and all of it on disk. Links are left alone
    (never followed), as are FIFOs and devices (opening one to fsync it could block)."""
    for root, _, files in os.walk(folder, topdown=False):  # os.walk does not descend into linked folders
        for name in files:
            path = os.path.join(root, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.chmod(path, FILE_MODE & ~umask)
                _fsync(path)
        os.chmod(root, FOLDER_MODE & ~umask)
        _fsync_folder(root)


def _fsync(path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(path) -> None:
    """A folder's entries on disk (a rename in it survives a power cut); file systems that cannot sync a
    folder (some network mounts) refuse with EINVAL, and have nothing more to offer."""
    try:
        _fsync(path)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
