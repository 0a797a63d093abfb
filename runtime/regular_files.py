"""Opening a file for reading only when it is a regular file: never a device, FIFO or socket.

A name can lead (directly or through a symlink) to ``/dev/zero``, which never ends, or to a
FIFO, whose ``open`` blocks until someone writes. Hashing or reading such a "file" hangs or
fills memory. So the file is opened without blocking, checked with ``fstat`` on the open
descriptor (what is checked is what is read: no window to swap the name), and only then read.
"""

import os
import stat


class NotRegularFile(ValueError):
    """A path that leads to a device, FIFO, socket or folder instead of a regular file."""

    def __init__(self, message: str, kind: str = "not a regular file"):  # default: exceptions unpickle from args
        super().__init__(message)
        self.kind = kind


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def describe_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path):
    """``path`` opened for binary reading if it is a regular file (symlinks followed), else ``NotRegularFile``.

    OSError (missing, unreadable) passes through for the caller to word.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = describe_kind(mode)
            raise NotRegularFile(f"{path} is {kind}, not a regular file; pass the file itself", kind)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise

