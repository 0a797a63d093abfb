"""Issue 32: every file format we read has one typed reader, and each garbled field is one line naming the file,
the field and the form expected.

Each format's fields are mutated the same four ways (a value of the wrong type, the field missing, a value out of
range, an extra level of nesting) and read by the format's reader: run.json, manifest.json, a pack's metadata, a
job record, an official config.yaml, a single-file checkpoint's keys. No model is loaded: the readers run before
any. The commands' own regressions (tav-invert, the service's listing and GET) are in test_reader_inputs.py.
"""

import copy
import json
import struct
from pathlib import Path

import pytest
import yaml

from tav.runtime.file_fields import FieldError
from tav.runtime.manifest import EngineDirError, read_manifest
from tav.runtime.packs import PackError, pack_digest, read_pack_metadata
from tav.tuner.model_sources.model_kind import (
    TEXT_TOKEN_EMBEDDING,
    UNET,
    UNET_INPUT_CONV,
    VAE_INPUT_CONV,
    check_sd1_checkpoint,
)
from tav.tuner.official_config import OfficialConfigError, read_official_config
from tav.tuner.run_record import RunRecordError, read_run_record

GONE = object()  # the mutation that removes the field


def mutations(path: str, good, *, required: bool = True, low=None, wrong=None) -> list:
    """(path, new value, words the refusal must hold) for the four ways a field goes wrong."""
    field = path.replace("/", ".")
    wrong = wrong if wrong is not None else 7 if isinstance(good, str) else "7"
    cases = [(path, wrong, f"{field} is {wrong!r}, expected"), (path, [good], f"{field} is [")]
    if required:
        cases.append((path, GONE, f"{field} is missing, expected"))
    if low is not None:
        cases.append((path, low, f"{field} is {low!r}, expected"))
    return cases


def mutated(raw: dict, path: str, value) -> dict:
    raw = copy.deepcopy(raw)
    *parents, last = path.split("/")
    target = raw
    for key in parents:
        target = target[key]
    if value is GONE:
        del target[last]
    else:
        target[last] = value
    return raw


def refused_in_one_line(error, read, where) -> str:
    with pytest.raises(error) as err:
        read()
    text = str(err.value)
    assert text and "\n" not in text and str(where) in text, text
    return text


def ids(cases) -> list:
    return [f"{path}={'gone' if value is GONE else json.dumps(value)[:20]}" for path, value, _ in cases]


# --- run.json ---------------------------------------------------------------------------------------------------

RUN = {"pretrained_model_path": "/models/sd", "pretrained_model_hash": "a" * 64, "frames": 8, "height": 64,
       "width": 64, "seed": 0, "tuned_frames": 8, "temporal_window": 8, "stride": 2, "start": 0,
       "inversion": {"steps": 50}, "prompt": "a man is skiing",
       "pretrained_model_source": {"kind": "hub", "repo_id": "org/sd", "commit": "c" * 40}}
RUN_CASES = (
    mutations("frames", 8, low=0) + mutations("height", 64, low=-64) + mutations("width", 64, low=0)
    + mutations("pretrained_model_path", "/models/sd", low="") + mutations("seed", 0, required=False)
    + mutations("tuned_frames", 8, required=False, low=0) + mutations("temporal_window", 8, required=False, low=9)
    + mutations("stride", 2, required=False, low=0) + mutations("start", 0, required=False, low=-1)
    + mutations("inversion/steps", 50, required=False, low=0) + mutations("prompt", "x", required=False)
    + mutations("pretrained_model_hash", "a", required=False)
    + mutations("pretrained_model_source/kind", "hub", low="ftp")
    + mutations("pretrained_model_source/repo_id", "org/sd", low="")
    + mutations("pretrained_model_source/commit", "c")
    + [("pretrained_model_source", "org/sd", "pretrained_model_source is 'org/sd', expected an object"),
       ("inversion", [1], "inversion is [1], expected an object")]
)


def write_run(tmp_path: Path, raw) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return run


def test_the_good_run_json_reads(tmp_path):
    record = read_run_record(write_run(tmp_path, RUN))
    assert (record.frames, record.stride, record.tuned_frames, record.base_source["kind"]) == (8, 2, 8, "hub")


@pytest.mark.parametrize("path, value, message", RUN_CASES, ids=ids(RUN_CASES))
def test_every_garbled_run_json_field_is_one_line_naming_it(tmp_path, path, value, message):
    run = write_run(tmp_path, mutated(RUN, path, value))
    text = refused_in_one_line(RunRecordError, lambda: read_run_record(run), run / "run.json")
    assert message in text and "re-run tav-tune" in text


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "the top level is a list, expected an object"),
    ('{"frames": NaN}', "frames is nan, expected a positive integer"),  # NaN parses (tav-tune writes NaN losses)
    ("[" * 40 + "]" * 40, "nested more than 32 levels deep"),
    ("[" * 100_000 + "]" * 100_000, "nested more than 32 levels deep"),  # Python's parser would overflow the stack
    ('{"frames": 8', "not valid JSON"),
], ids=["list", "nan-frames", "deep", "very-deep", "truncated"])
def test_a_run_json_that_is_not_an_object_of_fields_is_one_line(tmp_path, content, message):
    run = write_run(tmp_path, content)
    assert message in refused_in_one_line(RunRecordError, lambda: read_run_record(run), run / "run.json")


# --- manifest.json ----------------------------------------------------------------------------------------------

SPEC = {"name": "sample", "shape": [2, 4, 3, 4, 6], "dtype": "float32"}
GRAPH = {"onnx": "unet.onnx", "sha256": "0" * 64, "external_data": [], "inputs": [SPEC], "outputs": [SPEC],
         "tensorrt": {"plan": "unet.plan", "sha256": "1" * 64, "flavour": "tensorrt", "plugins": []},
         "attention": {"fused": 2}}
MANIFEST = {"schema_version": 2, "frames": 3, "height": 32, "width": 48, "precision": "fp32", "text_max_length": 77,
            "text_dim": 8, "latent_channels": 4, "vae_scaling_factor": 0.18215, "decode_batch": 3,
            "temporal_window": 3, "kv_gather": "onnx", "batch": 2, "source": {"base_model": "/sd"},
            "files": {"scheduler_config.json": "2" * 64},
            "graphs": {name: copy.deepcopy(GRAPH) for name in ("text_encoder", "unet", "vae_decoder")}}
MANIFEST_CASES = (
    mutations("frames", 3, low=0) + mutations("height", 32, low=-8) + mutations("text_dim", 8, low=0)
    + mutations("latent_channels", 4, low=0) + mutations("text_max_length", 77, low=0)
    + mutations("decode_batch", 3, required=False, low=0) + mutations("temporal_window", 3, required=False, low=0)
    + mutations("vae_scaling_factor", 0.1, low=-0.18) + mutations("precision", "fp32", low="int8")
    + mutations("kv_gather", "onnx", required=False, low="custom") + mutations("batch", 2, required=False, low=4)
    + mutations("source/base_model", "/sd", required=False) + mutations("graphs/unet/onnx", "unet.onnx")
    + mutations("graphs/unet/sha256", "0") + mutations("graphs/unet/tensorrt/plan", "unet.plan")
    + mutations("graphs/unet/tensorrt/flavour", "tensorrt", required=False)
    + mutations("graphs/unet/attention/fused", 2, required=False, low=-1)
    + [("graphs/unet/tensorrt/plugins", "libkv.so", "graphs.unet.tensorrt.plugins is 'libkv.so', expected a list"),
       ("graphs/unet/inputs", {"x": 1}, "graphs.unet.inputs is {'x': 1}, expected a list"),
       ("graphs/vae_decoder", GONE, "graphs.vae_decoder is missing, expected an object"),
       ("files", {"a": 1}, "files is {'a': 1}, expected an object mapping file names to sha256 strings")]
)


@pytest.mark.parametrize("path, value, message", MANIFEST_CASES, ids=ids(MANIFEST_CASES))
def test_every_garbled_manifest_field_is_one_line_naming_it(tmp_path, path, value, message):
    (tmp_path / "manifest.json").write_text(json.dumps(mutated(MANIFEST, path, value)))
    text = refused_in_one_line(EngineDirError, lambda: read_manifest(tmp_path), tmp_path)
    assert f"manifest.json: {message}" in text and "re-export it" in text


def test_a_manifest_nested_deeper_than_any_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(dict(MANIFEST, tools=json.loads("[" * 50 + "]" * 50))))
    assert "nested more than 32 levels deep" in refused_in_one_line(EngineDirError, lambda: read_manifest(tmp_path),
                                                                     tmp_path)


# --- a pack's header ---------------------------------------------------------------------------------------------

META = {"schema_version": 1, "prompt": "a man", "run": {}, "source": {}, "tools": {}, "has_inverted_latents": False,
        "tensors": 1, "tensor_bytes": 16,
        "base": {"id": "b" * 64, "unet_frozen_sha256": "a" * 64, "frames": 3, "height": 32, "width": 48,
                 "precision": "fp32", "temporal_window": 3}}
PACK_CASES = (
    mutations("schema_version", 1) + mutations("base/id", "b") + mutations("base/unet_frozen_sha256", "a")
    + mutations("base/precision", "fp32") + mutations("base/frames", 3, low=0) + mutations("base/height", 32, low=0)
    + mutations("base/width", 48, low=0) + mutations("base/temporal_window", 3, required=False, low=0)
    + mutations("prompt", "a man", required=False) + mutations("has_inverted_latents", False, required=False)
    + mutations("tensors", 1, required=False, low=-1) + mutations("tensor_bytes", 16, required=False, low=-1)
    + [("run", "x", "run is 'x', expected an object"), ("base", "b", "base is 'b', expected an object")]
)


def signed_pack(path: Path, meta_text: str) -> Path:
    """A pack whose metadata is ``meta_text``, re-signed as anyone who edits one can."""
    data = bytes(16)
    header = {"__metadata__": {"tavpack": meta_text}, "t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    header["__metadata__"]["sha256"] = pack_digest(header, data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def test_the_good_pack_metadata_reads(tmp_path):
    assert read_pack_metadata(signed_pack(tmp_path / "ok.tavpack", json.dumps(META)))["base"]["frames"] == 3


@pytest.mark.parametrize("path, value, message", PACK_CASES, ids=ids(PACK_CASES))
def test_every_garbled_pack_metadata_field_is_one_line_naming_it(tmp_path, path, value, message):
    pack = signed_pack(tmp_path / "bad.tavpack", json.dumps(mutated(META, path, value)))
    text = refused_in_one_line(PackError, lambda: read_pack_metadata(pack), pack)
    assert f"corrupt pack metadata ({message}" in text


@pytest.mark.parametrize("meta_text, message", [
    (json.dumps(META).replace('"prompt": "a man"', '"prompt": NaN'), "holds NaN"),
    (json.dumps(META).replace('"tensors": 1', '"tensors": Infinity'), "holds Infinity"),
    (json.dumps(META).replace('"tensors": 1', '"tensors": -Infinity'), "holds -Infinity"),
    (json.dumps(dict(META, run={"x": json.loads("[" * 40 + "]" * 40)})), "nested more than 32 levels deep"),
    (json.dumps(META)[:-1] + ', "run": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested more than 32 levels deep"),
], ids=["nan", "infinity", "minus-infinity", "deep", "very-deep"])
def test_pack_metadata_follows_the_json_rules_of_the_responses(tmp_path, meta_text, message):
    pack = signed_pack(tmp_path / "bad.tavpack", meta_text)
    assert message in refused_in_one_line(PackError, lambda: read_pack_metadata(pack), pack)


# --- an official config.yaml -------------------------------------------------------------------------------------

CONFIG = {"pretrained_model_path": "./sd", "output_dir": "./out", "learning_rate": "3e-5", "max_train_steps": 300,
          "seed": 33, "mixed_precision": "fp16", "gradient_checkpointing": True, "checkpointing_steps": 100,
          "validation_steps": 100, "trainable_modules": ["attn1.to_q", "attn2.to_q", "attn_temp"],
          "train_data": {"video_path": "clip.mp4", "prompt": "a man", "n_sample_frames": 8, "width": 512,
                         "height": 512, "sample_start_idx": 0, "sample_frame_rate": 2},
          "validation_data": {"prompts": ["a cat"], "video_length": 8, "width": 512, "height": 512,
                              "num_inference_steps": 50, "guidance_scale": 12.5, "use_inv_latent": True,
                              "num_inv_steps": 50}}
CONFIG_CASES = [case for case in (
    mutations("train_data/n_sample_frames", 8, low=0) + mutations("train_data/width", 512, low=-512)
    + mutations("train_data/height", 512, low=0) + mutations("train_data/sample_start_idx", 0, low=-1)
    + mutations("train_data/sample_frame_rate", 2, low=0) + mutations("train_data/video_path", "c", low="")
    + mutations("train_data/prompt", "a")
    + mutations("validation_data/num_inference_steps", 50, low=0) + mutations("validation_data/video_length", 8, low=0)
    + mutations("validation_data/use_inv_latent", True) + mutations("validation_data/num_inv_steps", 50, low=0)
    + mutations("validation_data/guidance_scale", 1.5) + mutations("max_train_steps", 300, low=0)
    + mutations("learning_rate", 1.0, low=-1, wrong="fast") + mutations("seed", 33)
    + mutations("mixed_precision", "no", low="fp8")
    + mutations("gradient_checkpointing", True) + mutations("checkpointing_steps", 100, low=-1)
    + mutations("output_dir", "o", low="") + mutations("pretrained_model_path", "p", low="")
    + [("train_data", ["clip.mp4"], "train_data is ['clip.mp4'], expected an object"),
       ("validation_data", "x", "validation_data is 'x', expected an object"),
       ("validation_data/prompts", "a cat", "validation_data.prompts is 'a cat', expected a list of strings")]
) if "is missing" not in case[2]]  # every official field is optional: a missing one takes its default


@pytest.mark.parametrize("path, value, message", CONFIG_CASES, ids=ids(CONFIG_CASES))
def test_every_garbled_official_config_field_is_one_line_naming_it(tmp_path, path, value, message):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(mutated(CONFIG, path, value)))
    assert message in refused_in_one_line(OfficialConfigError, lambda: read_official_config(config), config)


def test_the_good_official_config_reads_into_our_fields(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    fields = read_official_config(config)
    assert (fields["frames"], fields["stride"], fields["lr"], fields["precision"]) == (8, 2, 3e-5, "fp16")
    assert fields["validation_init"] == "inverted" and fields["out"] == "./out"


@pytest.mark.parametrize("content, message", [
    ("- 1\n- 2\n", "the top level is a list, expected an object"),
    ("just text\n", "the top level is a string, expected an object"),
    ("a: " + "[" * 2000 + "]" * 2000 + "\n", "is not valid YAML (RecursionError)"),
], ids=["list", "text", "deep"])
def test_an_official_config_that_is_no_mapping_is_one_line(tmp_path, content, message):
    config = tmp_path / "config.yaml"
    config.write_text(content)
    assert message in refused_in_one_line(OfficialConfigError, lambda: read_official_config(config), config)


# --- the keys of a single-file checkpoint ------------------------------------------------------------------------

CONTEXT = UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
SHAPES = {UNET_INPUT_CONV: (32, 4, 3, 3), VAE_INPUT_CONV: (32, 3, 3, 3), TEXT_TOKEN_EMBEDDING[0]: (49408, 32),
          CONTEXT: (32, 32), UNET + "out.2.weight": (4, 32, 3, 3),
          "first_stage_model.decoder.conv_out.weight": (3, 32, 3, 3)}


@pytest.mark.parametrize("key, shape, message", [
    (VAE_INPUT_CONV, GONE, f"key {VAE_INPUT_CONV} is missing, expected a 4-D convolution weight"),
    (UNET_INPUT_CONV, (32,), f"key {UNET_INPUT_CONV} is of shape [32], expected a 4-D convolution weight"),
    (VAE_INPUT_CONV, (32, 3), f"key {VAE_INPUT_CONV} is of shape [32, 3], expected a 4-D"),
    (TEXT_TOKEN_EMBEDDING[0], (49408,), f"key {TEXT_TOKEN_EMBEDDING[0]} is of shape [49408], expected a 2-D weight"),
    (CONTEXT, (), f"key {CONTEXT} is of shape [], expected a 2-D weight"),
], ids=["no-vae-conv-in", "unet-conv-1d", "vae-conv-2d", "token-embedding-1d", "context-0d"])
def test_checkpoint_keys_missing_or_of_the_wrong_rank_are_one_line(key, shape, message):
    shapes = mutated(SHAPES, key, shape) if shape is GONE else {**SHAPES, key: shape}
    text = refused_in_one_line(FieldError, lambda: check_sd1_checkpoint(shapes, "model.safetensors"),
                               "model.safetensors")
    assert message in text
