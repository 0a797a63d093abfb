"""The reference sampler against hand loops over diffusers' DDIMScheduler, and tav-sample's outputs and errors."""

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from tav.runtime.video_output import frames_to_uint8
from tav.tuner.cli.sample import main as sample_main
from tav.tuner.model import sd_folder
from tav.tuner.sampler import sample
from tav.tuner.tuned_weights import load_tuned

from fixtures.ldm_checkpoint import ldm_state_dict, write_single_file

PROMPT = "spider man is skiing on the beach, cartoon style"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tuned_run):
    return tuned_run  # tests/fixtures' real tuning run: 6 frames at 64x64


@pytest.fixture(scope="module")
def tuned(run_dir):
    return load_tuned(run_dir)


def hand_loop(tuned, tiny_sd, prompt, negative, steps, guidance, seed, init, eta):
    """docs/CONTRACTS.md written out step by step, calling diffusers' scheduler.step directly."""
    tokenizer, encoder = sd_folder.load_tokenizer(tiny_sd), sd_folder.load_text_encoder(tiny_sd)
    ids = tokenizer([negative, prompt], padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    scheduler = sd_folder.load_ddim(tiny_sd)
    scheduler.set_timesteps(steps)
    rng = np.random.default_rng(seed)
    shape = (1, 4, 6, 8, 8)
    with torch.no_grad():
        text = encoder(ids).last_hidden_state
        if init == "inverted":
            x = tuned.inverted_latents.clone()
        else:
            x = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
        for t in scheduler.timesteps:
            uncond, cond = tuned.unet(torch.cat([x, x]), t, text).sample.chunk(2)
            noise = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)) if eta > 0 else None
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x, eta=eta, variance_noise=noise).prev_sample
        vae = sd_folder.load_vae(tiny_sd)
        images = vae.decode(x[0].transpose(0, 1) / 0.18215).sample
    return x, frames_to_uint8(images.numpy())


@pytest.mark.parametrize("init, eta, negative", [("noise", 0.0, ""), ("noise", 0.7, "blurry"), ("inverted", 0.0, "")])
def test_sampler_matches_a_hand_loop_over_diffusers_ddim(tuned, tiny_sd, init, eta, negative):
    result = sample(tuned, PROMPT, negative, steps=4, guidance=7.5, seed=3, init=init, eta=eta)
    latents, frames = hand_loop(tuned, tiny_sd, PROMPT, negative, 4, 7.5, 3, init, eta)
    assert result.latents.dtype == np.float32 and result.latents.shape == (1, 4, 6, 8, 8)
    np.testing.assert_allclose(result.latents, latents.numpy(), rtol=1e-5, atol=1e-6)
    assert result.frames.dtype == np.uint8 and result.frames.shape == (6, 64, 64, 3)
    assert np.abs(result.frames.astype(int) - frames).max() <= 1  # at most a rounding flip


def test_ddim_step_is_the_papers_equation_12(tiny_sd):
    """The reference's reference: one diffusers DDIM step (eta 0) equals eq. 12 in float64 numpy."""
    scheduler = sd_folder.load_ddim(tiny_sd)
    scheduler.set_timesteps(50)
    t, prev = 981, 961
    alphas = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    x, eps = np.random.default_rng(0).standard_normal((2, 1, 4, 2, 3, 3))
    x0 = (x - np.sqrt(1 - alphas[t]) * eps) / np.sqrt(alphas[t])
    expected = np.sqrt(alphas[prev]) * x0 + np.sqrt(1 - alphas[prev]) * eps
    got = scheduler.step(torch.tensor(eps, dtype=torch.float32), t, torch.tensor(x, dtype=torch.float32)).prev_sample
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)


def run_sample_cli(argv, capsys):
    try:
        sample_main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def test_cli_writes_every_format(run_dir, tmp_path, capsys):
    base = ["--weights", str(run_dir), "--prompt", PROMPT, "--steps", "3"]
    for out in ("v.mp4", "v.gif", "v.npy", "pngs", "pngs2/"):
        code, stdout, err = run_sample_cli(base + ["--out", str(tmp_path / out)], capsys)
        assert code == 0, err
    assert iio.imread(tmp_path / "v.mp4", plugin="FFMPEG").shape == (6, 64, 64, 3)
    assert iio.imread(tmp_path / "v.gif", index=None).shape == (6, 64, 64, 3)
    frames = np.load(tmp_path / "v.npy")
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == np.uint8
    for folder in ("pngs", "pngs2"):
        assert len(list((tmp_path / folder).glob("frame_*.png"))) == 6
        np.testing.assert_array_equal(iio.imread(tmp_path / folder / "frame_0005.png"), frames[5])


def test_same_seed_gives_identical_frames(run_dir, tmp_path, capsys):
    base = ["--weights", str(run_dir), "--prompt", PROMPT, "--steps", "3", "--init", "noise"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert run_sample_cli(base + ["--seed", seed, "--out", str(tmp_path / f"{name}.npy")], capsys)[0] == 0
    a, b, c = (np.load(tmp_path / f"{n}.npy") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_inputs_give_one_line_errors_and_leave_nothing(run_dir, tmp_path, capsys):
    no_latents = tmp_path / "no_latents"
    shutil.copytree(run_dir, no_latents)
    (no_latents / "inverted_latents.safetensors").unlink()
    out = tmp_path / "out"
    out.mkdir()
    cases = [
        (["--weights", str(tmp_path / "missing")], "does not exist"),
        (["--weights", str(no_latents)], "no inverted latents"),
        (["--weights", str(run_dir), "--out", str(out / "v.avi")], "unknown suffix"),
        (["--weights", str(tmp_path)], "neither a RUN_DIR"),
        (["--weights", str(run_dir), "--out", str(out / "no" / "v.gif")], "does not exist; create it"),
        (["--weights", str(run_dir), "--revision", "main"], "--revision needs --pretrained"),
        (["--weights", str(run_dir), "--pretrained", "no such model"], "neither an existing folder"),
    ]
    for extra, expected in cases:
        argv = ["--prompt", PROMPT, "--steps", "2", "--out", str(out / "v.mp4")] + extra
        code, _, err = run_sample_cli(argv, capsys)
        assert code != 0 and err.startswith("tav-sample: error:") and expected in err and "\n" not in err, err
    assert list(out.iterdir()) == []


def test_pretrained_replaces_the_base_model_the_run_names(run_dir, tiny_sd, other_sd, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TAV_SINGLE_FILE_CACHE", str(tmp_path / "converted"))
    single = write_single_file(ldm_state_dict(tiny_sd), tmp_path / "base.safetensors")
    base = ["--weights", str(run_dir), "--prompt", PROMPT, "--steps", "2"]
    bases = (("own", []), ("single", ["--pretrained", str(single)]), ("other", ["--pretrained", str(other_sd)]))
    for name, extra in bases:
        code, _, err = run_sample_cli(base + extra + ["--out", str(tmp_path / f"{name}.npy")], capsys)
        assert code == 0, err
    own, from_single, from_other = (np.load(tmp_path / f"{n}.npy") for n in ("own", "single", "other"))
    assert np.array_equal(own, from_single)  # the same weights as a single file
    assert not np.array_equal(own, from_other)  # another base model is really used


def test_official_output_folder_samples_like_the_run_dir(run_dir, tuned, tiny_sd, tmp_path):
    """An official Tune-A-Video output: full pipeline, 3D unet/ with the temporal weights, config.yaml, inv_latents/."""
    official = tmp_path / "official"
    shutil.copytree(tiny_sd, official)
    config = json.loads((official / "unet" / "config.json").read_text())
    config.update(_class_name="UNet3DConditionModel",
                  down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
                  up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3, mid_block_type="UNetMidBlock3DCrossAttn")
    (official / "unet" / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tuned.unet.state_dict().items()},
              str(official / "unet" / "diffusion_pytorch_model.safetensors"))
    train_data = {"n_sample_frames": 6, "height": 64, "width": 64}
    (official / "config.yaml").write_text(yaml.safe_dump({"train_data": train_data}))
    (official / "inv_latents").mkdir()
    torch.save(tuned.inverted_latents, official / "inv_latents" / "ddim_latent-2.pt")
    a = sample(load_tuned(official), PROMPT, steps=3)
    b = sample(tuned, PROMPT, steps=3)
    np.testing.assert_array_equal(a.latents, b.latents)
    np.testing.assert_array_equal(a.frames, b.frames)


def test_prompts_are_padded_to_77_tokens_and_long_ones_cut_with_a_warning(tiny_sd):
    from tav.tuner.model.text_encoding import encode_prompts

    tokenizer, encoder = sd_folder.load_tokenizer(tiny_sd), sd_folder.load_text_encoder(tiny_sd)
    with pytest.warns(UserWarning, match="only the first 77"):
        text = encode_prompts(tokenizer, encoder, ["", "skiing " * 100])
    assert text.shape == (2, 77, 32) and text.dtype == torch.float32
