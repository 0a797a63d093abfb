"""Windowed temporal attention: the band, against a direct per-frame computation; full attention unchanged;
the fused graph.

The direct reference attends frame i's query only to the keys/values of its window frames (a slice,
no mask), which is what the band bias must reproduce. Tolerances: fp32 1e-6 absolute (only the
softmax's summation order differs: masked scores add exactly 0), and the exporter's parity
tolerances for the ONNX Runtime graphs (fp32 rel L2 1e-4, fp16 1e-2; export/parity.py).
"""

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock

from tav.export.attention_fusion import MHA_DOMAIN, MHA_OP, fuse_attention
from tav.export.onnx_hygiene import optimise
from tav.export.parity import TOLERANCE_REL_L2
from tav.tuner.model.frame_layers import FrameContext, VideoTransformerBlock, windowed_attention
from tav.tuner.model.temporal_window import MASKED, band_bias, check_temporal_window, window_starts

HEADS, HEAD_SIZE, TOKENS = 2, 8, 5
WIDTH = HEADS * HEAD_SIZE


def _block(frames: int, window=None) -> VideoTransformerBlock:
    torch.manual_seed(0)
    context = FrameContext()
    context.num_frames, context.temporal_window = frames, window
    block = VideoTransformerBlock.inflate(BasicTransformerBlock(WIDTH, HEADS, HEAD_SIZE, cross_attention_dim=WIDTH),
                                          context)
    # Zero at init: give the attention something to show.
    torch.nn.init.normal_(block.attn_temp.to_out[0].weight, std=0.2)
    return block.eval()


def _direct(attn, x, frames: int, window: int) -> torch.Tensor:
    """Frame by frame: frame i's query against the keys/values of frames [s_i, s_i + W) only, no mask."""
    batch = x.shape[0]

    def heads(t):
        return t.reshape(batch, -1, HEADS, HEAD_SIZE).transpose(1, 2)

    q, k, v = heads(attn.to_q(x)), heads(attn.to_k(x)), heads(attn.to_v(x))
    rows = []
    for i, start in enumerate(window_starts(frames, window)):
        assert start <= i < start + window and 0 <= start and start + window <= frames
        band = slice(start, start + window)
        rows.append(F.scaled_dot_product_attention(q[:, :, i : i + 1], k[:, :, band], v[:, :, band]))
    out = torch.cat(rows, dim=2).transpose(1, 2).reshape(batch, frames, WIDTH)
    return attn.to_out[1](attn.to_out[0](out))


@pytest.mark.parametrize("frames, window, starts", [
    (7, 3, [0, 0, 1, 2, 3, 4, 4]),  # odd: one frame either side, shifted inwards at both ends
    (7, 4, [0, 0, 0, 1, 2, 3, 3]),  # even: two before, one after
    (5, 1, [0, 1, 2, 3, 4]),  # each frame alone
    (4, 4, [0, 0, 0, 0]),  # W = N: everything
])
def test_each_frame_sees_exactly_w_frames_around_it(frames, window, starts):
    assert window_starts(frames, window) == starts
    bias = band_bias(frames, window)
    if window == frames:
        assert bias is None  # full attention: no bias at all
        return
    assert bias.shape == (1, 1, frames, frames)
    inside = bias[0, 0] == 0
    assert inside.sum(1).tolist() == [window] * frames and inside.diagonal().all()
    assert set(bias.unique().tolist()) == {0.0, MASKED}


@pytest.mark.parametrize("frames, window", [(7, 3), (7, 4), (8, 2), (8, 5), (6, 1)])
def test_band_bias_equals_direct_windowed_attention_at_every_frame(frames, window):
    attn = _block(frames).attn_temp
    x = torch.randn(2 * TOKENS, frames, WIDTH)
    with torch.no_grad():
        got = windowed_attention(attn, x, band_bias(frames, window))
        want = _direct(attn, x, frames, window)
    # First and last frames are where the window shifts inwards; check them by name as well as all frames.
    for i in (0, 1, frames - 2, frames - 1):
        torch.testing.assert_close(got[:, i], want[:, i], atol=1e-6, rtol=0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_window_of_all_frames_is_todays_full_attention_bit_for_bit():
    frames = 5
    x = torch.randn(2 * frames, TOKENS, WIDTH)  # [(B F), tokens, C], as the UNet calls the block
    with torch.no_grad():
        full = _block(frames, None)(x)
        for window in (frames, frames + 3):
            assert torch.equal(_block(frames, window)(x), full)
        windowed = _block(frames, 2)(x)
    assert not torch.allclose(windowed, full, atol=1e-4)  # a real window changes the result


@pytest.mark.parametrize("bad", [0, -1, 9, 2.5, True, "4"])
def test_a_window_outside_1_to_n_is_refused_in_one_line(bad):
    refusal = r"^--temporal-window .* must be an integer from 1 to the frame count 8"
    with pytest.raises(ValueError, match=refusal) as err:
        check_temporal_window(bad, 8)
    assert "\n" not in str(err.value)


class _Temporal(torch.nn.Module):
    def __init__(self, frames, window):
        super().__init__()
        self.attn, self.frames, self.window = _block(frames).attn_temp, frames, window

    def forward(self, x):  # [(B tokens), F, C]: the temporal attention of one block, windowed
        return windowed_attention(self.attn, x, band_bias(self.frames, self.window, x.dtype, x.device))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the band is a constant by design
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("window", [2, 3])
def test_band_becomes_the_attention_bias_of_one_fused_node(window, precision, tmp_path):
    frames = 6
    x = np.random.default_rng(1).standard_normal((2 * TOKENS, frames, WIDTH)).astype(np.float32)
    if precision == "fp16":
        x = x.astype(np.float16).astype(np.float32)  # the error is the graph's, not the rounding's
    with torch.no_grad():
        want = _Temporal(frames, window)(torch.from_numpy(x)).numpy().astype(np.float64)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    path = tmp_path / "temporal.onnx"
    with torch.no_grad():
        torch.onnx.export(_Temporal(frames, window).to(dtype), (torch.from_numpy(x).to(dtype),), str(path),
                          input_names=["x"], output_names=["out"], opset_version=17, dynamo=False)
    traced = optimise(onnx.load(str(path)), precision)
    standard = ort.InferenceSession(traced.SerializeToString(), providers=["CPUExecutionProvider"])  # TensorRT's twin
    result = fuse_attention(traced)
    assert (result.fused, result.left) == (1, 0)
    node = next(n for n in result.model.graph.node if (n.domain, n.op_type) == (MHA_DOMAIN, MHA_OP))
    assert list(node.input[3:5]) == ["", ""] and node.input[5]  # attention_bias, nothing else optional
    bias = next(onnx.numpy_helper.to_array(t) for t in result.model.graph.initializer if t.name == node.input[5])
    assert bias.shape == (1, 1, frames, frames) and bias.dtype == (np.float16 if precision == "fp16" else np.float32)
    np.testing.assert_array_equal(bias, band_bias(frames, window).numpy())
    fused = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"x": x.astype(np.float16 if precision == "fp16" else np.float32)}
    for session in (fused, standard):
        got = session.run(None, feed)[0].astype(np.float64)
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert rel <= TOLERANCE_REL_L2[precision], rel


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_tensorrt_rtx_builds_the_standard_op_twin_with_the_band(tmp_path):
    """The TensorRT twin is standard ops (an Add of the band before the Softmax): tensorrt-rtx parses and builds it."""
    pytest.importorskip("tensorrt_rtx")
    paths = []
    for dtype in (torch.float32, torch.float16):
        path = tmp_path / f"temporal_{str(dtype)[6:]}.onnx"
        with torch.no_grad():
            torch.onnx.export(_Temporal(6, 3).to(dtype), (torch.randn(2 * TOKENS, 6, WIDTH, dtype=dtype),), str(path),
                              input_names=["x"], output_names=["out"], opset_version=17, dynamo=False)
        onnx.save(optimise(onnx.load(str(path)), "fp16" if dtype == torch.float16 else "fp32"), str(path))
        paths.append(str(path))
    # A subprocess: a TensorRT failure inside the parser can abort the whole process.
    script = textwrap.dedent("""
        import sys
        import tensorrt_rtx as trt
        logger = trt.Logger(trt.Logger.WARNING)
        for path in sys.argv[1:]:
            builder = trt.Builder(logger)
            network = builder.create_network(0)
            parser = trt.OnnxParser(network, logger)
            assert parser.parse(open(path, "rb").read()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
            plan = builder.build_serialized_network(network, builder.create_builder_config())
            assert plan is not None and plan.nbytes > 0
            print(tuple(network.get_output(0).shape))
    """)
    done = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [str((2 * TOKENS, 6, WIDTH))] * 2
