"""Per-video packs (``NAME.tavpack``): reading, verifying, and checking that a pack fits a base ENGINE_DIR.

A pack is one safetensors file (docs/CONTRACTS.md "Pack"): the tuned UNet tensors keyed by the
base graph's input names in the base's precision and layout, the video's DDIM-inverted latents
(``inverted_latents``, float32), and ``__metadata__`` = {"tavpack": JSON, "sha256": hex}.
The sha256 pins the whole file except itself: the canonical JSON of the header (tensor
index + metadata) and the tensor bytes, so any edit or truncation is caught on ``read_pack``.

Every refusal is a ``PackError`` with one line naming the pack, what differs (both sides),
and how to make a fitting pack.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .command import first_line
from .pack_header import (  # noqa: F401  (PACK_SCHEMA_VERSION, METADATA_KEY: re-exported for the pack writer)
    METADATA_KEY,
    PACK_SCHEMA_VERSION,
    PACK_SUFFIX,
    SHA_KEY,
    PackError,
    data_end,
    pack_metadata,
    read_header,
)
from .regular_files import NotRegularFile, open_regular

LATENTS_KEY = "inverted_latents"


def remake_hint(base_dir) -> str:
    return f"make one with `tav-export --weights RUN_DIR --pack-for {base_dir} --out NAME{PACK_SUFFIX}`"


def pack_digest(header: dict, data) -> str:
    """sha256 of a pack: its header without the sha256 field (canonical JSON), then the tensor bytes."""
    header = dict(header)
    header["__metadata__"] = {k: v for k, v in header.get("__metadata__", {}).items() if k != SHA_KEY}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    digest.update(data)
    return digest.hexdigest()


def read_pack_metadata(path) -> dict:
    """The pack's metadata (base, frames, size, precision, prompt, run summary, sha256) from its header alone.

    Cheap (a few KB read), for listing packs; nothing is verified: ``read_pack`` checks the sha256.
    """
    path = Path(path)
    try:
        with _open_pack(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            header, _ = read_header(fh, path, size)
    except OSError as err:
        raise PackError(f"{path}: cannot read the pack ({err.strerror or err})") from None
    data_end(header, path)
    meta = pack_metadata(header, path)
    meta["file_bytes"] = size
    return meta


def _open_pack(path: Path):
    try:
        return open_regular(path)
    except NotRegularFile as err:
        raise PackError(f"{err} (a pack is a {PACK_SUFFIX} file)") from None


@dataclass
class Pack:
    path: Path
    metadata: dict
    tensors: dict  # base UNet input name -> numpy array, in the base's precision and layout
    inverted_latents: np.ndarray | None  # float32 [1, 4, F, H/8, W/8]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.tensors.values())


def read_pack(path, max_tensor_bytes: int | None = None) -> Pack:
    """The pack's tensors, after its sha256 matched: a tampered or truncated pack is refused.

    The header is read and checked first (types, length against the file's size and, when given,
    tensor bytes against ``max_tensor_bytes``, see ``pack_byte_limit``): only then are the tensors read.
    """
    from safetensors.numpy import load

    path = Path(path)
    try:
        with _open_pack(path) as fh:
            size = os.fstat(fh.fileno()).st_size  # its size when opened: a growing file is not chased
            header, start = read_header(fh, path, size)
            end = start + data_end(header, path)
            meta = pack_metadata(header, path)
            if size != end:
                raise PackError(f"{path}: truncated or padded ({size} bytes, the header says {end}); copy it again")
            if max_tensor_bytes is not None and end - start > max_tensor_bytes:
                raise PackError(f"{path}: declares {end - start} bytes of tensors, "
                                f"more than the {max_tensor_bytes} its base takes; "
                                "it is not a pack for this base (check its metadata with read_pack_metadata)")
            fh.seek(0)
            blob = fh.read(size)
    except OSError as err:
        raise PackError(f"{path}: cannot read the pack ({err.strerror or err})") from None
    if len(blob) != end:  # shrank while read
        raise PackError(f"{path}: truncated or padded ({len(blob)} bytes, the header says {end}); copy it again")
    if pack_digest(header, memoryview(blob)[start:]) != meta[SHA_KEY]:
        raise PackError(f"{path}: sha256 mismatch (the file was edited or corrupted); copy it again or re-make it")
    try:
        arrays = load(blob)
    except Exception as err:  # safetensors' own structural checks
        raise PackError(f"{path}: unreadable tensors ({first_line(err, None)}); re-make it") from None
    latents = arrays.pop(LATENTS_KEY, None)
    return Pack(path, meta, arrays, latents)


def pack_byte_limit(manifest) -> int:
    """The most tensor bytes a pack for base ``manifest`` holds: its tunable inputs plus float32 inverted latents."""
    tensors = [(t.shape, t.dtype) for t in manifest.tunable_inputs] + [(manifest.latent_shape, "float32")]
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for shape, dtype in tensors)


def check_pack_fits(pack: Pack, manifest) -> None:
    """Raise PackError naming both sides unless ``pack`` was made for this base ENGINE_DIR."""
    base, meta, where = manifest.base, pack.metadata, f"pack {pack.path}"
    hint = remake_hint(manifest.engine_dir)
    if meta.get("schema_version") != PACK_SCHEMA_VERSION:
        raise PackError(f"{where} has schema_version {meta.get('schema_version')!r}, "
                        f"this runtime reads {PACK_SCHEMA_VERSION}; {hint}")
    made_for = meta.get("base") or {}
    ours = {"precision": manifest.precision, "frames": manifest.frames,
            "height": manifest.height, "width": manifest.width}
    theirs = {k: made_for.get(k) for k in ours}
    if theirs["precision"] != ours["precision"]:
        raise PackError(f"{where} is {theirs['precision']}, base {manifest.engine_dir} is {ours['precision']}; {hint}")
    if theirs != ours:
        raise PackError(f"{where} is for {_shape(theirs)}, base {manifest.engine_dir} is {_shape(ours)}; {hint}")
    window = made_for.get("temporal_window", made_for.get("frames"))  # packs from before windows: full attention
    if window != manifest.temporal_window:
        raise PackError(f"{where} was made for a temporal window of {window} frames, base {manifest.engine_dir} has "
                        f"{manifest.temporal_window}; {hint}")
    if made_for.get("unet_frozen_sha256") != base["unet_frozen_sha256"]:
        raise PackError(f"{where} was tuned from base UNet {str(made_for.get('unet_frozen_sha256'))[:12]}, base "
                        f"{manifest.engine_dir} holds UNet {base['unet_frozen_sha256'][:12]}; {hint}")
    if made_for.get("id") != base["id"]:
        raise PackError(f"{where} was made for base id {str(made_for.get('id'))[:12]}, base {manifest.engine_dir} is "
                        f"{base['id'][:12]}; {hint}")
    # The id already covers the tensor list; these checks guard against a hand-made header.
    want = {t.name: t for t in manifest.tunable_inputs}
    if set(pack.tensors) != set(want):
        missing, extra = sorted(set(want) - set(pack.tensors)), sorted(set(pack.tensors) - set(want))
        raise PackError(f"{where} has {len(pack.tensors)} tensors, base {manifest.engine_dir} takes {len(want)} "
                        f"(missing {missing[:1]}, unexpected {extra[:1]}); {hint}")
    for name, array in pack.tensors.items():
        spec = want[name]
        if tuple(array.shape) != tuple(spec.shape) or array.dtype.name != spec.dtype:
            raise PackError(f"{where}: {name} is {array.dtype.name}{list(array.shape)}, base {manifest.engine_dir} "
                            f"takes {spec.dtype}{list(spec.shape)}; {hint}")
        if not np.isfinite(array).all():  # would surface only at step 1, as a NaN from "the graphs"
            raise PackError(f"{where}: tuned tensor {name} contains NaN/Inf (a diverged tuning run); re-tune it "
                            "(tav-tune, e.g. a lower learning rate) and re-make the pack")
    latents = pack.inverted_latents
    if latents is not None and (latents.shape != manifest.latent_shape or latents.dtype != np.float32):
        raise PackError(f"{where}: inverted latents are {latents.dtype}{list(latents.shape)}, "
                        f"base {manifest.engine_dir} needs float32{list(manifest.latent_shape)}; {hint}")
    if latents is not None and not np.isfinite(latents).all():
        raise PackError(f"{where}: inverted latents contain NaN/Inf; "
                        "re-run the DDIM inversion (tav-tune) and re-make the pack")


def _shape(fields: dict) -> str:
    return f"{fields['frames']} frames {fields['width']}x{fields['height']}"
