"""Prompt -> CLIP text embedding, as docs/CONTRACTS.md fixes it for tuning, inversion and sampling."""

import warnings

import torch

MAX_LENGTH = 77  # CLIP's context; SD 1.x was trained on embeddings of exactly this length


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: list) -> torch.Tensor:
    """[len(prompts), 77, D] last_hidden_state; pads to 77 tokens, truncates longer prompts with a warning."""
    for prompt in prompts:
        length = len(tokenizer(prompt).input_ids)
        if length > MAX_LENGTH:
            warnings.warn(f"prompt {prompt[:40]!r}... has {length} tokens; CLIP reads only the first {MAX_LENGTH}",
                          stacklevel=2)
    ids = tokenizer(prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                    return_tensors="pt").input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device)).last_hidden_state.float()
