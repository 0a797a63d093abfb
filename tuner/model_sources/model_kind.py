"""Is this Stable Diffusion 1.x? One-line refusals for what is not, from a checkpoint's keys or a folder's configs.

Tune-A-Video inflates an SD 1.x UNet (4 latent channels, epsilon prediction,
768-dim CLIP text context) and trains against its noise schedule; the other
models people keep beside SD 1.x files would load into nonsense or fail deep in
tuning, so each gets named here instead:

- SD 2.x: OpenCLIP text encoder, 1024-dim text context; 768-v models predict v.
- SDXL: a second text encoder (``conditioner.embedders``) and size/crop conditioning
  (``label_emb`` in LDM keys, ``add_embedding`` in diffusers keys).
- LoRA files: only low-rank ``lora_*`` deltas, no base weights.
- Inpainting models: a UNet with 9 input channels (latents + mask + masked image).
"""

from pathlib import Path

from tav.runtime.command import first_line
from tav.runtime.file_fields import FieldError
from tav.runtime.strict_json import read_json_file

UNET = "model.diffusion_model."
VAE = "first_stage_model."
TEXT = "cond_stage_model.transformer."
UNET_INPUT_CONV = UNET + "input_blocks.0.0.weight"
VAE_INPUT_CONV = VAE + "encoder.conv_in.weight"
# CLIPTextModel's names under TEXT; some older files lack the text_model. level.
TEXT_TOKEN_EMBEDDING = (TEXT + "text_model.embeddings.token_embedding.weight",
                        TEXT + "embeddings.token_embedding.weight")
SD1_HINT = "pass a Stable Diffusion 1.x model (SD 1.4/1.5 or a fine-tune of them)"
CONV = "a 4-D convolution weight [out, in, kh, kw]"
LINEAR = "a 2-D weight [out, in]"


def refuse(what: str, name) -> ValueError:
    return ValueError(f"{name} is {what}; Tune-A-Video here tunes Stable Diffusion 1.x only: {SD1_HINT}")


def check_sd1_checkpoint(shapes: dict, name) -> None:
    """``shapes``: key -> shape of an original-layout (CompVis/LDM) single-file checkpoint. Raises ValueError."""
    _check_ranks(shapes, name)
    keys = shapes.keys()
    if any(k.startswith("conditioner.embedders") or "label_emb" in k or "add_embedding" in k for k in keys):
        raise refuse("an SDXL checkpoint (conditioner.embedders / add_embedding keys)", name)
    if UNET_INPUT_CONV not in shapes and any("lora_" in k for k in keys):
        raise ValueError(f"{name} is a LoRA (only lora_ weights, no base model); tav-tune needs a full "
                         f"Stable Diffusion 1.x checkpoint: {SD1_HINT}")
    if "v_pred" in keys:  # the marker some trainers store in v-prediction checkpoints
        raise refuse("a v-prediction checkpoint", name)
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        raise refuse("a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder, 1024-dim text context)", name)
    context = [shape[-1] for key, shape in shapes.items() if key.startswith(UNET) and key.endswith("attn2.to_k.weight")]
    if 1024 in context:
        raise refuse("a Stable Diffusion 2.x checkpoint (1024-dim text context)", name)
    absent = [part for part, present in (
        ("UNet (model.diffusion_model.*)", UNET_INPUT_CONV in shapes),
        ("VAE (first_stage_model.*)", any(k.startswith(VAE) for k in keys)),
        ("CLIP text encoder (cond_stage_model.transformer.*)", any(k in shapes for k in TEXT_TOKEN_EMBEDDING)),
    ) if not present]
    if absent:
        raise ValueError(f"{name} is not recognisable as a Stable Diffusion 1.x checkpoint: it lacks the "
                         f"{', '.join(absent)}; {SD1_HINT} as one .safetensors/.ckpt file in the original layout")
    if VAE_INPUT_CONV not in shapes:
        raise FieldError(name, f"key {VAE_INPUT_CONV}", "missing", CONV, f"the VAE is incomplete; {SD1_HINT}")
    _check_input_channels(shapes[UNET_INPUT_CONV][1], name)


def _check_ranks(shapes: dict, name) -> None:
    """The keys whose shapes are read (widths, channels, text context) have the rank their layer gives them."""
    ranks = {UNET_INPUT_CONV: (4, CONV), VAE_INPUT_CONV: (4, CONV),
             **{key: (2, LINEAR) for key in TEXT_TOKEN_EMBEDDING}}
    ranks.update({key: (2, LINEAR) for key in shapes if key.startswith(UNET) and key.endswith("attn2.to_k.weight")})
    for key, (rank, form) in ranks.items():
        if key in shapes and len(shapes[key]) != rank:
            raise FieldError(name, f"key {key}", f"of shape {list(shapes[key])}", form,
                             f"a damaged or foreign checkpoint; {SD1_HINT}")


def check_sd1_folder(folder: Path, name) -> None:
    """The same refusals for a diffusers-layout folder, from its config files only. Raises ValueError."""
    index = _read_json(folder / "model_index.json")
    unet = _read_json(folder / "unet" / "config.json")
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    if "text_encoder_2" in index or unet.get("addition_embed_type"):
        raise refuse("an SDXL pipeline (text_encoder_2 / add_embedding)", name)
    if scheduler.get("prediction_type") == "v_prediction":
        raise refuse("a v-prediction model (scheduler prediction_type v_prediction, as SD 2.x 768-v)", name)
    if unet.get("cross_attention_dim") == 1024:
        raise refuse("a Stable Diffusion 2.x pipeline (1024-dim text context)", name)
    if "in_channels" in unet:
        _check_input_channels(unet["in_channels"], name)


def _check_input_channels(channels: int, name):
    if channels == 9:
        raise refuse("an inpainting model (its UNet takes 9 input channels: latents, mask, masked image)", name)
    if channels != 4:
        raise refuse(f"not a text-to-image model (its UNet takes {channels} input channels, SD 1.x takes 4)", name)


def _read_json(path: Path) -> dict:
    try:
        value = read_json_file(path, allow_nan=True) if path.is_file() else {}
    except (OSError, ValueError) as err:  # not JSON, nested past reason, unreadable
        raise ValueError(f"cannot read {path}: {first_line(err)}") from None
    if not isinstance(value, dict):
        raise ValueError(f"cannot read {path}: it holds a JSON {type(value).__name__}, not an object")
    return value
