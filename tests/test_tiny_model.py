"""tav-make-tiny: an SD-1.x-layout folder with CLIP's real tokenizer, written atomically."""

import json

from transformers import CLIPTokenizer

from tav.tuner.demo.tiny_model import main as tiny_main
from tav.tuner.demo.tiny_model import make_tiny

from fixtures.commands import error_of


def test_folder_has_the_sd_layout_and_sd_block_types(tiny_sd):
    index = json.loads((tiny_sd / "model_index.json").read_text())
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    unet = json.loads((tiny_sd / "unet" / "config.json").read_text())
    assert unet["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert unet["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    scheduler = json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["beta_schedule"] == "scaled_linear" and scheduler["steps_offset"] == 1


def test_tokenizer_is_clips_real_bpe(tiny_sd):
    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    # Token ids of openai/clip-vit-large-patch14, the tokenizer of SD 1.x.
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408


def test_same_seed_same_weights_and_nonempty_target_refused(tmp_path):
    a = make_tiny(tmp_path / "a", seed=1)
    b = make_tiny(tmp_path / "b", seed=1)
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (a / part).read_bytes() == (b / part).read_bytes()
    # tav-make-tiny's main in-process (its console script calls the same main): bad input, exit status 2.
    assert "not an empty folder" in error_of(tiny_main, [str(a)], "tav-make-tiny", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no staging folder left behind
