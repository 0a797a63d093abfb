"""The real CLIP BPE tokenizer files, built offline from the vocabulary PyPI packages ship.

OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (carried by clip-anytorch / open_clip_torch)
holds the BPE merges; CLIP's vocabulary is derived from them: the 256 byte
symbols, the same with ``</w>``, one token per merge, then the two special
tokens. Written as ``vocab.json`` + ``merges.txt`` they load with
``CLIPTokenizer.from_pretrained``.
"""

import gzip
import importlib.util
import json
from pathlib import Path

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges; the vocabulary is then 49408 tokens.
INSTALL_HINT = "pip install --no-deps clip-anytorch  (it ships CLIP's BPE vocabulary)"


def find_bpe_vocab() -> Path:
    # find_spec locates the packages without importing them (their __init__ needs torchvision).
    for package in ("clip", "open_clip"):
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(root) / VOCAB_FILE
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"CLIP's BPE vocabulary ({VOCAB_FILE}) was not found; {INSTALL_HINT}")


def _byte_symbols() -> list:
    """CLIP/GPT-2's reversible byte -> character table, in vocabulary order.

    Printable bytes stand for themselves; the other 68 map to chr(256 + n) in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    remapped = 256 - len(printable)
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(remapped)]


def write_clip_tokenizer_files(out_dir: Path) -> None:
    lines = gzip.open(find_bpe_vocab(), "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                        encoding="utf-8")
