"""Issue 19, total validation: the probe's non-clear cases (hangs, tracebacks, silent acceptance) as regression tests.

Each case is a tiny file written here (a forged .ckpt, a manifest section, a link to /dev/zero); no model runs where
a header suffices. Manifest sections are edited on a synthetic base ENGINE_DIR (tests/fixtures: synthetic_base).
The pack format's own refusals are in test_pack_format.py. Hangs are bounded as tests/fixtures/refusals.py says.
"""

import json
import os
import re
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tav.export.errors import ExportError
from tav.runtime import VideoPipeline
from tav.runtime.cli import main as tav_run
from tav.runtime.manifest import EngineDirError, file_sha256, read_manifest, verify_files
from tav.runtime.regular_files import NotRegularFile
from tav.runtime.video_output import VideoOutputError, check_output_path
from tav.tuner.model.unet_weights import read_state_dict
from tav.tuner.model_sources import single_file

from fixtures.commands import error_of
from fixtures.refusals import one_line, within
from fixtures.synthetic_engine_dir import PACK_BASE, F, H, W, edited_copy

# --- regular files only: no devices, FIFOs or links to them ---------------------------------------------


def test_file_sha256_refuses_devices_and_fifos_at_once(tmp_path):
    (tmp_path / "zero.safetensors").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.bin")
    with within():
        for path, kind in ((tmp_path / "zero.safetensors", "a character device"), (tmp_path / "pipe.bin", "a FIFO")):
            with pytest.raises(NotRegularFile, match=kind):
                file_sha256(path)


def test_a_single_file_checkpoint_linked_to_dev_zero_is_refused(tmp_path, monkeypatch):
    from tav.tuner.model_sources import resolve_base_model

    monkeypatch.setenv("TAV_SINGLE_FILE_CACHE", str(tmp_path / "cache"))
    link = tmp_path / "model.safetensors"
    link.symlink_to("/dev/zero")
    with within(), pytest.raises(ValueError) as err:
        resolve_base_model(link)
    assert "is a character device, not a regular file" in one_line(err)


def test_an_engine_dir_file_replaced_by_a_fifo_is_refused_by_name(synthetic_base, tmp_path):
    root = edited_copy(synthetic_base, tmp_path, lambda root, manifest: None)
    (root / "scheduler_config.json").unlink()
    os.mkfifo(root / "scheduler_config.json")
    with within(), pytest.raises(EngineDirError) as err:
        verify_files(read_manifest(root), "onnxruntime")
    assert "scheduler_config.json is a FIFO (named pipe), not a regular file" in one_line(err)


# --- single-file and pickled weights: bounded ------------------------------------------------------------


def test_a_ckpt_whose_state_dict_contains_itself_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TAV_SINGLE_FILE_CACHE", str(tmp_path / "cache"))
    state = {"w": torch.zeros(2)}
    state["state_dict"] = state
    torch.save(state, tmp_path / "loop.ckpt")
    with within(), pytest.raises(ValueError) as err:
        single_file.convert_single_file(tmp_path / "loop.ckpt")
    assert "its state_dict contains itself" in one_line(err)


def test_a_ckpt_nested_past_the_limit_is_refused(tmp_path):
    state = {"w": torch.zeros(2)}
    for _ in range(8):
        state = {"state_dict": state}
    torch.save(state, tmp_path / "deep.ckpt")
    with pytest.raises(ValueError) as err:
        single_file.read_shapes(tmp_path / "deep.ckpt")
    assert "state_dict nested more than 4 levels deep" in one_line(err)


def _rezipped(source: Path, target: Path, compression: int = zipfile.ZIP_STORED, extra: bytes = b"") -> Path:
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(target, "w", compression) as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info.filename))
    target.write_bytes(target.read_bytes() + extra)
    return target


def test_a_compressed_ckpt_is_refused_before_it_inflates(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1 << 24)}}, tmp_path / "plain.ckpt")  # 64 MB of zeros
    bomb = _rezipped(tmp_path / "plain.ckpt", tmp_path / "bomb.ckpt", zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 200_000
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        single_file.read_shapes(bomb)
    assert "of its records are compressed" in one_line(err) and "refusing to inflate them" in str(err.value)
    assert int(re.search(r"\((\d+) bytes once inflated\)", str(err.value))[1]) > 1 << 26  # the whole tensor
    assert time.perf_counter() - start < 1.0  # the central directory is read, not the records


def test_official_bin_weights_are_bounded_the_same_way(tmp_path):
    torch.save({"w": torch.zeros(1 << 20)}, tmp_path / "plain.bin")
    bomb = _rezipped(tmp_path / "plain.bin", tmp_path / "diffusion_pytorch_model.bin", zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError, match="is not a safe torch file .* records are compressed"):
        read_state_dict(bomb)
    torch.save({"w": torch.zeros(2), "nested": {"x": torch.zeros(1)}}, tmp_path / "nested.bin")
    with pytest.raises(ValueError, match="not a flat name -> tensor dict"):
        read_state_dict(tmp_path / "nested.bin")


def test_a_ckpt_whose_records_overrun_the_file_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(64)}}, tmp_path / "plain.ckpt")
    lie = _rezipped(tmp_path / "plain.ckpt", tmp_path / "lie.ckpt")
    blob = bytearray(lie.read_bytes())
    with zipfile.ZipFile(lie) as z:
        entry = z.start_dir  # the central directory: 46-byte entries, each followed by its name, extra and comment
    while not blob[entry + 46:entry + 46 + struct.unpack_from("<H", blob, entry + 28)[0]].endswith(b"data/0"):
        name, extra, comment = struct.unpack_from("<HHH", blob, entry + 28)
        entry += 46 + name + extra + comment
    blob[entry + 20:entry + 28] = struct.pack("<II", 1 << 30, 1 << 30)  # compressed and uncompressed size: 1 GiB
    lie.write_bytes(bytes(blob))
    with pytest.raises(ValueError) as err:
        single_file.read_shapes(lie)
    assert "declares 1073741824 bytes past the end" in one_line(err)


def test_a_legacy_format_torch_file_is_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError) as err:
        single_file.read_shapes(tmp_path / "old.ckpt")
    assert "not a zip-format torch file" in one_line(err)


def test_safetensors_weights_are_read_only_from_regular_files_and_checked_before_allocating(tmp_path):
    fifo = tmp_path / "diffusion_pytorch_model.safetensors"
    os.mkfifo(fifo)
    with within(), pytest.raises(ValueError) as err:
        read_state_dict(fifo)
    assert "is a FIFO (named pipe), not a regular file" in one_line(err)
    huge = {"w": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 4]}}  # 4 TiB declared, 4 bytes present
    text = json.dumps(huge).encode()
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))
    with pytest.raises(ValueError) as err:
        read_state_dict(tmp_path / "huge.safetensors")
    assert f"declares 4 bytes at 0, its shape needs {4 << 40}" in one_line(err)


def test_weight_map_shards_stay_inside_the_folder(tmp_path):
    secret = tmp_path / "x.safetensors"
    save_file({"leak": torch.ones(1)}, secret)
    unet = tmp_path / "out" / "unet"
    unet.mkdir(parents=True)
    (tmp_path / "out" / "elsewhere.safetensors").symlink_to(secret)
    for shard in ("../../x.safetensors", str(secret), "../elsewhere.safetensors", "sub/../../../x.safetensors"):
        index = unet / "diffusion_pytorch_model.safetensors.index.json"
        index.write_text(json.dumps({"metadata": {}, "weight_map": {"conv_in.weight": shard}}))
        with pytest.raises(ValueError) as err:
            read_state_dict(index)
        assert f"names shard {shard!r}, which is not a file inside" in one_line(err)
    (unet / "inside.safetensors").symlink_to(secret)  # a link out of the folder, under an innocent name
    index.write_text(json.dumps({"weight_map": {"conv_in.weight": "inside.safetensors"}}))
    with pytest.raises(ValueError, match="not a file inside"):
        read_state_dict(index)
    save_file({"conv_in.weight": torch.ones(1)}, unet / "shard.safetensors")
    index.write_text(json.dumps({"weight_map": {"conv_in.weight": "shard.safetensors"}}))
    assert list(read_state_dict(index)) == ["conv_in.weight"]


@pytest.fixture(scope="module")
def official(official_output) -> Path:
    return official_output


def official_copy(official: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(official, tmp_path / "official"))


def test_official_weight_map_out_of_the_folder_is_refused_before_reading(official, tmp_path):
    from tav.tuner.tuned_weights import load_tuned

    folder = official_copy(official, tmp_path)
    unet = folder / "unet"
    (unet / "diffusion_pytorch_model.safetensors").rename(tmp_path / "x.safetensors")  # now outside the folder
    weight_map = {k: "../../x.safetensors" for k in json.loads((unet / "config.json").read_text())}  # any keys
    (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError) as err:
        load_tuned(folder)
    assert "names shard '../../x.safetensors', which is not a file inside" in one_line(err)


@pytest.mark.parametrize("config, message", [
    ("- 1\n- 2\n", "the top level is a list, expected an object"),
    ("train_data: 3\n", "train_data is 3, expected an object"),
    ("train_data: {n_sample_frames: '3'}\n", "train_data.n_sample_frames is '3', expected a positive integer"),
    ("train_data: {height: -64}\n", "train_data.height is -64, expected a positive integer"),
    ("train_data: [\n", "is not valid YAML"),
], ids=["list", "train-int", "frames-string", "height-negative", "broken-yaml"])
def test_a_garbled_official_config_is_one_line(official, tmp_path, config, message):
    from tav.tuner.tuned_weights import load_tuned

    folder = official_copy(official, tmp_path)
    (folder / "config.yaml").write_text(config)
    with pytest.raises(ValueError) as err:
        load_tuned(folder)
    assert message in one_line(err)


def test_official_inverted_latents_are_bounded_and_oddly_named_ones_ignored(official, tmp_path):
    from tav.tuner.tuned_weights import load_tuned

    folder = official_copy(official, tmp_path)
    (folder / "inv_latents" / "ddim_latent-final.pt").write_bytes(b"not read")
    assert load_tuned(folder).inverted_latents.shape[2] == 3
    newest = folder / "inv_latents" / "ddim_latent-60.pt"
    _rezipped(folder / "inv_latents" / "ddim_latent-50.pt", newest, zipfile.ZIP_DEFLATED)
    with pytest.raises(ValueError) as err:
        load_tuned(folder)
    assert "ddim_latent-60.pt is not a safe torch file (" in one_line(err)
    assert "of its records are compressed" in str(err.value)


# --- outputs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, hint", [(".mp4", "video.mp4"), (".gif", "video.gif"), (".frames/", "frames")])
def test_an_output_that_is_only_a_suffix_is_refused(tmp_path, name, hint, monkeypatch):
    import tav.runtime.pipeline

    monkeypatch.setattr(tav.runtime.pipeline.VideoPipeline, "load", lambda *a, **k: pytest.fail("loaded the engines"))
    out = f"{tmp_path}/{name}"
    with pytest.raises(VideoOutputError) as err:
        check_output_path(out)
    assert "has no name before its suffix" in one_line(err) and str(tmp_path / hint) in str(err.value)
    message = error_of(tav_run, ["--engine", str(tmp_path), "--prompt", "x", "--out", out], "tav-run", code=2)
    assert "has no name before its suffix" in message and list(tmp_path.iterdir()) == []

# --- a synthetic base ENGINE_DIR: manifest sections ---------------------------------------------------


def _base_edit(value):
    def edit(root, manifest):
        manifest["base"] = value(json.loads(json.dumps(PACK_BASE)))
    return edit


@pytest.mark.parametrize("value, message", [
    (lambda b: "b" * 64, "base is 'bbbb"),
    (lambda b: [b], "base is [{'id'"),
    (lambda b: {**b, "id": 7}, "base.id is 7, expected a string"),
    (lambda b: {k: v for k, v in b.items() if k != "unet_frozen_sha256"},
     "base.unet_frozen_sha256 is missing, expected a string"),
    (lambda b: {**b, "tunable": "tuned_bias"}, "base.tunable is 'tuned_bias', expected a list"),
    (lambda b: {**b, "tunable": [1]}, "base.tunable[0] is 1, expected an object"),
    (lambda b: {**b, "tunable": [{**b["tunable"][0], "shape": ["1"]}]}, "base.tunable[0].shape is ['1']"),
    (lambda b: {**b, "tunable": [{**b["tunable"][0], "dtype": "int64"}]}, "base.tunable[0].dtype is 'int64'"),
    (lambda b: {**b, "tunable": [{k: v for k, v in b["tunable"][0].items() if k != "layout"}]},
     "base.tunable[0].layout is missing"),
], ids=["string", "list", "id-int", "no-frozen-hash", "tunable-string", "tunable-int", "shape-string", "dtype-int",
        "no-layout"])
def test_a_garbled_base_section_is_a_one_line_engine_dir_error(synthetic_base, tmp_path, value, message):
    root = edited_copy(synthetic_base, tmp_path, _base_edit(value))
    with pytest.raises(EngineDirError) as err:
        VideoPipeline.load(root, backend="onnxruntime", device="cpu")
    assert message in one_line(err) and "re-export it" in str(err.value)


def _set(path: str, value):
    def edit(root, manifest):
        *parents, last = path.split("/")
        target = manifest
        for key in parents:
            target = target[int(key) if key.isdigit() else key]
        target[int(last) if last.isdigit() else last] = value
    return edit


@pytest.mark.parametrize("path, value, message", [
    ("graphs/unet/inputs/0/name", None, "graphs.unet.inputs[0].name is None, expected a string"),
    ("graphs/text_encoder/outputs/0/name", ["x"], "graphs.text_encoder.outputs[0].name is ['x'], expected a string"),
    ("graphs/unet/inputs/1/shape", ["1"], "graphs.unet.inputs[1].shape is ['1'], expected a list of integers"),
    ("frames", "3", "frames is '3', expected a positive integer"),
    ("height", 32.0, "height is 32.0, expected a positive integer"),
    ("vae_scaling_factor", True, "vae_scaling_factor is True, expected a positive finite number"),
    ("vae_scaling_factor", -0.18, "vae_scaling_factor is -0.18, expected a positive finite number"),
    ("files", [["scheduler_config.json", "0" * 64]], "files is [['scheduler_config.json'"),
    ("source", "x", "source is 'x', expected an object"),
    ("temporal_window", "all", "temporal_window is 'all', expected a positive integer"),
], ids=["input-name-null", "output-name-list", "shape-string", "frames-string", "height-float", "factor-bool",
        "factor-negative", "files-list", "source-string", "window-string"])
def test_other_garbled_manifest_fields_are_one_line_engine_dir_errors(synthetic_base, tmp_path, path, value, message):
    with pytest.raises(EngineDirError) as err:
        read_manifest(edited_copy(synthetic_base, tmp_path, _set(path, value)))
    assert message in one_line(err)


# --- export: nothing non-finite is written -----------------------------------------------------------------


@pytest.fixture(scope="module")
def poisoned_runs(tiny_sd, tmp_path_factory):
    from safetensors.torch import load_file

    from fixtures.run_dirs import make_run_dir

    root = tmp_path_factory.mktemp("poisoned")
    runs = {}
    for kind in ("tensor", "latents"):
        run = make_run_dir(tiny_sd, root / kind, frames=F, height=H, width=W)  # the synthetic base's sizes
        name = "tuned.safetensors" if kind == "tensor" else "inverted_latents.safetensors"
        state = load_file(run / name)
        key = sorted(state)[0]
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float("nan")
        save_file(state, run / name)
        runs[kind] = (run, key)
    return runs


def test_export_refuses_nan_tuned_tensors_and_latents_before_tracing(poisoned_runs, tmp_path, monkeypatch):
    from tav.export import export_engine, pipeline

    monkeypatch.setattr(pipeline, "_export_graphs", lambda *a, **k: pytest.fail("traced a poisoned run"))
    for kind, message in (("tensor", "UNet tensor {key} contains NaN/Inf"),
                          ("latents", "the inverted latents contain NaN")):
        run, key = poisoned_runs[kind]
        with pytest.raises(ExportError) as err:
            export_engine(run, tmp_path / kind)
        assert message.format(key=key) in one_line(err) and str(run) in str(err.value)
        assert not (tmp_path / kind).exists()


@pytest.mark.parametrize("position", [0, 37, 99], ids=["first-part", "middle-part", "last-element"])
def test_the_finite_check_sees_nan_and_inf_in_every_part_of_a_tensor(monkeypatch, position):
    from tav.export import finite_check

    monkeypatch.setattr(finite_check, "FINITE_PART", 8)  # 100 elements: 13 parts, the last one short
    assert finite_check._all_finite(torch.zeros(10, 10).t())
    for bad in (float("nan"), float("inf"), float("-inf")):
        poisoned = torch.zeros(100)
        poisoned[position] = bad
        assert not finite_check._all_finite(poisoned.view(10, 10).t())  # not contiguous: parts of a copy


def test_write_pack_refuses_nan_tuned_tensors_and_latents(poisoned_runs, synthetic_base, tmp_path):
    from tav.export.pack_writer import write_pack

    for kind, message in (("tensor", "UNet tensor {key} contains NaN/Inf"),
                          ("latents", "the inverted latents contain NaN")):
        run, key = poisoned_runs[kind]
        with pytest.raises(ExportError) as err:
            write_pack(run, synthetic_base, tmp_path / f"{kind}.tavpack")
        assert message.format(key=key) in one_line(err)
        assert list(tmp_path.iterdir()) == []  # no pack, no temp file
