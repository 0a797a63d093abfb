"""A pack's header, read and typed before any tensor byte is (docs/CONTRACTS.md "Pack").

The header is safetensors' JSON: a tensor index plus ``__metadata__`` = {"tavpack": JSON, "sha256": hex}.
Both JSON texts are parsed with the rules the service's responses use (runtime/strict_json.py: no NaN
or Infinity, bounded depth), and every field the runtime and the service read is checked through
runtime/file_fields.py: a re-signed pack with a garbled field is a one-line ``PackError``, listed by the
service as unusable, never a 500.
"""

import struct
from pathlib import Path

from .file_fields import (
    BOOLEAN,
    COUNT,
    INTEGER,
    OBJECT,
    POSITIVE_INT,
    TEXT,
    Fields,
    FileFormatError,
    Form,
    optional,
)
from .strict_json import parse_json

PACK_SCHEMA_VERSION = 1
PACK_SUFFIX = ".tavpack"
METADATA_KEY = "tavpack"
SHA_KEY = "sha256"
HEADER_LIMIT = 100 << 20  # safetensors' own cap on the JSON header


class PackError(ValueError):
    """A pack that is unreadable, tampered with, or made for another base."""


def read_header(fh, path: Path, size: int) -> tuple:
    """(header dict, offset of the tensor bytes) of a safetensors file, refusing truncation."""
    head = fh.read(8)
    if len(head) < 8:
        raise PackError(f"{path}: truncated ({size} bytes, not even a safetensors header); copy it again")
    (length,) = struct.unpack("<Q", head)
    if length > min(HEADER_LIMIT, size - 8):
        raise PackError(f"{path}: truncated or not a pack (header of {length} bytes in a {size}-byte file); "
                        "copy it again")
    try:
        header = parse_json(fh.read(length), path)
    except FileFormatError as err:
        raise PackError(f"{path}: corrupt header ({_short(err.problem)}); copy it again or re-make it") from None
    if not isinstance(header, dict):
        raise PackError(f"{path}: corrupt header (a JSON {type(header).__name__}, not an object); "
                        "copy it again or re-make it")
    return header, 8 + length


def pack_metadata(header: dict, path: Path) -> dict:
    """The pack's metadata, every field the runtime reads type-checked (the sha256 only proves integrity)."""
    raw = header.get("__metadata__")
    if raw is None or (isinstance(raw, dict) and (METADATA_KEY not in raw or SHA_KEY not in raw)):
        raise PackError(f"{path}: a safetensors file without tav pack metadata, not a {PACK_SUFFIX}")
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise PackError(f"{path}: corrupt header (__metadata__ must map names to strings); copy it again or re-make it")
    try:
        meta = parse_json(raw[METADATA_KEY], path)
        check_pack_metadata(meta, path)
    except FileFormatError as err:
        raise PackError(f"{path}: corrupt pack metadata ({_short(err.problem)}); "
                        "re-make it with tav-export --pack-for") from None
    meta[SHA_KEY] = raw[SHA_KEY]
    return meta


def check_pack_metadata(meta, where) -> None:
    """FieldError (naming the field) unless the fields the runtime and services read have their forms (schema 1)."""
    if not isinstance(meta, dict):
        raise FileFormatError(f"{where}: a JSON {type(meta).__name__}, not an object",
                              f"a JSON {type(meta).__name__}, not an object")
    fields = Fields(meta, where)
    if fields.take("schema_version", INTEGER) != PACK_SCHEMA_VERSION:
        return  # another schema: check_pack_fits names the versions
    base = fields.section("base", required=True)
    for key in ("id", "unet_frozen_sha256", "precision"):
        base.take(key, TEXT)
    for key in ("frames", "height", "width"):
        base.take(key, POSITIVE_INT)
    base.take("temporal_window", POSITIVE_INT, None)  # absent in packs from before windows
    for key, form in _OPTIONAL_FIELDS.items():
        fields.take(key, form, None)


_OPTIONAL_FIELDS = {"prompt": optional(TEXT), "run": OBJECT, "source": OBJECT, "tools": OBJECT,
                    "has_inverted_latents": BOOLEAN, "tensors": COUNT, "tensor_bytes": COUNT}

_INDEX_ENTRY = Form("an object with a dtype, a shape and two data offsets", lambda entry: (
    isinstance(entry, dict)
    and isinstance(entry.get("dtype"), str)
    and isinstance(entry.get("shape"), list) and all(COUNT(n) for n in entry["shape"])
    and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
    and all(COUNT(n) for n in entry["data_offsets"]) and entry["data_offsets"][0] <= entry["data_offsets"][1]))


def data_end(header: dict, path: Path) -> int:
    """Where the tensor bytes end by the header's index, after type-checking every entry of it."""
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not _INDEX_ENTRY(entry):
            raise PackError(f"{path}: corrupt header "
                            f"(tensor {name[:80]!r} needs a dtype, a shape and two data offsets); "
                            "copy it again or re-make it")
        end = max(end, entry["data_offsets"][1])
    return end


def _short(problem: str) -> str:
    return problem if len(problem) <= 200 else problem[:197] + "..."
