"""Frame-aware pieces that inflate diffusers' 2D SD UNet into Tune-A-Video's video UNet.

The video UNet folds frames into the batch ([B, C, F, H, W] -> [(B F), C, H, W])
so every 2D conv and the per-frame parts of the SD UNet run unchanged. The
parts that must see the frame axis read it from a shared ``FrameContext``,
set once per forward by ``VideoUNet.forward``:

- ResNet GroupNorm and ``conv_norm_out``: statistics over all frames of a clip,
  as torch GroupNorm on the original 5D tensor computes them.
- attn1: sparse-causal attention, keys/values of frame 0 and frame i-1.
- a temporal self-attention over frames after each transformer block's
  feed-forward (``norm_temp`` + ``attn_temp``, residual, no position encoding).
"""

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention

from tav.cpp_ext import kv_gather

from .temporal_window import band_bias


class FrameContext:
    """The frame count of the forward pass in flight (shapes are static per call), and how frames are mixed.

    ``temporal_window``: frames each frame's temporal attention sees (temporal_window.py); None is all.
    ``kv_gather_plugin``: under ONNX export, each KV gather becomes one tav::KVGather node (TensorRT's
    KVGather plugin) instead of standard ops; the exporter sets it for the trace.
    """

    def __init__(self):
        self.num_frames = 1
        self.temporal_window = None
        self.kv_gather_plugin = False


class FramePooledGroupNorm(torch.nn.GroupNorm):
    """GroupNorm over [(B F), C, H, W] whose statistics pool all F frames of a clip."""

    def __init__(self, frames: FrameContext, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self.frames = frames

    @classmethod
    def replacing(cls, norm: torch.nn.GroupNorm, frames: FrameContext) -> "FramePooledGroupNorm":
        pooled = cls(frames, norm.num_groups, norm.num_channels, norm.eps, norm.affine)
        if not any(p.is_meta for p in norm.parameters()):  # a meta norm's values come with the checkpoint
            pooled.load_state_dict(norm.state_dict())
        return pooled

    def forward(self, x):
        f = self.frames.num_frames
        bf, c, h, w = x.shape
        # [B, C, F, H, W]: GroupNorm then reduces over (C/G, F, H, W), as in the original.
        clip = x.reshape(bf // f, f, c, h, w).transpose(1, 2)
        out = F.group_norm(clip, self.num_groups, self.weight, self.bias, self.eps)
        return out.transpose(1, 2).reshape(bf, c, h, w)


class SparseCausalAttnProcessor:
    """attn1 of Tune-A-Video: Q from frame i, K/V from [frame 0 ; frame max(i-1, 0)], via SDPA.

    No mask: frames 0 and 1 see frame 0's keys twice, which leaves softmax unchanged.
    """

    def __init__(self, frames: FrameContext):
        self.frames = frames

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("sparse-causal attention is self-attention: no context or mask expected")
        bf = hidden_states.shape[0]
        query = attn.to_q(hidden_states)
        key, value = kv_gather(attn.to_k(hidden_states), attn.to_v(hidden_states), self.frames.num_frames,
                               plugin=self.frames.kv_gather_plugin)
        head_dim = query.shape[-1] // attn.heads

        def heads(x):
            return x.reshape(bf, -1, attn.heads, head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(query), heads(key), heads(value))
        out = out.transpose(1, 2).reshape(bf, -1, attn.heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))


class VideoTransformerBlock(BasicTransformerBlock):
    """SD's transformer block followed by temporal self-attention over the frames at each token."""

    frames: FrameContext

    @classmethod
    def inflate(cls, block: BasicTransformerBlock, frames: FrameContext) -> "VideoTransformerBlock":
        # Re-class the loaded block instead of rebuilding it: it keeps every SD weight and
        # config detail, and its parameter names (attn1, attn2, ff, norm1-3) stay official.
        dim = block.norm1.normalized_shape[0]
        block.__class__ = cls
        block.frames = frames
        block.attn1.set_processor(SparseCausalAttnProcessor(frames))
        block.norm_temp = torch.nn.LayerNorm(dim)
        block.attn_temp = Attention(
            query_dim=dim,
            heads=block.attn1.heads,
            dim_head=dim // block.attn1.heads,
            bias=block.attn1.to_q.bias is not None,
            upcast_attention=block.attn1.upcast_attention,
        )
        # As the original: only the output weight is zeroed; its bias keeps the default init.
        torch.nn.init.zeros_(block.attn_temp.to_out[0].weight)
        return block

    def forward(self, hidden_states, *args, **kwargs):
        hidden_states = super().forward(hidden_states, *args, **kwargs)
        f = self.frames.num_frames
        bf, tokens, c = hidden_states.shape
        # (b f) d c -> (b d) f c: attend across frames at each spatial token.
        x = hidden_states.reshape(bf // f, f, tokens, c).transpose(1, 2).reshape(-1, f, c)
        bias = band_bias(f, self.frames.temporal_window, x.dtype, x.device)
        normed = self.norm_temp(x)
        x = (self.attn_temp(normed) if bias is None else windowed_attention(self.attn_temp, normed, bias)) + x
        return x.reshape(bf // f, tokens, f, c).transpose(1, 2).reshape(bf, tokens, c)


def windowed_attention(attn: Attention, x, bias):
    """``attn(x)`` (diffusers' SDPA processor: plain self-attention) with ``bias`` added to the scores."""
    batch, head_dim = x.shape[0], attn.to_q.out_features // attn.heads

    def heads(t):
        return t.reshape(batch, -1, attn.heads, head_dim).transpose(1, 2)

    query, key, value = heads(attn.to_q(x)), heads(attn.to_k(x)), heads(attn.to_v(x))
    # Under autocast the projections come out in half precision; SDPA wants the bias in the query's dtype.
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype))
    out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(x.dtype)
    return attn.to_out[1](attn.to_out[0](out))
