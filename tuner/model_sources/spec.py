"""How a base-model spec reads before anything loads: a path (to check now) or a hub repo id.

Standard library only, so a command's parser can check ``--pretrained``/``--base`` without torch.
"""

SUFFIXES = (".safetensors", ".ckpt")  # single-file checkpoints


def reads_as_path(text: str) -> bool:
    """``./x``, ``/x``, ``~/x``, ``a/b/c`` or a checkpoint suffix: a path (a missing one is an error, never a hub
    lookup); ``ORG/NAME`` is not."""
    return (text.startswith(("/", ".", "~")) or "\\" in text or text.endswith("/") or text.count("/") > 1
            or text.lower().endswith(SUFFIXES))
