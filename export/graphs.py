"""The three graphs of an ENGINE_DIR: torch wrappers with the exact I/O of docs/CONTRACTS.md, and their specs.

Each wrapper takes and returns plain tensors in contract order, so the traced
ONNX graph has exactly the contract's inputs and outputs and nothing else
(no pooled text output, no VAE posterior, no return_dict objects).
"""

from dataclasses import dataclass

import numpy as np
import torch

from tav.runtime.manifest_schema import TensorSpec  # the manifest's own type: graphs declare their I/O with it

from .feed_forward_chunks import chunk_feed_forwards

BATCH = 2  # the CFG batch: [uncond; cond]
TEXT_MAX_LENGTH = 77
LATENT_CHANNELS = 4
VAE_FACTOR = 8  # SD's VAE down-samples 8x
# The VAE decoder's static batch: the runtime decodes F frames in chunks of this many (the last one padded).
# Each frame decodes on its own, so chunks give the same frames; what they bound is the decoder's activations
# (at 32 frames 256x256, ~1 GB a tensor in one run). Measured (docs/PERF.md "Long videos"): decode time per
# frame at 32 frames went from 1.47-1.50x that at 8 frames to 0.86-1.11x, and the peak fell. 8 is the tuned
# clip's default length. Larger frame sizes get fewer frames a chunk, at most the pixels of 8 at 256x256: at
# 512x512 an 8-frame SD-1.5 decoder's fp16 trace peaked at 10.1 GiB (2026-12-02).
DECODE_BATCH = 8
DECODE_PIXELS = DECODE_BATCH * 256 * 256


@dataclass
class GraphSpec:
    name: str  # also the file stem: unet.onnx, unet.plan
    module: torch.nn.Module  # fp32 wrapper, the parity reference
    inputs: list
    outputs: list
    attention_layers: int  # each must show up as MatMul-Softmax-MatMul in the graph
    vocab_size: int = 0  # range of the int64 token ids fed to check it
    # ONNX Runtime's graph must have every attention as one MultiHeadAttention node (export/attention_fusion.py).
    # Not the text encoder: 77 tokens with CLIP's causal mask, where fusing saves next to nothing.
    fused_attention: bool = False
    # Inputs whose first axis is the CFG batch [uncond; cond]: the reference may run one half at a time.
    batched_inputs: tuple = ()

    def seeded_inputs(self, seed: int = 0) -> dict:
        """float32 / int64 numpy inputs for tracing and parity; fp16 graphs get them rounded."""
        rng = np.random.default_rng(seed)
        feeds = {}
        for spec in self.inputs:
            if spec.dtype == "int64":
                feeds[spec.name] = rng.integers(0, self.vocab_size, spec.shape, dtype=np.int64)
            elif spec.name == "timestep":
                feeds[spec.name] = np.array([rng.integers(1, 1000)], dtype=np.float32)
            else:
                feeds[spec.name] = rng.standard_normal(spec.shape, dtype=np.float32)
        return feeds


class UNetGraph(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]


class TextEncoderGraph(torch.nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        # Eager attention, not SDPA: the TorchScript exporter turns SDPA with CLIP's causal mask into
        # a mix of float32 and float16 tensors at fp16 (an invalid graph). Eager is the same maths,
        # with the softmax in float32 as CLIP computes it.
        text_encoder.set_attn_implementation("eager")
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids=input_ids).last_hidden_state


class VaeDecoderGraph(torch.nn.Module):
    """vae.decode of latents already divided by the scaling factor: post_quant_conv + decoder."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents).sample


def decode_batch(frames: int, height: int, width: int) -> int:
    """The VAE decoder graph's batch for an F-frame ENGINE_DIR (manifest "decode_batch").

    At most DECODE_BATCH frames and DECODE_PIXELS pixels a chunk, and as few chunks as that allows, evened
    out so the last one pads the fewest frames: 8 frames at 256x320 (6 fit) decode as 4 + 4, not 6 + 6.
    """
    most = max(1, min(frames, DECODE_BATCH, DECODE_PIXELS // (height * width)))
    chunks = -(-frames // most)
    return -(-frames // chunks)


def count_attention_layers(module: torch.nn.Module) -> int:
    # diffusers' Attention (attn1/attn2/attn_temp, the VAE mid-block) and CLIP's self-attention.
    return sum(type(m).__name__ in ("Attention", "CLIPAttention") for m in module.modules())


def graph_spec(name: str, model, frames: int, height: int, width: int, precision: str, text_dim: int,
               vocab_size: int) -> GraphSpec:
    """The spec of one graph ("text_encoder", "unet", "vae_decoder") at static shapes, float I/O in the
    export precision; ``model`` is the CLIP text model, the video UNet or the VAE.

    One at a time, so the exporter holds only the model it is tracing. The UNet's timestep stays
    float32 at fp16: values up to 999 are exact either way, and the sinusoidal embedding is computed
    in float32 inside the graph, as diffusers does.
    """
    fp = "float16" if precision == "fp16" else "float32"
    h, w = height // VAE_FACTOR, width // VAE_FACTOR
    latents = (BATCH, LATENT_CHANNELS, frames, h, w)
    if name == "text_encoder":
        module, attention = TextEncoderGraph(model), model
        io = ([TensorSpec("input_ids", (BATCH, TEXT_MAX_LENGTH), "int64")],
              [TensorSpec("last_hidden_state", (BATCH, TEXT_MAX_LENGTH, text_dim), fp)])
    elif name == "unet":
        module, attention = UNetGraph(model), model
        chunk_feed_forwards(model, frames, BATCH, h, w)  # a no-op where they fit whole, as at 8 frames 256x256
        io = ([TensorSpec("sample", latents, fp), TensorSpec("timestep", (1,), "float32"),
               TensorSpec("encoder_hidden_states", (BATCH, TEXT_MAX_LENGTH, text_dim), fp)],
              [TensorSpec("noise_pred", latents, fp)])
    elif name == "vae_decoder":
        # The VAE's encoder has attention too, but it is not part of the decoder graph.
        module, attention = VaeDecoderGraph(model), model.decoder
        chunk = decode_batch(frames, height, width)
        io = ([TensorSpec("latents", (chunk, LATENT_CHANNELS, h, w), fp)],
              [TensorSpec("images", (chunk, 3, height, width), fp)])
    else:
        raise ValueError(f"unknown graph {name!r}")
    batched = {"text_encoder": ("input_ids",), "unet": ("sample", "encoder_hidden_states")}.get(name, ())
    return GraphSpec(name, module.eval(), *io, count_attention_layers(attention), vocab_size,
                     fused_attention=name != "text_encoder", batched_inputs=batched)
