"""The inflated video UNet against independent references: naive loops, torch's 5D GroupNorm, the 2D UNet."""

import json

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from tav.cpp_ext import kv_gather_reference
from tav.tuner import VideoUNet
from tav.tuner.model.frame_layers import FrameContext, FramePooledGroupNorm, SparseCausalAttnProcessor


@pytest.mark.parametrize("num_frames", [1, 2, 5])
def test_kv_gather_follows_the_index_rule(num_frames):
    k, v = torch.randn(2 * num_frames, 3, 4), torch.randn(2 * num_frames, 3, 4)
    k2, v2 = kv_gather_reference(k, v, num_frames)
    for b in range(2):
        for i in range(num_frames):
            row, first, prev = b * num_frames + i, b * num_frames, b * num_frames + max(i - 1, 0)
            assert torch.equal(k2[row], torch.cat([k[first], k[prev]]))
            assert torch.equal(v2[row], torch.cat([v[first], v[prev]]))


@pytest.mark.parametrize("num_frames", [1, 2, 4])
def test_sparse_causal_attention_equals_naive_per_frame_loop(num_frames):
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    frames = FrameContext()
    frames.num_frames = num_frames
    attn.set_processor(SparseCausalAttnProcessor(frames))
    batch, tokens = 2, 5
    x = torch.randn(batch * num_frames, tokens, 16)
    with torch.no_grad():
        got = attn(x)
        expected = torch.empty_like(got)
        for b in range(batch):
            for i in range(num_frames):
                q = attn.to_q(x[b * num_frames + i])
                kv_src = torch.cat([x[b * num_frames], x[b * num_frames + max(i - 1, 0)]])
                k, v = attn.to_k(kv_src), attn.to_v(kv_src)
                heads = []
                for h in range(2):
                    sl = slice(8 * h, 8 * h + 8)
                    weights = torch.softmax(q[:, sl] @ k[:, sl].T / 8**0.5, dim=-1)
                    heads.append(weights @ v[:, sl])
                expected[b * num_frames + i] = attn.to_out[0](torch.cat(heads, dim=-1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_group_norm_statistics_pool_all_frames():
    frames = FrameContext()
    frames.num_frames = 3
    norm = torch.nn.GroupNorm(4, 8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    pooled = FramePooledGroupNorm.replacing(norm, frames)
    clip = torch.randn(2, 8, 3, 5, 5) * torch.arange(1, 4).view(1, 1, 3, 1, 1)  # frames differ in scale
    folded = clip.transpose(1, 2).reshape(6, 8, 5, 5)
    got = pooled(folded).reshape(2, 3, 8, 5, 5).transpose(1, 2)
    torch.testing.assert_close(got, norm(clip), rtol=1e-5, atol=1e-5)  # torch GroupNorm on 5D = the original
    assert not torch.allclose(pooled(folded), norm(folded), atol=1e-3)  # and not per-frame statistics


def test_single_frame_with_silent_temporal_layers_equals_the_2d_unet(tiny_sd):
    video = VideoUNet.from_pretrained_2d(tiny_sd)
    for name, param in video.named_parameters():
        if name.endswith("attn_temp.to_out.0.bias"):
            param.data.zero_()  # with the zeroed weight, the temporal branch is now exactly zero
    plain = UNet2DConditionModel.from_pretrained(tiny_sd / "unet")
    sample, text = torch.randn(2, 4, 1, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        got = video(sample, torch.tensor([10, 500]), text).sample[:, :, 0]
        expected = plain(sample[:, :, 0], torch.tensor([10, 500]), text).sample
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_eight_frame_forward_shape_and_cross_frame_coupling(tiny_sd):
    video = VideoUNet.from_pretrained_2d(tiny_sd)
    sample, text = torch.randn(1, 4, 8, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        out = video(sample, 500, text).sample
        changed = sample.clone()
        changed[:, :, 7] += 1.0  # the last frame is nobody's key, but it feeds GroupNorm and temporal attention
        out_changed = video(changed, 500, text).sample
    assert out.shape == (1, 4, 8, 8, 8)
    assert not torch.allclose(out[:, :, 0], out_changed[:, :, 0])


def test_fresh_temporal_layers_are_seeded_and_zero_at_the_output(tiny_sd):
    a = VideoUNet.from_pretrained_2d(tiny_sd, seed=3).state_dict()
    b = VideoUNet.from_pretrained_2d(tiny_sd, seed=3).state_dict()
    temporal = [k for k in a if ".attn_temp." in k]
    assert temporal and all(torch.equal(a[k], b[k]) for k in temporal)
    assert all(a[k].abs().sum() == 0 for k in temporal if k.endswith("to_out.0.weight"))
    assert all(a[k].abs().sum() > 0 for k in temporal if k.endswith("to_out.0.bias"))


def test_trainable_parameters_are_exactly_the_original_set(tiny_sd):
    names = VideoUNet.from_pretrained_2d(tiny_sd).trainable_parameter_names()
    assert names and all(
        n.rsplit(".", 1)[0].endswith(("attn1.to_q", "attn2.to_q")) or ".attn_temp." in n for n in names
    )
    assert not any(".norm_temp." in n for n in names)


def test_official_3d_checkpoint_round_trip(tiny_sd, tmp_path):
    """An official-layout unet/ (3D block names, pickled .bin, attn_temp/norm_temp keys) loads exactly."""
    source = VideoUNet.from_pretrained_2d(tiny_sd, seed=7)
    for name, param in source.named_parameters():
        if ".attn_temp." in name or ".norm_temp." in name:
            param.data.normal_()  # as if tuned
    config = json.loads((tiny_sd / "unet" / "config.json").read_text())
    config.update(
        _class_name="UNet3DConditionModel",
        down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
        up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
        mid_block_type="UNetMidBlock3DCrossAttn",
    )
    unet_dir = tmp_path / "official" / "unet"
    unet_dir.mkdir(parents=True)
    (unet_dir / "config.json").write_text(json.dumps(config))
    state = source.state_dict()
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn_temp.to_q.weight" in state
    assert "down_blocks.0.attentions.0.transformer_blocks.0.norm_temp.weight" in state
    torch.save(state, unet_dir / "diffusion_pytorch_model.bin")

    loaded = VideoUNet.from_pretrained_2d(tmp_path / "official")
    assert loaded.has_tuned_temporal
    sample, text = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, 10, text).sample, source(sample, 10, text).sample)


def test_key_mismatch_names_missing_and_unexpected_keys(tiny_sd):
    model = VideoUNet.from_pretrained_2d(tiny_sd)
    state = model.state_dict()
    state.pop("conv_in.weight")
    state["not.a.real.key"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing 1 keys: conv_in.weight; unexpected 1 keys: not.a.real.key"):
        model.load_weights(state, where="test")


def test_bad_inputs_give_one_line_errors(tiny_sd, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoUNet.from_pretrained_2d(tmp_path / "nowhere")
    (tmp_path / "empty" / "unet").mkdir(parents=True)
    (tmp_path / "empty" / "unet" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no UNet weights"):
        VideoUNet.from_pretrained_2d(tmp_path / "empty")
    model = VideoUNet.from_pretrained_2d(tiny_sd)
    with pytest.raises(ValueError, match=r"sample must be \[B, C, F, H, W\]"):
        model(torch.randn(1, 4, 8, 8), 10, torch.randn(1, 77, 32))
    with pytest.raises(ValueError, match="encoder_hidden_states must be"):
        model(torch.randn(2, 4, 3, 8, 8), 10, torch.randn(1, 77, 32))
