"""Hub repo ids: fetch only the files an SD 1.x diffusers pipeline needs into the huggingface_hub cache.

The revision is resolved to a commit once (``resolve_revision``, which also records
``refs/<revision>`` in the cache), and everything after uses that commit, so a
branch that moves mid-download cannot mix two versions. Offline
(``HF_HUB_OFFLINE=1``) or without a network, the same calls read the cache:
``refs/`` gives the commit, ``snapshots/<commit>/`` the files.

Which files: each component's full-precision weights under their plain diffusers
name (safetensors when the repo has both formats, else ``.bin``, sharded or not),
its config, the tokenizer files, the scheduler config and ``model_index.json``.
Never EMA copies, ``.ckpt`` duplicates, fp16/flax/onnx/openvino variants or the
safety checker: an SD 1.5 repository holds about ten times what tuning reads.
"""

import re
from pathlib import Path

from huggingface_hub import HfApi, constants, get_cached_repo_tree, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    RevisionResolutionError,
)
from huggingface_hub.utils import validate_repo_id

# component -> weight file stems (diffusers models, then transformers' two names for the text encoder)
WEIGHT_STEMS = {
    "unet": ("diffusion_pytorch_model",),
    "vae": ("diffusion_pytorch_model",),
    "text_encoder": ("model", "pytorch_model"),
}
CONFIG_FILES = ("model_index.json", "scheduler/scheduler_config.json",
                "unet/config.json", "vae/config.json", "text_encoder/config.json")
# A second guard on top of the exact file list: nothing matching these is ever fetched.
IGNORE_PATTERNS = ["*.ckpt", "*ema*", "*.fp16.*", "*.msgpack", "*.onnx", "*.onnx_data", "*.xml", "*.pb"]


def is_repo_id(text: str) -> bool:
    """``ORG/NAME`` as the hub spells repo ids (bare legacy names like ``gpt2`` hold no SD models)."""
    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def fetch_from_hub(repo_id: str, revision: str | None = None) -> tuple[Path, str]:
    """The local snapshot folder of ``repo_id`` at ``revision`` (default: main) and its commit hash."""
    api = HfApi()
    requested = revision or constants.DEFAULT_REVISION
    offline = constants.is_offline_mode()  # then straight to the cache, without "could not reach the hub" noise
    try:
        resolved = api.resolve_revision(repo_id, revision=requested, local_files_only=offline)
        commit = resolved.resolved
        wanted = files_to_fetch(_repo_files(api, repo_id, commit))
        folder = Path(snapshot_download(repo_id, revision=resolved, allow_patterns=wanted,
                                        ignore_patterns=IGNORE_PATTERNS, local_files_only=offline))
    except (RepositoryNotFoundError, GatedRepoError):
        raise ValueError(f"hub repo {repo_id} was not found, or it is private or gated: check the id, "
                         "or log in with `hf auth login` and accept its licence on the hub") from None
    except RevisionNotFoundError:
        raise ValueError(f"hub repo {repo_id} has no revision {requested!r}; pass an existing branch, tag or commit "
                         "with --revision") from None
    except (RevisionResolutionError, LocalEntryNotFoundError):
        why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else "the hub cannot be reached"
        raise FileNotFoundError(
            f"{repo_id} is not a local path, and as a hub repo id it is not (completely) in the cache "
            f"{constants.HF_HUB_CACHE} at revision {requested!r} and {why}; "
            "download it once with a network, or fix the path") from None
    except ValueError as err:
        raise ValueError(f"hub repo {repo_id} at revision {requested!r} is {err}") from None
    try:  # offline without a cached listing nothing above could check the snapshot against the repository
        files_to_fetch(_files_in(folder))
    except ValueError as err:
        raise FileNotFoundError(f"the cached copy of {repo_id} at commit {commit[:12]} ({folder}) is incomplete: "
                                f"{str(err).split(': ', 1)[-1]}; download it again with a network") from None
    return folder, commit


def files_to_fetch(repo_files) -> list[str]:
    """The files of a diffusers SD 1.x repository that loading it needs, from the repository's file list.

    Raises ValueError naming what is missing when the repository is not an SD pipeline in diffusers layout.
    """
    files = set(repo_files)
    absent = [f for f in CONFIG_FILES if f not in files]
    tokenizer = sorted(f for f in files if f.startswith("tokenizer/"))
    if not tokenizer:
        absent.append("tokenizer/")
    wanted = [f for f in CONFIG_FILES if f in files] + tokenizer
    for component, stems in WEIGHT_STEMS.items():
        weights = _weights_of(component, stems, files)
        if weights:
            wanted += weights
        else:
            absent.append(f"{component}/{stems[0]}.safetensors (or .bin)")
    if absent:
        raise ValueError(f"not a Stable Diffusion pipeline in diffusers layout: it lacks {', '.join(absent)}")
    return wanted


def _weights_of(component: str, stems: tuple, files: set) -> list[str]:
    """Safetensors before .bin; one file, or an index and its shards (``<stem>-00001-of-00002.<ext>``)."""
    for ext in ("safetensors", "bin"):
        for stem in stems:
            single = f"{component}/{stem}.{ext}"
            if single in files:
                return [single]
            index = f"{single}.index.json"
            shard = re.compile(rf"{re.escape(component)}/{re.escape(stem)}-\d+-of-\d+\.{ext}")
            if index in files:
                return [index] + sorted(f for f in files if shard.fullmatch(f))
    return []


def _repo_files(api: HfApi, repo_id: str, commit: str) -> list[str]:
    """The repository's file list at ``commit``: the cached tree listing, else the hub, else the cached snapshot.

    A commit never changes, so its cached listing is as good as the hub's.
    """
    try:
        return [f.path for f in get_cached_repo_tree(repo_id, revision=commit)]
    except CachedRepoTreeNotFoundError:
        pass
    if not constants.is_offline_mode():
        try:
            return api.list_repo_files(repo_id, revision=commit)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise
        except Exception:  # the hub is unreachable: what the cache holds decides below
            pass
    return _files_in(_snapshot_folder(repo_id, commit))


def _snapshot_folder(repo_id: str, commit: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / commit


def _files_in(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise LocalEntryNotFoundError(f"no cached snapshot at {folder}")
    return [str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file()]
