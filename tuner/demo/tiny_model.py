"""``tav-make-tiny``: a seeded, random, SD-1.x-architecture pipeline folder for tests, the demo and benchmarks.

Same layout and block types as Stable Diffusion 1.x (diffusers ``save_pretrained``), with the
channel widths of tav.tuner.model.sd1_architecture's sizes: "tiny" keeps the test suite in
minutes on two CPU cores.
The tokenizer is CLIP's real BPE tokenizer, so prompts tokenize as with real SD.
"""

import tempfile
from pathlib import Path

from tav.runtime import flag_types as flags
from tav.runtime.atomic_files import atomic_folder
from tav.runtime.command import CommandParser, run_command

from ..model.clip_tokenizer_files import write_clip_tokenizer_files
from ..model.sd1_architecture import SD1_SCHEDULE, SIZES, random_text_encoder, random_unet, random_vae


def make_tiny(out_dir, seed: int = 0, size: str = "tiny") -> Path:
    """Write a random pipeline folder of the given size atomically (temp folder, then rename)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty folder; choose a new folder")
    import torch  # after the checks: a bad folder is refused at once
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    with atomic_folder(out_dir) as staging:  # an empty out_dir is replaced by the rename; a non-empty one refused
        with tempfile.TemporaryDirectory() as vocab_dir:
            write_clip_tokenizer_files(Path(vocab_dir))
            tokenizer = CLIPTokenizer.from_pretrained(vocab_dir)
        torch.manual_seed(seed)
        pipe = StableDiffusionPipeline(
            vae=random_vae(SIZES[size]),
            text_encoder=random_text_encoder(SIZES[size]),
            tokenizer=tokenizer,
            unet=random_unet(SIZES[size]),
            scheduler=DDIMScheduler(**SD1_SCHEDULE),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(staging, safe_serialization=True)
    return out_dir


def build_parser() -> CommandParser:
    parser = CommandParser("tav-make-tiny", __doc__)
    parser.add_argument("out_dir", type=flags.folder_to_use("a new or empty folder"),
                        help="folder to create (must not exist or be empty)")
    parser.add_argument("--seed", type=flags.seed, default=0)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="tiny (tests), small (CPU bench), sd15")
    return parser


def run(args):
    print(make_tiny(args.out_dir, args.seed, args.size))


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    main()
