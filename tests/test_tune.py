"""One-shot tuning on the real skiing clip with the tiny model: what changes, the loss, resume, inversion, errors.

Tiny-model settings: 6 frames, 64x64, lr 1e-3 (3e-5 moves a random tiny model too little
to measure in a few steps), 8 steps. The evaluation loss is deterministic (fixed seeded
pairs), and with these settings it drops by ~0.04 on every seed tried (0-3).
"""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tav.tuner.cli.tune import build_parser, settings_from
from tav.tuner.cli.tune import main as tune_main
from tav.tuner.model import sd_folder
from tav.tuner.model.video_unet import TRAINABLE_MODULE_SUFFIXES, VideoUNet
from tav.tuner.tuned_weights import load_tuned
from tav.tuner.tuning.config import TuneConfig
from tav.tuner.tuning.ddim_inversion import ddim_inversion
from tav.tuner.tuning.session import encode_clip, prepare, train_step
from tav.tuner.tuning.tune import TuneInterrupted, tune
from tav.tuner.tuning.video_input import load_clip

SMALL = dict(frames=6, height=64, width=64, lr=1e-3, steps=8, checkpoint_every=0, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(tiny_sd, clip, out, **overrides) -> TuneConfig:
    return TuneConfig(pretrained_model_path=str(tiny_sd), video=str(clip), prompt="a man is skiing", out=str(out),
                      **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def run_dir(tuned_run):
    """tests/fixtures' real tuning run: config(...) with validate_every=4, validation_steps=2 (TUNED_RUN)."""
    return tuned_run


def test_run_dir_holds_the_contract_files(run_dir, tiny_sd):
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "inverted_latents.safetensors", "run.json", "tuned.safetensors", "validation"]
    assert not Path(f"{run_dir}.partial").exists()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["pretrained_model_path"] == str(tiny_sd.absolute())
    assert run["pretrained_model_hash"] == sd_folder.folder_hash(tiny_sd)
    assert (run["frames"], run["height"], run["width"], run["seed"], run["steps"]) == (6, 64, 64, 0, 8)
    assert len(run["losses"]) == 8 and run["lr"] == 1e-3 and run["adam_weight_decay"] == 1e-2
    assert {"torch", "diffusers", "transformers"} <= set(run["versions"])
    assert run["wall_time_s"] > 0 and run["peak_memory_bytes"] > 0
    latents = load_file(str(run_dir / "inverted_latents.safetensors"))["latents"]
    assert latents.shape == (1, 4, 6, 8, 8) and latents.dtype == torch.float32
    assert sorted(p.name for p in (run_dir / "validation").iterdir()) == [
        "step-000004-a-man-is-skiing.gif", "step-000008-a-man-is-skiing.gif"]


def test_tuned_file_holds_exactly_the_trainable_tensors_under_official_names(run_dir, tiny_sd):
    tuned = load_file(str(run_dir / "tuned.safetensors"))
    names = VideoUNet.from_pretrained_2d(tiny_sd).trainable_parameter_names()
    assert sorted(tuned) == sorted(names)
    assert all(any(f".{suffix}." in name for suffix in TRAINABLE_MODULE_SUFFIXES) for name in tuned)
    assert any(".attn_temp.to_out.0.weight" in k for k in tuned) and any(".attn1.to_q.weight" in k for k in tuned)


def test_evaluation_loss_drops(run_dir):
    run = json.loads((run_dir / "run.json").read_text())
    assert run["eval_loss_after"] < run["eval_loss_before"] - 0.01, run


def test_only_trainable_tensors_change_and_only_they_need_grad(tiny_sd, skiing_clip, tmp_path):
    cfg = config(tiny_sd, skiing_clip, tmp_path / "unused")
    session = prepare(cfg, tiny_sd, load_clip(skiing_clip, 6, 64, 64, 2))
    trainable = set(session.unet.trainable_parameter_names())
    assert {n for n, p in session.unet.named_parameters() if p.requires_grad} == trainable
    before = {k: v.clone() for k, v in session.unet.state_dict().items()}
    for _ in range(3):
        train_step(session)
    after = session.unet.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable


def test_bf16_autocast_keeps_trained_tensors_fp32(tiny_sd, skiing_clip, tmp_path):
    cfg = config(tiny_sd, skiing_clip, tmp_path / "unused", precision="bf16")
    session = prepare(cfg, tiny_sd, load_clip(skiing_clip, 6, 64, 64, 2))
    assert all(p.dtype == torch.float32 for p in session.trainable.values())
    conv_in = session.unet.conv_in.weight
    assert conv_in.dtype == torch.bfloat16 and session.unet.conv_norm_out.weight.dtype == torch.float32
    assert np.isfinite(train_step(session))


def test_resume_ends_bit_identical_to_an_uninterrupted_run(tiny_sd, skiing_clip, tmp_path, run_dir):
    out = tmp_path / "run"

    def interrupt_at_3(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(TuneInterrupted, match="step 3/8.*--resume"):
        tune(config(tiny_sd, skiing_clip, out, checkpoint_every=2), on_step=interrupt_at_3)
    assert not out.exists() and (tmp_path / "run.partial" / "checkpoint" / "state.json").is_file()
    with pytest.raises(FileExistsError, match="--resume"):
        tune(config(tiny_sd, skiing_clip, out))
    with pytest.raises(ValueError, match="cannot resume: lr"):
        tune(config(tiny_sd, skiing_clip, out, lr=2e-3, resume=True))
    resumed = tune(config(tiny_sd, skiing_clip, out, resume=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    for name in ("tuned.safetensors", "inverted_latents.safetensors"):
        a, b = load_file(str(run_dir / name)), load_file(str(resumed / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    a, b = (json.loads((d / "run.json").read_text()) for d in (run_dir, resumed))
    assert a["losses"] == b["losses"] and a["eval_loss_after"] == b["eval_loss_after"] and b["resumed_from_step"] == 3


def test_inverted_latents_are_the_tuned_models_inversion_of_the_clip(run_dir, tiny_sd, skiing_clip):
    tuned = load_tuned(run_dir)
    latents = encode_clip(sd_folder.load_vae(tiny_sd), load_clip(skiing_clip, 6, 64, 64, 2), seed=0)
    tokenizer, encoder = sd_folder.load_tokenizer(tiny_sd), sd_folder.load_text_encoder(tiny_sd)
    ids = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    empty = encoder(ids).last_hidden_state
    again = ddim_inversion(tuned.unet, latents, empty, sd_folder.load_ddim(tiny_sd), 50)
    torch.testing.assert_close(again, tuned.inverted_latents, rtol=1e-4, atol=1e-5)
    base = ddim_inversion(VideoUNet.from_pretrained_2d(tiny_sd), latents, empty, sd_folder.load_ddim(tiny_sd), 50)
    assert not torch.allclose(base, tuned.inverted_latents, atol=1e-3)  # the tuned weights, not the base ones


def naive_inversion(unet, latents, text, num_steps, num_train=1000, offset=1):
    """The official next_step loop, written from its formula with float64 alphas of SD's scaled_linear schedule."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, num_train, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1 - betas)
    step = num_train // num_steps
    x = latents.double()
    for i in range(num_steps):
        t = i * step + offset  # DDIM timesteps, walked upwards
        a_prev = alphas_cumprod[t - step] if t - step >= 0 else alphas_cumprod[0]  # set_alpha_to_one=False
        a_t = alphas_cumprod[t]
        with torch.no_grad():
            eps = unet(x.float(), torch.tensor(t), text).sample.double()
        x0 = (x - np.sqrt(1 - a_prev) * eps) / np.sqrt(a_prev)
        x = np.sqrt(a_t) * x0 + np.sqrt(1 - a_t) * eps
    return x.float()


@pytest.mark.parametrize("num_steps", [2, 3])
def test_inversion_follows_the_official_next_step(tiny_sd, num_steps):
    unet = VideoUNet.from_pretrained_2d(tiny_sd).eval()
    latents, text = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 77, 32)
    ours = ddim_inversion(unet, latents, text, sd_folder.load_ddim(tiny_sd), num_steps)
    torch.testing.assert_close(ours, naive_inversion(unet, latents, text, num_steps), rtol=1e-4, atol=1e-5)


def run_tune_cli(argv, capsys) -> tuple:
    with pytest.raises(SystemExit) as exit_info:
        tune_main(argv)
    return exit_info.value.code, capsys.readouterr().err.strip()


def test_bad_inputs_give_one_line_errors_and_leave_nothing(tiny_sd, skiing_clip, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    base = ["--pretrained", str(tiny_sd), "--prompt", "a man is skiing", "--out", str(tmp_path / "run"), "--steps", "1"]
    cases = [
        (["--video", str(bad)], "cannot decode"),
        (["--video", str(skiing_clip), "--frames", "50", "--stride", "2"], "has 91 frames, but 50 frames"),
        (["--video", str(skiing_clip), "--height", "60", "--width", "64"], "--height 60 is not a multiple of 8"),
        (["--video", str(skiing_clip), "--pretrained", str(tmp_path / "nope")], "does not exist"),
        (["--video", str(skiing_clip), "--pretrained", "not a model"], "neither an existing folder"),
        (["--video", str(skiing_clip), "--resume"], "nothing to resume"),
    ]
    for extra, expected in cases:
        code, err = run_tune_cli(base + extra, capsys)
        assert code != 0 and err.startswith("tav-tune: error:") and expected in err and "\n" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_official_config_fields_map_and_flags_override(tmp_path):
    cfg_file = tmp_path / "man-skiing.yaml"
    cfg_file.write_text(
        'pretrained_model_path: "./sd"\noutput_dir: "./outputs/man-skiing"\n'
        "train_data:\n  video_path: data/man-skiing.mp4\n  prompt: a man is skiing\n  n_sample_frames: 24\n"
        "  width: 512\n  height: 512\n  sample_start_idx: 0\n  sample_frame_rate: 2\n"
        "validation_data:\n  prompts: [mickey mouse is skiing on the snow]\n  video_length: 24\n  width: 512\n"
        "  height: 512\n  num_inference_steps: 50\n  guidance_scale: 12.5\n  use_inv_latent: True\n"
        "  num_inv_steps: 50\n"
        "learning_rate: 3e-5\ntrain_batch_size: 1\nmax_train_steps: 500\ncheckpointing_steps: 1000\n"
        "validation_steps: 100\ntrainable_modules: [attn1.to_q, attn2.to_q, attn_temp]\nseed: 33\n"
        "mixed_precision: fp16\nuse_8bit_adam: False\ngradient_checkpointing: True\n"
        "enable_xformers_memory_efficient_attention: True\nsomething_new: 1\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = settings_from(build_parser().parse_args(["--config", str(cfg_file), "--frames", "6", "--steps", "20"]))
    messages = [str(w.message) for w in caught]
    assert any("unknown config fields: something_new" in m for m in messages), messages
    assert any("fp16" in m for m in messages) != torch.cuda.is_available()
    assert (cfg.pretrained_model_path, cfg.video, cfg.prompt, cfg.out) == (
        "./sd", "data/man-skiing.mp4", "a man is skiing", "./outputs/man-skiing")
    assert (cfg.frames, cfg.steps, cfg.stride, cfg.start, cfg.height, cfg.lr, cfg.seed) == (6, 20, 2, 0, 512, 3e-5, 33)
    assert (cfg.validate_every, cfg.checkpoint_every, cfg.validation_init) == (100, 1000, "inverted")
    assert cfg.validation_prompts == ["mickey mouse is skiing on the snow"] and cfg.gradient_checkpointing
    assert cfg.precision == ("fp16" if torch.cuda.is_available() else "auto")  # fp16 needs CUDA


def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(tiny_sd, skiing_clip, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tav.tuner.cli.tune", "--pretrained", str(tiny_sd), "--video", str(skiing_clip),
           "--prompt", "a man is skiing", "--out", str(out), "--frames", "6", "--height", "64", "--width", "64",
           "--steps", "100000", "--checkpoint-every", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    buffer = ""
    deadline = time.monotonic() + 120
    while "loss=" not in buffer and time.monotonic() < deadline:  # the progress bar shows a finished step
        chunk = os.read(proc.stderr.fileno(), 4096).decode(errors="replace")
        if not chunk:
            break  # exited early; the asserts below show why
        buffer += chunk
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = (buffer + rest).strip().splitlines()[-1]
    assert proc.returncode == 130 and err.startswith("tav-tune: error: interrupted at step") and "--resume" in err
    assert "Traceback" not in buffer + rest
    state = json.loads((tmp_path / "run.partial" / "checkpoint" / "state.json").read_text())
    assert state["step"] >= 1 and len(state["losses"]) == state["step"] and not out.exists()


def test_cli_with_an_official_config_tunes_and_prints_a_summary(tiny_sd, skiing_clip, tmp_path, capsys):
    cfg_file = tmp_path / "clip.yaml"
    cfg_file.write_text(
        f'pretrained_model_path: "{tiny_sd}"\noutput_dir: "{tmp_path / "run"}"\n'
        f"train_data:\n  video_path: {skiing_clip}\n  prompt: a man is skiing\n  n_sample_frames: 24\n"
        "  width: 64\n  height: 64\n  sample_frame_rate: 3\nlearning_rate: 1e-3\nmax_train_steps: 500\n"
        "mixed_precision: 'no'\n"
    )
    tune_main(["--config", str(cfg_file), "--frames", "4", "--steps", "2", "--inversion-steps", "5"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tmp_path / "run") and "2 steps on 4 frames 64x64" in out[-2] and "eval loss" in out[-2]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["frames"], run["stride"], run["steps"], run["lr"], run["resolved_precision"]) == (
        4, 3, 2, 1e-3, "float32")
    assert load_file(str(tmp_path / "run" / "inverted_latents.safetensors"))["latents"].shape == (1, 4, 4, 8, 8)
