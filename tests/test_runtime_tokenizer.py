"""The torch-free tokenizer gives exactly transformers' CLIPTokenizer ids (padding to 77, truncation)."""

import logging

import numpy as np
import pytest
from transformers import CLIPTokenizer

from tav.runtime.tokenizer import ClipTokenizer

PROMPTS = [
    "",
    "a man is skiing",
    "Spider Man is skiing on the beach, cartoon style",
    "  A   RABBIT\tis eating\na watermelon!!  ",
    "an astronaut's café — naïve résumé 東京 🍉 1984 e=mc^2 <|endoftext|>",
    "word " * 75,  # exactly fills the 75 slots between bos and eos: no truncation
]


@pytest.fixture(scope="module")
def tokenizers_pair(tiny_sd):
    return ClipTokenizer(tiny_sd / "tokenizer"), CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")


def reference_ids(clip, prompts):
    return clip(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="np").input_ids


@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_ids_equal_clip_tokenizer(tokenizers_pair, prompt, caplog):
    ours, clip = tokenizers_pair
    with caplog.at_level(logging.WARNING, logger="tav.runtime"):
        ids = ours(prompt)
    assert ids.dtype == np.int64 and ids.shape == (1, 77)
    assert ids.tolist() == reference_ids(clip, [prompt]).tolist()
    assert not caplog.records


def test_empty_prompt_is_bos_eos_then_padding(tokenizers_pair):
    ids = tokenizers_pair[0]("")[0].tolist()
    assert ids == [49406] + [49407] * 76


def test_long_prompt_is_truncated_with_one_warning(tokenizers_pair, caplog):
    ours, clip = tokenizers_pair
    prompt = " ".join(f"frame{i % 10} skiing" for i in range(150))  # ~300 BPE tokens
    assert len(clip(prompt).input_ids) > 300
    with caplog.at_level(logging.WARNING, logger="tav.runtime"):
        ids = ours([prompt, "a man is skiing"])
    assert ids.tolist() == reference_ids(clip, [prompt, "a man is skiing"]).tolist()
    assert ids[0, -1] == 49407 and ids[0, 0] == 49406
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "truncated to 77" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
