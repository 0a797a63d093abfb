"""Base models as users have them: hub repo ids, single-file checkpoints, folders (tav.tuner.model_sources).

The hub is a local stand-in (tests/fixtures/local_hub.py) so huggingface_hub itself fills a real
cache; tuning then runs with HF_HUB_OFFLINE=1. Single files are the tiny model written in
the original LDM key layout by tests/fixtures/ldm_checkpoint.py and converted by diffusers.
Weights are compared with torch.equal: a conversion renames and reshapes, it never computes.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from huggingface_hub import constants, scan_cache_dir
from safetensors.torch import load_file
from transformers import CLIPTextModel

from tav.runtime.video_output import write_video
from tav.tuner.demo.synthetic_video import make_clip
from tav.tuner.model import sd_folder
from tav.tuner.model_sources import resolve_base_model, single_file
from tav.tuner.model_sources.hub import files_to_fetch
from tav.tuner.tuned_weights import load_tuned
from tav.tuner.tuning.config import TuneConfig
from tav.tuner.tuning.tune import tune

from fixtures.ldm_checkpoint import ldm_state_dict, write_single_file
from fixtures.local_hub import LocalHub
from fixtures.run_dirs import make_run_dir

REPO = "tiny-org/tiny-sd"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Files a real SD 1.5 repository also holds, which tuning never reads: none may be downloaded.
DECOYS = ["unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.safetensors",
          "unet/diffusion_pytorch_model.non_ema.safetensors", "unet/diffusion_flax_model.msgpack",
          "vae/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin", "text_encoder/model.fp16.safetensors",
          "v1-5-pruned-emaonly.ckpt", "v1-5-pruned.safetensors", "onnx/unet/model.onnx",
          "safety_checker/model.safetensors", "feature_extractor/preprocessor_config.json", "README.md"]
TUNE_FLAGS = ["--prompt", "a ball is bouncing", "--frames", "3", "--stride", "1", "--height", "64", "--width", "64",
              "--steps", "2", "--lr", "1e-3", "--checkpoint-every", "0", "--inversion-steps", "3", "--seed", "0"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _python(code_or_args, env: dict) -> subprocess.CompletedProcess:
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(make_clip(frames=3, size=64), tmp_path_factory.mktemp("clip") / "clip.mp4", fps=8)


@pytest.fixture(scope="module")
def hub_cache(tiny_sd, tmp_path_factory) -> Path:
    """A hub cache holding the tiny model, written by huggingface_hub's own snapshot_download from the local hub."""
    cache = tmp_path_factory.mktemp("hub")
    files = {str(p.relative_to(tiny_sd)): p.read_bytes() for p in tiny_sd.rglob("*") if p.is_file()}
    with LocalHub({REPO: (COMMIT, {**files, **{d: b"never fetched" for d in DECOYS}})}) as hub:
        code = f"from tav.tuner.model_sources import resolve_base_model as r; print(r({REPO!r}).path)"
        proc = _python(code, {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0"})
        assert proc.returncode == 0, proc.stderr
        assert sorted(hub.downloaded()) == sorted(files)  # exactly the pipeline's files: no decoy, no .bin twin
    return cache


def test_hub_cache_has_the_layout_huggingface_hub_reads(hub_cache, tiny_sd):
    repo = hub_cache / "models--tiny-org--tiny-sd"
    assert (repo / "refs" / "main").read_text() == COMMIT
    snapshot = repo / "snapshots" / COMMIT
    weights = snapshot / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.is_symlink() and weights.resolve().parent == (repo / "blobs").resolve()
    assert weights.read_bytes() == (tiny_sd / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    (cached,) = scan_cache_dir(hub_cache).repos  # huggingface_hub's own reader of its cache
    (revision,) = cached.revisions
    assert (cached.repo_id, revision.commit_hash, set(revision.refs)) == (REPO, COMMIT, {"main"})


def test_tuning_a_hub_id_offline_equals_tuning_the_folder(hub_cache, tiny_sd, clip, tmp_path):
    # The hub run is the real CLI in its own process, offline, with an endpoint nobody answers.
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = _python(["-m", "tav.tuner.cli.tune", "--pretrained", REPO, "--video", str(clip),
                    "--out", str(tmp_path / "hub"), *TUNE_FLAGS], env)
    assert proc.returncode == 0, proc.stderr
    folder_run = tune(TuneConfig(pretrained_model_path=str(tiny_sd), video=str(clip), prompt="a ball is bouncing",
                                 out=str(tmp_path / "folder"), frames=3, stride=1, height=64, width=64, steps=2,
                                 lr=1e-3, checkpoint_every=0, inversion_steps=3, seed=0))
    for name in ("tuned.safetensors", "inverted_latents.safetensors"):
        hub_tensors, folder_tensors = load_file(str(tmp_path / "hub" / name)), load_file(str(folder_run / name))
        assert hub_tensors.keys() == folder_tensors.keys()
        assert all(torch.equal(hub_tensors[k], folder_tensors[k]) for k in hub_tensors), name
    run = json.loads((tmp_path / "hub" / "run.json").read_text())
    assert run["pretrained_model_source"] == {"kind": "hub", "spec": REPO, "repo_id": REPO, "revision": "main",
                                              "commit": COMMIT}
    assert run["pretrained_model_path"] == str(hub_cache / "models--tiny-org--tiny-sd" / "snapshots" / COMMIT)
    assert run["pretrained_model_hash"] == sd_folder.folder_hash(tiny_sd)  # the same files, byte for byte


@pytest.fixture
def offline_cache(monkeypatch, hub_cache):
    """In-process offline mode on the populated cache (huggingface_hub reads these at call time)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    return hub_cache


def test_hub_ids_resolve_offline_by_branch_or_commit_and_refuse_what_is_not_cached(offline_cache):
    by_branch, by_commit = resolve_base_model(REPO), resolve_base_model(REPO, revision=COMMIT)
    assert by_branch.path == by_commit.path == offline_cache / "models--tiny-org--tiny-sd" / "snapshots" / COMMIT
    assert by_commit.source["revision"] == COMMIT and by_commit.source["commit"] == COMMIT
    for spec, revision in (("other-org/missing", None), (REPO, "v2.0")):
        with pytest.raises(FileNotFoundError, match="not .*in the cache .*HF_HUB_OFFLINE=1") as err:
            resolve_base_model(spec, revision)
        assert "\n" not in str(err.value)


def test_an_incomplete_cached_snapshot_is_reported_not_loaded(offline_cache, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    shutil.copytree(offline_cache, cache, symlinks=True)
    snapshot = cache / "models--tiny-org--tiny-sd" / "snapshots" / COMMIT
    (snapshot / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(FileNotFoundError, match="not \\(completely\\) in the cache"):
        resolve_base_model(REPO)


def test_hub_errors_online_name_the_problem_in_one_line(tiny_sd, tmp_path, monkeypatch):
    not_sd = {"README.md": b"# a text model", "config.json": b"{}", "model.safetensors": b"x"}
    with LocalHub({REPO: (COMMIT, {"model_index.json": b"{}"}), "other-org/text-model": (COMMIT, not_sd)}) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        for spec, revision, message in (
            ("tiny-org/nothing-here", None, "hub repo tiny-org/nothing-here was not found, or it is private or gated"),
            (REPO, "v9", "hub repo tiny-org/tiny-sd has no revision 'v9'"),
            ("other-org/text-model", None, "is not a Stable Diffusion pipeline in diffusers layout: it lacks "
                                           "model_index.json"),
        ):
            with pytest.raises(ValueError) as err:
                resolve_base_model(spec, revision)
            assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert not any(r.startswith("GET") and "/resolve/" in r for r in hub.requested)  # nothing was downloaded


def test_a_run_whose_base_folder_is_gone_refetches_its_recorded_commit(offline_cache, tiny_sd, tmp_path):
    run = make_run_dir(tiny_sd, tmp_path / "run")
    meta = json.loads((run / "run.json").read_text())
    meta.update(pretrained_model_path=str(tmp_path / "moved-away"),
                pretrained_model_source={"kind": "hub", "repo_id": REPO, "revision": "main", "commit": COMMIT})
    (run / "run.json").write_text(json.dumps(meta))
    assert load_tuned(run).base_dir == offline_cache / "models--tiny-org--tiny-sd" / "snapshots" / COMMIT


SD15_FILES = [  # the layout of the SD 1.5 diffusers repository (weights in five flavours)
    ".gitattributes", "README.md", "model_index.json", "v1-5-pruned-emaonly.ckpt", "v1-5-pruned-emaonly.safetensors",
    "v1-5-pruned.ckpt", "v1-inference.yaml", "feature_extractor/preprocessor_config.json",
    "safety_checker/config.json", "safety_checker/model.safetensors", "safety_checker/pytorch_model.bin",
    "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.fp16.safetensors",
    "text_encoder/model.safetensors", "text_encoder/pytorch_model.bin", "text_encoder/flax_model.msgpack",
    "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_flax_model.msgpack", "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin", "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.bin", "unet/diffusion_pytorch_model.non_ema.safetensors",
    "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_flax_model.msgpack",
    "vae/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.fp16.safetensors",
    "vae/diffusion_pytorch_model.safetensors", "onnx/unet/model.onnx", "openvino/unet/openvino_model.xml",
]
CONFIGS = ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json",
           "text_encoder/config.json"]
TOKENIZER = ["tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
             "tokenizer/vocab.json"]


def test_hub_file_choice_takes_plain_safetensors_else_bin_else_shards():
    assert sorted(files_to_fetch(SD15_FILES)) == sorted(CONFIGS + TOKENIZER + [
        "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors"])
    bin_only = [f for f in SD15_FILES if not f.endswith(".safetensors")]  # e.g. older DreamBooth uploads
    assert sorted(files_to_fetch(bin_only)) == sorted(CONFIGS + TOKENIZER + [
        "unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin"])
    shards = ["unet/diffusion_pytorch_model.safetensors.index.json",
              "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
              "unet/diffusion_pytorch_model-00002-of-00002.safetensors"]
    sharded = [f for f in SD15_FILES if not f.startswith("unet/diffusion_pytorch_model")] + shards
    assert set(shards) <= set(files_to_fetch(sharded))
    with pytest.raises(ValueError, match="lacks unet/diffusion_pytorch_model.safetensors"):
        files_to_fetch([f for f in SD15_FILES if not f.startswith("unet/diffusion_pytorch_model")])


# ---- single files ----


@pytest.fixture
def file_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "converted"
    monkeypatch.setenv("TAV_SINGLE_FILE_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def ldm_tiny(tiny_sd) -> dict:
    return ldm_state_dict(tiny_sd)


def _state(cls, folder: Path) -> dict:
    return cls.from_pretrained(folder).state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_loads_with_exactly_the_folders_weights(tiny_sd, ldm_tiny, file_cache, tmp_path, suffix,
                                                            monkeypatch):
    checkpoint = write_single_file(ldm_tiny, tmp_path / f"tiny{suffix}")
    resolved = resolve_base_model(checkpoint)
    assert resolved.path.parent == file_cache and resolved.source == {
        "kind": "single_file", "spec": str(checkpoint), "file": str(checkpoint),
        "file_sha256": sd_folder.file_sha256(checkpoint), "architecture": "tiny"}
    for cls, part in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae"), (CLIPTextModel, "text_encoder")):
        ours, theirs = _state(cls, resolved.path / part), _state(cls, tiny_sd / part)
        assert ours.keys() == theirs.keys(), part
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), part
    assert sd_folder.load_tokenizer(resolved.path)("a man is skiing").input_ids == \
        sd_folder.load_tokenizer(tiny_sd)("a man is skiing").input_ids
    assert sd_folder.load_ddpm(resolved.path).config.beta_schedule == "scaled_linear"
    # A second use (also under another name) reuses the conversion: converting again would fail here.
    monkeypatch.setattr(single_file, "_convert_into", lambda *a: pytest.fail("converted twice"))
    shutil.copy(checkpoint, tmp_path / f"renamed{suffix}")
    assert resolve_base_model(tmp_path / f"renamed{suffix}").path == resolved.path
    assert [p.name for p in file_cache.iterdir()] == [resolved.path.name]  # no temp folders left


def test_two_concurrent_conversions_of_one_file_leave_one_complete_folder(ldm_tiny, file_cache, tmp_path, monkeypatch):
    checkpoint = write_single_file(ldm_tiny, tmp_path / "tiny.safetensors")
    both_converted = threading.Barrier(2, timeout=120)
    convert = single_file._convert_into

    def convert_then_wait(*args):
        convert(*args)
        both_converted.wait()  # both conversions are done before either is renamed into place

    monkeypatch.setattr(single_file, "_convert_into", convert_then_wait)
    results = []
    threads = [threading.Thread(target=lambda: results.append(resolve_base_model(checkpoint))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0].path == results[1].path
    assert [p.name for p in file_cache.iterdir()] == [results[0].path.name]  # the loser's copy is gone
    assert (results[0].path / single_file.RECORD).is_file()
    UNet2DConditionModel.from_pretrained(results[0].path / "unet")


def _mutated(state: dict, kind: str) -> dict:
    """The tiny LDM checkpoint changed into what each refusal detects, as such files are laid out."""
    state = dict(state)
    if kind == "sd2_openclip":
        for key in [k for k in state if k.startswith("cond_stage_model.transformer.")]:
            state["cond_stage_model.model." + key.split(".", 2)[2]] = state.pop(key)
    elif kind == "sd2_context_1024":
        for key in [k for k in state if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]:
            state[key] = torch.zeros(state[key].shape[0], 1024)
    elif kind == "sdxl":
        state["conditioner.embedders.1.model.text_projection"] = torch.zeros(4, 4)
        state["model.diffusion_model.label_emb.0.0.weight"] = torch.zeros(4, 4)
    elif kind == "lora":
        state = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
                 "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
                 "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
                 "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 32)}
    elif kind == "inpainting":
        conv = state["model.diffusion_model.input_blocks.0.0.weight"]
        state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(conv.shape[0], 9, 3, 3)
    elif kind == "unet_only":
        state = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    elif kind == "other_widths":
        key = "model.diffusion_model.input_blocks.0.0.weight"
        state[key] = torch.zeros(48, *state[key].shape[1:])
    elif kind == "unrelated":
        state = {"encoder.weight": torch.zeros(2, 2)}
    elif kind == "misshapen":  # right keys and widths, one tensor that fits no SD 1.x layer: diffusers' load fails
        key = "model.diffusion_model.out.2.weight"
        state[key] = torch.zeros(5, *state[key].shape[1:])
    elif kind == "no_vae_conv_in":  # issue 32: the converter indexed it (KeyError)
        del state["first_stage_model.encoder.conv_in.weight"]
    elif kind == "unet_conv_1d":  # issue 32: the channel check indexed its second dimension (IndexError)
        state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(32)
    return state


@pytest.mark.parametrize("kind, message", [
    ("sd2_openclip", "Stable Diffusion 2.x checkpoint (OpenCLIP"),
    ("sd2_context_1024", "Stable Diffusion 2.x checkpoint (1024-dim text context)"),
    ("sdxl", "an SDXL checkpoint"),
    ("lora", "is a LoRA (only lora_ weights"),
    ("inpainting", "an inpainting model (its UNet takes 9 input channels"),
    ("unet_only", "not recognisable as a Stable Diffusion 1.x checkpoint: it lacks the VAE"),
    ("other_widths", "not recognisable as Stable Diffusion 1.x: UNet width 48"),
    ("unrelated", "not recognisable as a Stable Diffusion 1.x checkpoint: it lacks the UNet"),
    ("misshapen", "cannot convert"),
    ("no_vae_conv_in", "key first_stage_model.encoder.conv_in.weight is missing, expected a 4-D convolution weight"),
    ("unet_conv_1d", "key model.diffusion_model.input_blocks.0.0.weight is of shape [32], expected a 4-D convolution"),
])
def test_single_files_that_are_not_sd1_are_refused_in_one_line(ldm_tiny, file_cache, tmp_path, kind, message):
    checkpoint = write_single_file(_mutated(ldm_tiny, kind), tmp_path / f"{kind}.safetensors")
    with pytest.raises(ValueError) as err:
        resolve_base_model(checkpoint)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert not file_cache.exists() or not any(file_cache.iterdir())  # nothing converted, nothing left


def test_a_truncated_file_is_named(ldm_tiny, file_cache, tmp_path):
    checkpoint = write_single_file(ldm_tiny, tmp_path / "cut.safetensors")
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # an interrupted download
    with pytest.raises(ValueError, match="cannot read checkpoint .*cut.safetensors"):
        resolve_base_model(checkpoint)


def test_a_ckpt_with_pickled_code_is_not_unpickled(file_cache, tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    # Lightning pickles its hyper-parameters as objects; weights_only unpickling refuses any class not allow-listed.
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(lr=1e-4)}, str(checkpoint))
    with pytest.raises(ValueError, match="model.ckpt is not a safe torch file .*convert it to .safetensors") as err:
        resolve_base_model(checkpoint)
    assert "\n" not in str(err.value)


def _folder_with(tiny_sd: Path, tmp_path: Path, part: str, **changes) -> Path:
    folder = tmp_path / "sd"
    shutil.copytree(tiny_sd, folder)
    config = folder / part
    config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
    return folder


@pytest.mark.parametrize("part, changes, message", [
    ("scheduler/scheduler_config.json", {"prediction_type": "v_prediction"}, "a v-prediction model"),
    ("unet/config.json", {"cross_attention_dim": 1024}, "a Stable Diffusion 2.x pipeline"),
    ("model_index.json", {"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}, "an SDXL pipeline"),
    ("unet/config.json", {"in_channels": 9}, "an inpainting model"),
])
def test_folders_that_are_not_sd1_are_refused_in_one_line(tiny_sd, tmp_path, part, changes, message):
    with pytest.raises(ValueError, match=message) as err:
        resolve_base_model(_folder_with(tiny_sd, tmp_path, part, **changes))
    assert "\n" not in str(err.value)


# ---- telling the forms apart ----


def test_an_existing_folder_wins_over_a_repo_id_of_the_same_spelling(tiny_sd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_sd, tmp_path / "tiny-org" / "tiny-sd")
    resolved = resolve_base_model(REPO)
    assert resolved.source == {"kind": "folder", "spec": REPO, "path": str(tmp_path / REPO)}
    with pytest.raises(ValueError, match="--revision applies to hub repo ids"):
        resolve_base_model(REPO, revision="main")


@pytest.mark.parametrize("spec, error, message", [
    ("./models/sd15", FileNotFoundError, "does not exist"),
    ("models/sd/v15", FileNotFoundError, "does not exist"),
    ("~/sd15.safetensors", FileNotFoundError, "does not exist"),
    ("sd15.ckpt", FileNotFoundError, "does not exist"),
    ("stable diffusion 1.5", ValueError, "neither an existing folder or checkpoint file nor a hub repo id"),
    ("sd15", ValueError, "neither an existing folder or checkpoint file nor a hub repo id"),
    ("", ValueError, "no base model given"),
])
def test_what_is_neither_a_path_nor_a_repo_id_gets_one_line(spec, error, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message) as err:
        resolve_base_model(spec)
    assert "\n" not in str(err.value)


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ValueError, match="is a file but not a .safetensors or .ckpt checkpoint"):
        resolve_base_model(notes)
