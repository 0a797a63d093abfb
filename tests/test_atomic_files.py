"""tav.runtime.atomic_files: whole-or-nothing publishing, one mode policy under the umask, fsynced, no temp left."""

import json
import os
import stat
from pathlib import Path

import pytest

from tav.runtime import atomic_files
from tav.runtime.atomic_files import (
    atomic_file,
    atomic_folder,
    current_umask,
    publish_folder,
    staging_folder,
    write_bytes_atomic,
    write_json_atomic,
)


@pytest.fixture
def umask():
    """Sets the process umask for one test (tests run one at a time per process), restoring it after."""
    previous = os.umask(0o022)

    def set_to(mask: int) -> int:
        os.umask(mask)
        return mask

    yield set_to
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def names(folder) -> list:
    return sorted(p.name for p in Path(folder).iterdir())


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o027, 0o077])
def test_files_get_0644_and_folders_0755_less_the_umask(tmp_path, umask, mask):
    umask(mask)
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    with atomic_folder(tmp_path / "tree") as staging:
        (staging / "sub").mkdir(mode=0o700)
        (staging / "sub" / "f.txt").write_text("y")
        os.chmod(staging / "sub" / "f.txt", 0o600)  # as safetensors and mkstemp make their files
    assert mode(tmp_path / "a.bin") == 0o644 & ~mask
    assert mode(tmp_path / "tree") == mode(tmp_path / "tree" / "sub") == 0o755 & ~mask
    assert mode(tmp_path / "tree" / "sub" / "f.txt") == 0o644 & ~mask


def test_the_umask_is_read_without_changing_it(tmp_path, umask, monkeypatch):
    umask(0o027)

    def forbidden(mask):
        raise AssertionError("os.umask is process-wide: setting it changes what other threads create")

    monkeypatch.setattr(os, "umask", forbidden)
    assert current_umask(tmp_path) == 0o027
    real_read_text = Path.read_text

    def without_proc(self, *args, **kwargs):
        if str(self) == "/proc/self/status":
            raise OSError("no /proc here")
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", without_proc)
    assert current_umask(tmp_path) == 0o027  # the probe file, where /proc cannot tell
    assert names(tmp_path) == []


def test_a_file_and_then_its_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(atomic_files.os, "fsync", recording_fsync)
    write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert len(synced) == 2 and Path(synced[0]).parent == tmp_path and Path(synced[0]).name.startswith(".r.json.")
    assert synced[1] == str(tmp_path)  # after the rename: the new directory entry survives a power cut
    synced.clear()
    with atomic_folder(tmp_path / "tree") as staging:
        (staging / "f").write_text("y")
    assert synced[-1] == str(tmp_path) and any(s.endswith("/f") for s in synced)


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError])
def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, interruption):
    target = tmp_path / "v.npy"
    target.write_bytes(b"old")
    with pytest.raises(interruption):
        with atomic_file(target, suffix=".npy") as temp:
            temp.write_bytes(b"half")
            raise interruption
    assert target.read_bytes() == b"old" and names(tmp_path) == ["v.npy"]


def test_a_failed_rename_leaves_no_temp(tmp_path, monkeypatch):
    def no_rename(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(atomic_files.os, "replace", no_rename)
    with pytest.raises(OSError, match="cross-device"):
        write_bytes_atomic(tmp_path / "a.bin", b"x")
    assert names(tmp_path) == []


def test_json_is_written_whole(tmp_path):
    write_json_atomic(tmp_path / "r.json", {"a": 1})
    write_json_atomic(tmp_path / "r.json", {"b": 2})
    assert json.loads((tmp_path / "r.json").read_text()) == {"b": 2} and names(tmp_path) == ["r.json"]


def test_a_folder_replaces_an_empty_one_and_refuses_a_full_one(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    with atomic_folder(target) as staging:
        (staging / "run.json").write_text("{}")
    assert names(target) == ["run.json"] and names(tmp_path) == ["run"]
    with pytest.raises(OSError):  # something is there: nothing is replaced without replace=True
        with atomic_folder(target) as staging:
            (staging / "run.json").write_text('{"new": 1}')
    assert (target / "run.json").read_text() == "{}" and names(tmp_path) == ["run"]


def test_a_folder_publish_with_replace_swaps_and_leaves_nothing_beside(tmp_path):
    target = tmp_path / "frames"
    target.mkdir()
    (target / "frame_0000.png").write_bytes(b"old")
    with atomic_folder(target, replace=True) as staging:
        (staging / "frame_0000.png").write_bytes(b"new")
    assert (target / "frame_0000.png").read_bytes() == b"new" and names(tmp_path) == ["frames"]


def test_a_failed_swap_puts_the_previous_folder_back(tmp_path, monkeypatch):
    target, aside = tmp_path / "checkpoint", tmp_path / "checkpoint.old"
    target.mkdir()
    (target / "state.json").write_text("previous")
    staging = staging_folder(target)
    (staging / "state.json").write_text("next")
    real_rename = os.rename

    def fail_on_the_new_one(src, dst):
        if Path(src) == staging:
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(atomic_files.os, "rename", fail_on_the_new_one)
    with pytest.raises(OSError, match="Input/output"):
        publish_folder(staging, target, replace=True, aside=aside)
    assert (target / "state.json").read_text() == "previous" and not aside.exists()
    assert (staging / "state.json").read_text() == "next"  # publish_folder leaves staging to its caller


def test_a_failed_folder_build_leaves_no_staging(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(tmp_path / "model") as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise KeyboardInterrupt
    assert names(tmp_path) == []
