"""Writing RUN_DIR tensor files with the mode every other output gets: 0666 less the user's umask.

safetensors creates its files 0600 (it writes through a private temp file), so a tuned run would
be unreadable to the service account that exports or serves it, unlike every other output.
The umask is read without changing it: ``os.umask`` is process-wide, and setting it even briefly
changes the mode of files other threads create meanwhile.
"""

import os
from pathlib import Path

from safetensors.torch import save_file


def save_tensors(tensors: dict, path: Path) -> None:
    save_file(tensors, str(path))
    os.chmod(path, 0o666 & ~current_umask(Path(path).parent))


def current_umask(folder: Path) -> int:
    try:  # Linux 4.7+ reports it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    probe = Path(folder) / f".umask-probe-{os.getpid()}"  # elsewhere: what the kernel makes of a 0666 create
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        return 0o666 & ~os.fstat(fd).st_mode
    finally:
        os.close(fd)
        probe.unlink()
