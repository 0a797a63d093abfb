"""Reading pickled torch files (.ckpt, .bin, .pt) that someone else wrote, with bounded time and memory.

``torch.load(weights_only=True)`` runs no code, but on its own it trusts the container:
- a zip record may be compressed (deflate): a 2 MB file can inflate to gigabytes before any check;
- the pre-1.6 legacy format is a bare stream whose declared sizes are allocated as read;
- the unpickled object may contain itself (``d["state_dict"] = d``), so a walk "down to the
  weights" never ends.
So a file is read only when it is a regular file in torch's zip format whose records are all
stored uncompressed (as ``torch.save`` writes them) and lie inside the file; torch then checks
each tensor's declared size against its record. Walks over the result are bounded (``unwrap_state_dict``).
"""

import os
import pickle
import zipfile
from pathlib import Path

import torch

from tav.runtime.command import first_line
from tav.runtime.regular_files import NotRegularFile, open_regular

MAX_NESTING = 4  # Lightning nests the weights once ({"state_dict": {...}}); anything deeper is not a checkpoint


class UnsafeTorchFile(ValueError):
    """A torch file refused before or while unpickling: "FILE is not a safe torch file (why): what to do"."""


def refuse(path, why: str, what_to_do: str) -> UnsafeTorchFile:
    return UnsafeTorchFile(f"{path} is not a safe torch file ({why}): {what_to_do}")


CONVERT = "convert it to .safetensors with a tool you trust"


def check_torch_zip(path) -> None:
    """UnsafeTorchFile (one line) unless ``path`` is a regular zip-format torch file with stored records inside it."""
    path = Path(path)
    try:
        fh = open_regular(path)
    except NotRegularFile as err:
        raise refuse(path, f"it is {err.kind}, not a regular file", "pass the file itself") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if not zipfile.is_zipfile(fh):
            raise refuse(path, "not a zip-format torch file: the pre-1.6 legacy format's sizes cannot be checked "
                               "before loading", CONVERT)
        try:
            records = zipfile.ZipFile(fh).infolist()
        except (zipfile.BadZipFile, ValueError, OSError) as err:
            raise refuse(path, f"a corrupt zip: {first_line(err)}", "copy it again") from None
    compressed = [record for record in records if record.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise refuse(path, f"{len(compressed)} of its records are compressed "
                           f"({sum(r.file_size for r in compressed)} bytes once inflated), which torch.save never "
                           "writes", f"refusing to inflate them; {CONVERT}")
    for record in records:
        if record.header_offset + record.file_size > size:
            raise refuse(path, f"record {record.filename[-60:]!r} declares {record.file_size} bytes past the end of "
                               f"the {size}-byte file", "truncated or forged; copy it again")
    if sum(record.file_size for record in records) > size:  # overlapping records would be read once each
        raise refuse(path, f"its records declare more bytes than the {size}-byte file holds (overlapping)",
                     "forged; pass a file written by torch.save")


def load_torch_file(path, mmap: bool = True):
    """The tensors-only unpickling of a checked torch file, memory-mapped where its layout allows (and ``mmap``).

    The one way a user's .pt/.ckpt/.bin is read: whatever goes wrong (a pickle naming code, a corrupt
    record, a truncated stream) is one UnsafeTorchFile line, never an UnpicklingError traceback.
    """
    check_torch_zip(path)
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            # records not aligned for mmap; their sizes are bounded by the file now
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only met something other than tensors and plain containers
        raise refuse(path, _refusal_reason(err), "it pickles objects besides tensors, and none were loaded; "
                     f"pass a file of tensors, or {CONVERT}") from None
    except Exception as err:  # a truncated or corrupt stream inside a well-formed zip
        raise refuse(path, f"unreadable: {first_line(err, with_type=True)}", "copy it again") from None


def _refusal_reason(err: BaseException) -> str:
    """torch's own reason ("... GLOBAL posix.system ..."), without its first line's advice to load unsafely."""
    for line in str(err).splitlines():
        if "GLOBAL" in line or "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[-1].strip().split(". ")[0].rstrip(".")[:160]
    return "a pickle that tensors-only loading refuses"


def unwrap_state_dict(state, path) -> dict:
    """The innermost ``state_dict`` of a (Lightning-style) checkpoint, refusing cycles and deep nesting."""
    for _ in range(MAX_NESTING + 1):
        inner = state.get("state_dict")
        if not isinstance(inner, dict):
            return state
        if inner is state:
            raise refuse(path, "its state_dict contains itself", "a forged checkpoint; pass a real one")
        state = inner
    raise refuse(path, f"state_dict nested more than {MAX_NESTING} levels deep",
                 "pass a Stable Diffusion 1.x checkpoint")
