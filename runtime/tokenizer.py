"""CLIP prompt -> 77 token ids with HF's Rust ``tokenizers`` (no transformers), as SD pipelines tokenize.

Equals transformers' ``CLIPTokenizer(prompt, padding="max_length", max_length=77, truncation=True)``:
``[bos] + the first 75 BPE ids + [eos]``, then pad ids up to 77. We encode without the
tokenizer.json post-processor and add the specials ourselves, so truncation keeps the
closing eos exactly as transformers does.
"""

import json
import logging
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

log = logging.getLogger("tav.runtime")

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


class ClipTokenizer:
    def __init__(self, folder, max_length: int = 77):
        folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = max_length
        self.bos_id = self._id(BOS)
        self.eos_id = self._id(EOS)
        # SD 1.x pads with eos (49407); SD 2.x's tokenizer pads with "!" (0). tokenizer_config.json says which.
        self.pad_id = self._id(_pad_token(folder) or EOS)

    def _id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the tokenizer has no {token!r} token; is this a CLIP tokenizer?")
        return token_id

    def __call__(self, prompts) -> np.ndarray:
        """int64 ``[len(prompts), max_length]``: bos, ids, eos, padding; warns when a prompt is truncated."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = []
        room = self.max_length - 2  # bos and eos
        for encoding in self.tokenizer.encode_batch(prompts, add_special_tokens=False):
            ids = encoding.ids
            if len(ids) > room:
                dropped = self.tokenizer.decode(ids[room:])
                log.warning("prompt truncated to %d CLIP tokens; dropped: %r", self.max_length, dropped)
                ids = ids[:room]
            row = [self.bos_id, *ids, self.eos_id]
            rows.append(row + [self.pad_id] * (self.max_length - len(row)))
        return np.asarray(rows, dtype=np.int64).reshape(len(prompts), self.max_length)


def _pad_token(folder: Path):
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    pad = json.loads(config_file.read_text()).get("pad_token")
    return pad.get("content") if isinstance(pad, dict) else pad
