"""``resolve_base_model``: what a user types for a base model -> a local SD 1.x diffusers folder and its provenance.

Three forms, told apart in this order:

1. an existing path: a folder in diffusers layout, or a ``.safetensors`` / ``.ckpt``
   single-file checkpoint (converted once into a cache keyed by its sha256);
2. anything else that reads as a path (``./x``, ``/x``, ``~/x``, ``a/b/c``, a checkpoint
   suffix) is a missing path: an error, never a hub lookup;
3. ``ORG/NAME``: a huggingface_hub repo id, fetched into (or read offline from) the hub cache.

So a local folder always wins over a repo id of the same spelling, and a typo in
a path is reported as a missing path rather than as an unknown repo.
"""

from dataclasses import dataclass
from pathlib import Path

from ..model.sd_folder import check_sd_folder
from .hub import fetch_from_hub, is_repo_id
from .model_kind import check_sd1_folder
from .single_file import convert_single_file
from .spec import reads_as_path

KINDS = ("folder", "hub", "single_file")


@dataclass(frozen=True)
class ResolvedModel:
    """A base model ready to load.

    ``path``: absolute local diffusers SD 1.x folder (``unet/``, ``vae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``), for ``sd_folder`` loaders and ``VideoUNet.from_pretrained_2d``.

    ``source``: JSON-ready provenance, recorded in run.json as ``pretrained_model_source``:
    ``{"kind": "folder", "spec", "path"}``,
    ``{"kind": "hub", "spec", "repo_id", "revision" (as requested, "main" when none), "commit"}``,
    ``{"kind": "single_file", "spec", "file" (absolute), "file_sha256", "architecture"}``.
    """

    path: Path
    source: dict


def resolve_base_model(spec, revision: str | None = None) -> ResolvedModel:
    """Resolve ``spec`` (a folder, a single-file checkpoint or a hub ``ORG/NAME``) to a local SD 1.x folder.

    ``revision`` (branch, tag or commit) applies to hub repo ids only. Offline
    (``HF_HUB_OFFLINE=1``) a repo id resolves from the hub cache (``HF_HUB_CACHE``).
    Bad input raises ValueError / FileNotFoundError with a one-line message.
    """
    text = str(spec).strip()
    if not text:
        raise ValueError("no base model given; pass a Stable Diffusion 1.x folder, checkpoint file or hub repo id")
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(f"--revision applies to hub repo ids, but {text} is a local path; drop --revision")
        if path.is_dir():
            folder = check_sd_folder(path).absolute()
            check_sd1_folder(folder, text)
            return ResolvedModel(folder, {"kind": "folder", "spec": text, "path": str(folder)})
        folder, digest, architecture = convert_single_file(path)
        return ResolvedModel(folder, {"kind": "single_file", "spec": text, "file": str(path.absolute()),
                                      "file_sha256": digest, "architecture": architecture})
    if reads_as_path(text):
        raise FileNotFoundError(f"{text} does not exist; pass an existing Stable Diffusion 1.x folder or "
                                ".safetensors/.ckpt file, or a hub repo id ORG/NAME")
    if is_repo_id(text):
        folder, commit = fetch_from_hub(text, revision)
        check_sd1_folder(folder, text)
        return ResolvedModel(folder, {"kind": "hub", "spec": text, "repo_id": text,
                                      "revision": revision or "main", "commit": commit})
    raise ValueError(f"{text!r} is neither an existing folder or checkpoint file nor a hub repo id (ORG/NAME); "
                     "pass a Stable Diffusion 1.x folder, a .safetensors/.ckpt file or e.g. "
                     "stable-diffusion-v1-5/stable-diffusion-v1-5")

