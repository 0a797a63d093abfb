"""Writes a diffusers SD 1.x folder as ONE checkpoint in the original (CompVis/LDM) key layout, for tests.

Written from the two layouts' module structures, independently of diffusers'
converter (which goes the other way), so loading the file through diffusers
checks both: a wrong name or a misplaced block fails the load or the equality.

    UNet  ``model.diffusion_model.``: input_blocks / middle_block / output_blocks,
          block index = 1 + block * (layers + 1) + layer; ResNet parts in_layers/emb_layers/out_layers.
    VAE   ``first_stage_model.``: encoder.down.N / decoder.up.N (numbered from the bottom),
          attention q/k/v/proj_out as 1x1 convolutions.
    Text  ``cond_stage_model.transformer.`` + the transformers CLIPTextModel names.
"""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_ldm(state: dict, config: dict) -> dict:
    per_block = config["layers_per_block"] + 1  # LDM puts each down block's downsampler in its own slot
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for name, tensor in state.items():
        out["model.diffusion_model." + _unet_name(name, per_block, up_has_attention)] = tensor
    return out


def _unet_name(name: str, per_block: int, up_has_attention: list) -> str:
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    module, param = name.rsplit(".", 1)
    if module in fixed:
        return f"{fixed[module]}.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"input_blocks.{1 + block * per_block + layer}.{_part(kind, rest)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name):
        return f"input_blocks.{(int(m[1]) + 1) * per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", name):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", name):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
        block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"output_blocks.{block * per_block + layer}.{_part(kind, rest)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name):
        block = int(m[1])
        slot = 2 if up_has_attention[block] else 1  # after the ResNet, and after the attention if there is one
        return f"output_blocks.{block * per_block + per_block - 1}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet tensor {name}")


def _part(kind: str, rest: str) -> str:
    return f"0.{_resnet(rest)}" if kind == "resnets" else f"1.{rest}"  # the transformer's inner names are shared


def _resnet(rest: str) -> str:
    module, param = rest.rsplit(".", 1)
    return f"{RESNET[module]}.{param}"


def vae_to_ldm(state: dict, config: dict) -> dict:
    blocks = len(config["block_out_channels"])
    out = {}
    for name, tensor in state.items():
        ldm, is_attention_projection = _vae_name(name, blocks)
        if is_attention_projection and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out["first_stage_model." + ldm] = tensor
    return out


def _vae_name(name: str, blocks: int) -> tuple:
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", name):
        return f"{m[1]}.norm_out.{m[2]}", False
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3])}", False
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name):
        return f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3])}", False
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name):
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}", False
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", name):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_vae_resnet(m[3])}", False
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", name):
        return f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}", m[2] != "group_norm"
    if re.fullmatch(r"(encoder\.|decoder\.)?(conv_in|conv_out|quant_conv|post_quant_conv)\.(weight|bias)", name):
        return name, False
    raise KeyError(f"no LDM name for VAE tensor {name}")


def _vae_resnet(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut")


def text_encoder_to_ldm(state: dict) -> dict:
    # Real SD 1.x files use CLIPTextModel's module names (text_model.*); transformers 5 saves them without the prefix.
    out = {"cond_stage_model.transformer." + ("" if name.startswith("text_model.") else "text_model.") + name: tensor
           for name, tensor in state.items()}
    # SD 1.x checkpoints carry CLIP's position_ids buffer, which current transformers no longer saves.
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    return out


def ldm_state_dict(sd_dir) -> dict:
    """The whole pipeline of a diffusers SD 1.x folder (safetensors weights) under LDM names."""
    sd_dir = Path(sd_dir)

    def part(component, weights):
        config = json.loads((sd_dir / component / "config.json").read_text())
        return load_file(str(sd_dir / component / weights)), config

    unet, unet_config = part("unet", "diffusion_pytorch_model.safetensors")
    vae, vae_config = part("vae", "diffusion_pytorch_model.safetensors")
    text, _ = part("text_encoder", "model.safetensors")
    return {**unet_to_ldm(unet, unet_config), **vae_to_ldm(vae, vae_config), **text_encoder_to_ldm(text)}


def write_single_file(state: dict, path) -> Path:
    """As model sites ship them: .safetensors flat, .ckpt as a Lightning-style {"state_dict": ...} pickle."""
    path = Path(path)
    state = {k: v.contiguous() for k, v in state.items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 470000}, str(path))
    return path
