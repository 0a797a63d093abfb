"""runtime/packs.py on hand-made files: the header and its checksum, regular files only, and add_video's checks.

Each case is a tiny pack written here (a header re-signed as an editor would, a link to /dev/zero, a FIFO), so no
model runs. add_video runs on a synthetic base ENGINE_DIR whose UNet takes one tunable input (tests/fixtures:
synthetic_base), so a pack is one float. Packs made by tav-export for a real base are in test_packs.py.
"""

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from tav.export.pack_writer import _write_atomic
from tav.runtime import PackError, VideoPipeline, read_pack_metadata
from tav.runtime.packs import pack_digest, read_pack

from fixtures.refusals import bounded_child, one_line, within
from fixtures.synthetic_engine_dir import F, H, W

# --- headers re-signed by whoever edited them ---------------------------------------------------


GOOD_META = {"schema_version": 1, "prompt": "a man is skiing", "run": {}, "has_inverted_latents": False,
             "base": {"id": "b" * 64, "unet_frozen_sha256": "a" * 64, "frames": F, "height": H, "width": W,
                      "precision": "fp32"}}
DATA = np.arange(4, dtype=np.float32).tobytes()


def signed_pack(path: Path, header, data: bytes = DATA, sign: bool = True) -> Path:
    """A pack file with ``header`` as its JSON header, its sha256 recomputed as an editor would (when it can be)."""
    if sign and isinstance(header, dict) and isinstance(header.get("__metadata__"), dict):
        header["__metadata__"]["sha256"] = pack_digest(header, data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def header_with(tensor=None, metadata=None, meta=None) -> dict:
    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]} if tensor is None else tensor
    fields = {"tavpack": json.dumps(GOOD_META if meta is None else meta)} if metadata is None else metadata
    return {"__metadata__": fields, "t": entry}


def test_a_hand_signed_good_header_reads(tmp_path):
    """The helper's packs are valid unless a case breaks them: every refusal below is that case's."""
    pack = read_pack(signed_pack(tmp_path / "ok.tavpack", header_with()))
    assert pack.tensors["t"].tolist() == [0, 1, 2, 3] and pack.metadata["base"]["frames"] == F


@pytest.mark.parametrize("header, message", [
    (header_with(tensor={"dtype": "F32", "shape": [4]}), "tensor 't' needs a dtype, a shape and two data offsets"),
    (header_with(tensor={"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}), "two data offsets"),
    (header_with(tensor={"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}), "two data offsets"),
    (header_with(tensor={"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}), "two data offsets"),
    (header_with(tensor={"shape": [4], "data_offsets": [0, 16]}), "two data offsets"),
    (header_with(tensor=["F32", [4], [0, 16]]), "two data offsets"),
    ([{"t": 1}], "a JSON list, not an object"),
    ({"__metadata__": "tavpack", "t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
     "__metadata__ must map"),
    (header_with(metadata={"tavpack": {"schema_version": 1}, "sha256": "0"}), "__metadata__ must map names to strings"),
    (header_with(meta=["schema_version", 1]), "corrupt pack metadata (a JSON list, not an object)"),
    (header_with(meta={**GOOD_META, "schema_version": True}), "schema_version is True, expected an integer"),
    (header_with(meta={**GOOD_META, "base": "b" * 64}), "base is 'bbbb"),
    (header_with(meta={**GOOD_META, "base": {**GOOD_META["base"], "frames": "3"}}), "base.frames is '3'"),
    (header_with(meta={**GOOD_META, "base": {**GOOD_META["base"], "id": None}}), "base.id is None"),
    (header_with(meta={**GOOD_META, "base": {**GOOD_META["base"], "temporal_window": "all"}}),
     "base.temporal_window is 'all'"),
    (header_with(meta={**GOOD_META, "prompt": ["a", "b"]}), "prompt is ['a', 'b'], expected a string or null"),
    (header_with(meta={**GOOD_META, "run": "x"}), "run is 'x', expected an object"),
], ids=["no-offsets", "string-offsets", "reversed-offsets", "string-shape", "no-dtype", "list-entry", "list-header",
        "string-metadata", "object-in-metadata", "metadata-list", "schema-true", "base-string", "frames-string",
        "id-null", "window-string", "prompt-list", "run-string"])
def test_malformed_re_signed_pack_headers_are_one_line_pack_errors(tmp_path, header, message):
    path = signed_pack(tmp_path / "bad.tavpack", header)
    for read in (read_pack, read_pack_metadata):  # tav-run/add_video, and listing (GET /v1/videos)
        with pytest.raises(PackError) as err:
            read(path)
        assert message in one_line(err) and str(path) in str(err.value)

# --- regular files only: no devices, FIFOs or links to them ---------------------------------------------


def test_a_pack_linked_to_dev_zero_is_refused_without_reading_it(tmp_path):
    link = tmp_path / "zero.tavpack"
    link.symlink_to("/dev/zero")
    out = bounded_child(f"""
        from tav.runtime.packs import PackError, read_pack, read_pack_metadata
        for read in (read_pack, read_pack_metadata):
            try:
                read({str(link)!r})
            except PackError as err:
                print(err)
    """)
    assert out.count("is a character device, not a regular file") == 2 and str(link) in out


def test_a_fifo_pack_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "pipe.tavpack"
    os.mkfifo(fifo)
    with within():
        for read in (read_pack, read_pack_metadata):
            with pytest.raises(PackError) as err:
                read(fifo)
            assert "is a FIFO (named pipe), not a regular file" in one_line(err)

# --- add_video on a base: a pack must be finite and no bigger than the base takes ------------------------


def make_pack(path: Path, bias: float = 0.1, latents=None) -> Path:
    tensors = {"tuned_bias": np.array([bias], np.float32)}
    if latents is not None:
        tensors["inverted_latents"] = latents
    _write_atomic(path, tensors, {**GOOD_META, "has_inverted_latents": latents is not None})
    return path


@pytest.fixture(scope="module")
def base_pipe(synthetic_base):
    with VideoPipeline.load(synthetic_base, backend="onnxruntime", device="cpu") as pipeline:
        yield pipeline


def test_a_good_pack_samples_on_the_synthetic_base(base_pipe, tmp_path):
    base_pipe.add_video("good", make_pack(tmp_path / "good.tavpack"))
    result = base_pipe("a dog", steps=2, video="good", init="noise")
    assert np.isfinite(result.latents).all()
    base_pipe.remove_video("good")


@pytest.mark.parametrize("bias, latents, message", [
    (float("nan"), None, "tuned tensor tuned_bias contains NaN/Inf"),
    (float("inf"), None, "tuned tensor tuned_bias contains NaN/Inf"),
    (0.1, np.full((1, 4, F, H // 8, W // 8), np.nan, np.float32), "inverted latents contain NaN/Inf"),
], ids=["nan-tensor", "inf-tensor", "nan-latents"])
def test_add_video_refuses_non_finite_packs_naming_the_tensor(base_pipe, tmp_path, bias, latents, message):
    pack = make_pack(tmp_path / "nan.tavpack", bias, latents)
    with pytest.raises(PackError) as err:
        base_pipe.add_video(tmp_path.name, pack)
    assert message in one_line(err) and "exported graphs" not in str(err.value)
    assert tmp_path.name not in base_pipe.videos


def test_add_video_of_a_pack_linked_to_dev_zero_is_refused(synthetic_base, tmp_path):
    link = tmp_path / "zero.tavpack"
    link.symlink_to("/dev/zero")
    out = bounded_child(f"""
        from tav.runtime import PackError, VideoPipeline
        with VideoPipeline.load({str(synthetic_base)!r}, backend="onnxruntime", device="cpu") as pipe:
            try:
                pipe.add_video("zero", {str(link)!r})
            except PackError as err:
                print(err, pipe.videos)
    """)
    assert "is a character device, not a regular file" in out and out.strip().endswith("{}")


def test_add_video_refuses_a_pack_bigger_than_its_base_takes_before_reading_it(base_pipe, tmp_path):
    header = header_with(tensor={"dtype": "F32", "shape": [1 << 26], "data_offsets": [0, 1 << 28]})
    header["__metadata__"]["sha256"] = "0" * 64  # whether it matches is never reached
    path = signed_pack(tmp_path / "big.tavpack", header, data=b"", sign=False)
    os.truncate(path, path.stat().st_size + (1 << 28))  # 256 MiB, sparse: costs neither disk nor memory
    with pytest.raises(PackError) as err:
        base_pipe.add_video(tmp_path.name, path)
    limit = 4 + 4 * 4 * F * (H // 8) * (W // 8)  # tuned_bias float32[1] + float32 latents
    assert f"declares {1 << 28} bytes of tensors, more than the {limit} its base takes" in one_line(err)
