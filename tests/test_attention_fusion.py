"""The MultiHeadAttention rewrite, one attention kind at a time, against the PyTorch modules in fp32.

Each kind is the real module the video UNet / VAE uses (sparse-causal attn1 with its frame
gather, cross-attention attn2, temporal attn_temp, the VAE mid-block attention), at SD-like
head sizes (40, and 64 for the single-head VAE) but few tokens. It is traced as the exporter
traces it, cleaned with the exporter's ``optimise``, fused, and run in ONNX Runtime.

Tolerances are the exporter's parity tolerances (export/parity.py): fp32 rel L2 1e-4 (only
summation order differs; measured ~1e-7 here), fp16 1e-2 against the fp32 module on the same
fp16-rounded inputs (half precision keeps ~3 digits; measured ~1e-3 here).
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.attention import BasicTransformerBlock

from tav.export.attention_fusion import MHA_DOMAIN, MHA_OP, fuse_attention
from tav.export.onnx_hygiene import optimise
from tav.export.parity import TOLERANCE_REL_L2
from tav.tuner.model.frame_layers import FrameContext, VideoTransformerBlock

FRAMES, TOKENS, HEADS, HEAD_SIZE, TEXT_DIM = 3, 16, 2, 40, 48
WIDTH = HEADS * HEAD_SIZE


def _video_block():
    torch.manual_seed(0)
    block = BasicTransformerBlock(WIDTH, HEADS, HEAD_SIZE, cross_attention_dim=TEXT_DIM)
    context = FrameContext()
    context.num_frames = FRAMES
    block = VideoTransformerBlock.inflate(block, context)
    # The output weight of attn_temp starts at zero (the method's init): give it weights so its attention shows.
    torch.nn.init.normal_(block.attn_temp.to_out[0].weight, std=0.05)
    return block.eval()


class SparseCausal(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = _video_block().attn1

    def forward(self, x):  # [2 F, N, C]: frame i attends to frames 0 and i-1
        return self.attn(x)


class Cross(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = _video_block().attn2

    def forward(self, x, text):  # [2 F, N, C] against [2 F, 77, D]
        return self.attn(x, encoder_hidden_states=text)


class Temporal(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = _video_block().attn_temp

    def forward(self, x):  # [(B N), F, C]: each token across the frames
        return self.attn(x)


class VaeMid(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(64,), down_block_types=("DownEncoderBlock2D",),
                            up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=32)
        self.attn = vae.decoder.mid_block.attentions[0]

    def forward(self, x):  # [F, C, h, w], one 64-wide head over the h*w positions
        return self.attn(x)


KINDS = {
    "sparse_causal": (SparseCausal, lambda rng: [rng.standard_normal((2 * FRAMES, TOKENS, WIDTH))]),
    "cross": (Cross, lambda rng: [rng.standard_normal((2 * FRAMES, TOKENS, WIDTH)),
                                  rng.standard_normal((2 * FRAMES, 77, TEXT_DIM))]),
    "temporal": (Temporal, lambda rng: [rng.standard_normal((2 * TOKENS, FRAMES, WIDTH))]),
    "vae_mid_block": (VaeMid, lambda rng: [rng.standard_normal((FRAMES, 64, 4, 4))]),
}


def _export(module, inputs, precision, path):
    dtype = torch.float16 if precision == "fp16" else torch.float32
    args = tuple(torch.from_numpy(x).to(dtype) for x in inputs)
    names = [f"in{i}" for i in range(len(inputs))]
    with torch.no_grad():
        torch.onnx.export(module.to(dtype), args, str(path), input_names=names, output_names=["out"], opset_version=17,
                          dynamo=False)
    return optimise(onnx.load(str(path)), precision), names


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fused_attention_equals_the_pytorch_module(kind, precision, tmp_path):
    make, make_inputs = KINDS[kind]
    inputs = [x.astype(np.float32) for x in make_inputs(np.random.default_rng(1))]
    if precision == "fp16":
        # The error is the graph's, not the rounding's.
        inputs = [x.astype(np.float16).astype(np.float32) for x in inputs]
    with torch.no_grad():
        reference = make()(*map(torch.from_numpy, inputs)).numpy().astype(np.float64)

    traced, names = _export(make(), inputs, precision, tmp_path / "traced.onnx")
    result = fuse_attention(traced)
    assert (result.fused, result.left) == (1, 0)
    nodes = [n for n in result.model.graph.node if (n.domain, n.op_type) == (MHA_DOMAIN, MHA_OP)]
    assert len(nodes) == 1 and not [n for n in result.model.graph.node if n.op_type == "Softmax"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    heads, size = (1, 64) if kind == "vae_mid_block" else (HEADS, HEAD_SIZE)
    assert attrs["num_heads"] == heads and attrs["scale"] == pytest.approx(size**-0.5, rel=1e-7)

    onnx.save(result.model, str(tmp_path / "fused.onnx"))
    session = ort.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"])
    dtype = np.float16 if precision == "fp16" else np.float32
    feeds = {name: x.astype(dtype) for name, x in zip(names, inputs, strict=True)}
    output = session.run(None, feeds)[0].astype(np.float64)
    rel = np.linalg.norm(output - reference) / np.linalg.norm(reference)
    assert rel <= TOLERANCE_REL_L2[precision], rel


def test_attention_outside_the_traced_form_is_left_as_it_is(tmp_path):
    """A mask between the scores and the softmax (CLIP's causal attention) is not SDPA's plain form: not fused."""

    class Masked(torch.nn.Module):
        def forward(self, q, k, v):
            scores = q @ k.transpose(-1, -2) * 0.125 + torch.triu(torch.full((8, 8), -1e4), 1)
            return scores.softmax(-1) @ v

    path = tmp_path / "masked.onnx"
    args = tuple(torch.randn(1, 2, 8, 64) for _ in range(3))
    torch.onnx.export(Masked(), args, str(path), opset_version=17, dynamo=False)
    result = fuse_attention(optimise(onnx.load(str(path))))
    assert (result.fused, result.left) == (0, 1)


def test_fusion_needs_no_inferred_shapes(tmp_path):
    """Past protobuf's 2 GB (an fp32 SD-1.5 UNet) the traced graph carries no inferred shapes:
    heads and head size must come from the graph's own Reshape targets."""
    inputs = [np.random.default_rng(1).standard_normal((2 * FRAMES, TOKENS, WIDTH)).astype(np.float32)]
    traced, _ = _export(SparseCausal(), inputs, "fp32", tmp_path / "traced.onnx")
    del traced.graph.value_info[:]
    result = fuse_attention(traced)
    assert (result.fused, result.left) == (1, 0)
