"""The inflated video UNet of Tune-A-Video, built from diffusers' 2D SD UNet.

``VideoUNet`` *is* a ``UNet2DConditionModel`` (so every SD parameter keeps its
name) with three changes applied by ``inflate`` (see ``frames.py``): GroupNorm
pooled over frames in the ResNets and ``conv_norm_out``, sparse-causal attn1,
and temporal attention after each transformer block's feed-forward
(``...transformer_blocks.N.attn_temp`` / ``.norm_temp``, the official names).

Not re-entrant: one module instance runs one forward at a time, because the
frame count of the call lives in the shared ``FrameContext``.
"""

import json
from contextlib import nullcontext
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D

from .frame_layers import FrameContext, FramePooledGroupNorm, VideoTransformerBlock
from .unet_weights import describe_key_mismatch, find_unet_weights, read_state_dict

# Official checkpoints (diffusers 0.11 layout) name the 3D blocks; their weights are the 2D ones.
_BLOCK_TYPES_3D_TO_2D = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "DownBlock3D": "DownBlock2D",
    "CrossAttnUpBlock3D": "CrossAttnUpBlock2D",
    "UpBlock3D": "UpBlock2D",
    "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn",
}
TEMPORAL_KEY_MARKERS = (".attn_temp.", ".norm_temp.")
TRAINABLE_MODULE_SUFFIXES = ("attn1.to_q", "attn2.to_q", "attn_temp")


def is_temporal_key(key: str) -> bool:
    return any(marker in key for marker in TEMPORAL_KEY_MARKERS)


class VideoUNet(UNet2DConditionModel):
    """forward(sample [B, C, F, H, W], timestep, encoder_hidden_states [B, 77, D]) -> [B, C, F, H, W]."""

    def inflate(self, seed: int = 0) -> "VideoUNet":
        self.frame_context = FrameContext()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the fresh temporal layers are reproducible
            for module in list(self.modules()):
                if isinstance(module, ResnetBlock2D):
                    module.norm1 = FramePooledGroupNorm.replacing(module.norm1, self.frame_context)
                    module.norm2 = FramePooledGroupNorm.replacing(module.norm2, self.frame_context)
                elif isinstance(module, BasicTransformerBlock):
                    VideoTransformerBlock.inflate(module, self.frame_context)
        self.conv_norm_out = FramePooledGroupNorm.replacing(self.conv_norm_out, self.frame_context)
        return self

    @classmethod
    def from_config_2d(cls, config: dict, seed: int = 0, weights_follow: bool = False) -> "VideoUNet":
        """``weights_follow``: every SD parameter is about to be loaded (``load_weights(..., assign=True)``), so
        they are built on the meta device: no memory and no random init for values that are replaced anyway.
        The temporal layers are built for real either way, from their own seeded generator (``inflate``)."""
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        for key in ("down_block_types", "up_block_types"):
            config[key] = [_BLOCK_TYPES_3D_TO_2D.get(t, t) for t in config[key]]
        config["mid_block_type"] = _BLOCK_TYPES_3D_TO_2D.get(config.get("mid_block_type"), config.get("mid_block_type"))
        known = set(UNet2DConditionModel.extract_init_dict(config)[0])  # drop 0.11-only fields
        with torch.device("meta") if weights_follow else nullcontext():
            model = cls(**{k: v for k, v in config.items() if k in known})
        return model.inflate(seed)

    @classmethod
    def from_pretrained_2d(cls, path, seed: int = 0, dtype=torch.float32) -> "VideoUNet":
        """Build from an SD 1.x folder (or its ``unet/``), or an official Tune-A-Video ``unet/``.

        Temporal layers come from the checkpoint when it has them (official 3D
        checkpoints), else they are freshly initialised with ``seed``.
        """
        unet_dir = _unet_dir(Path(path))
        config = json.loads((unet_dir / "config.json").read_text())
        # One copy of the weights while loading (3.6 GB at SD-1.5 size), not a random model plus the file's.
        model = cls.from_config_2d(config, seed, weights_follow=True)
        state = read_state_dict(find_unet_weights(unet_dir))
        model.has_tuned_temporal = any(map(is_temporal_key, state))
        model.load_weights(state, where=str(unet_dir), require_temporal=model.has_tuned_temporal, assign=True)
        del state
        return model if dtype == torch.float32 else model.to(dtype)

    def load_weights(self, state: dict, where: str, require_temporal: bool = True, partial: bool = False,
                     assign: bool = False):
        """Load a state dict; any key mismatch raises one line naming the missing and unexpected keys.

        ``partial=True`` accepts a subset (tuned weights); the 2D keys are otherwise all required,
        the temporal ones only with ``require_temporal``. ``assign=True``: the model's tensors become the
        state's (float32), instead of copies of them; how a model built on the meta device gets its weights.
        """
        own = self.state_dict()
        unexpected = [k for k in state if k not in own]
        wrong_shape = [k for k in state if k in own and state[k].shape != own[k].shape]
        missing = [] if partial else [k for k in own if k not in state and (require_temporal or not is_temporal_key(k))]
        if unexpected or missing:
            raise ValueError(describe_key_mismatch(missing, unexpected, where))
        if wrong_shape:
            k = wrong_shape[0]
            raise ValueError(f"weights in {where}: {k} has shape {tuple(state[k].shape)}, "
                             f"the model expects {tuple(own[k].shape)}")
        if not assign:
            self.load_state_dict(state, strict=False)
            return
        # float32 like a freshly built model (a half-precision checkpoint is widened, as copy_ would).
        self.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                             strict=False, assign=True)
        unloaded = [name for name, tensor in self.state_dict(keep_vars=True).items() if tensor.is_meta]
        if unloaded:
            raise ValueError(describe_key_mismatch(unloaded, [], where))

    def forward(self, sample, timestep, encoder_hidden_states, return_dict: bool = True, **kwargs):
        if sample.ndim != 5:
            raise ValueError(f"sample must be [B, C, F, H, W], "
                             f"got a {sample.ndim}-D tensor of shape {tuple(sample.shape)}")
        b, c, f, h, w = sample.shape
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != b:
            raise ValueError(
                f"encoder_hidden_states must be [B={b}, tokens, dim], got {tuple(encoder_hidden_states.shape)}"
            )
        self.frame_context.num_frames = f
        frames = sample.transpose(1, 2).reshape(b * f, c, h, w)
        # The text and the timestep are the same for every frame of a clip.
        text = encoder_hidden_states[:, None].expand(-1, f, -1, -1).reshape(b * f, *encoder_hidden_states.shape[1:])
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.reshape(-1, 1).expand(b, f).reshape(b * f) if timestep.ndim else timestep
        out = super().forward(frames, timestep, text, **kwargs).sample
        out = out.reshape(b, f, c, h, w).transpose(1, 2)
        return _Output(out) if return_dict else (out,)

    @property
    def temporal_window(self):
        """Frames each frame's temporal attention sees (a band around it, tuner/model/temporal_window.py); None: all."""
        return self.frame_context.temporal_window

    @temporal_window.setter
    def temporal_window(self, window):
        self.frame_context.temporal_window = None if window is None else int(window)

    def trainable_parameter_names(self) -> list:
        """Parameters Tune-A-Video tunes: those of modules ending in attn1.to_q, attn2.to_q, attn_temp."""
        return [
            f"{module_name}.{param_name}"
            for module_name, module in self.named_modules()
            if module_name.endswith(TRAINABLE_MODULE_SUFFIXES)
            for param_name, _ in module.named_parameters()
        ]


class _Output:
    """Mimics diffusers' UNet output: ``.sample``."""

    def __init__(self, sample):
        self.sample = sample

    def __getitem__(self, i):
        return (self.sample,)[i]


def _unet_dir(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a Stable Diffusion 1.x folder (diffusers layout)")
    for candidate in (path / "unet", path):
        if (candidate / "config.json").is_file():
            find_unet_weights(candidate)  # raises a clear error if the weights are absent
            return candidate
    raise FileNotFoundError(f"{path} has no unet/config.json; pass a Stable Diffusion 1.x folder (diffusers layout)")
