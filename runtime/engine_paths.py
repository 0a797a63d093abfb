"""Turning a file name from manifest.json into a path: strictly inside the ENGINE_DIR, or refused.

A manifest is written by whoever made the folder, so its names are untrusted input. A name
must be a relative POSIX path without ``..``; after following symlinks it must still lie
inside the folder. The refusal reads the same whether or not something exists at the
name, so a crafted manifest cannot probe the file system outside the folder.
"""

from pathlib import Path, PurePosixPath


class UnsafeName(ValueError):
    """A manifest file name that would leave the ENGINE_DIR (absolute, ``..``, a symlink out, not a string)."""


def resolve_inside(root, name) -> Path:
    """``root / name`` when it stays inside ``root`` (symlinks followed), else ``UnsafeName``."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise UnsafeName(f"manifest.json names {name!r}, which is not a relative file name inside the folder")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise UnsafeName(f"manifest.json names {name!r}, which is not a relative file name inside the folder")
    root = Path(root)
    real_root = root.resolve()
    # resolve() does not need the file to exist; a symlink anywhere on the way is followed, so a link
    # out of the folder lands outside real_root and is refused like "../x".
    if not (root / pure).resolve().is_relative_to(real_root):
        raise UnsafeName(f"manifest.json names {name!r}, which is not a relative file name inside the folder")
    return root / pure
