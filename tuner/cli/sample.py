"""``tav-sample``: generate a video from tuned weights with the PyTorch reference sampler.

``--weights`` takes a RUN_DIR from tav-tune or an official Tune-A-Video output folder.
``--out`` picks the format: .mp4, .gif, .npy (uint8 [F, H, W, 3]) or a folder of PNGs
(a path without suffix, or ending in /).
"""

import argparse

from tav.runtime.video_output import check_fps, check_output_path, write_video
from tav.tuner.cli.common import run_cli
from tav.tuner.model.temporal_window import check_temporal_window
from tav.tuner.model.tuned_weights import load_tuned
from tav.tuner.model_sources import resolve_base_model
from tav.tuner.sampler import INITS, sample
from tav.tuner.tuning.session import resolve_device

PROG = "tav-sample"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].replace("``", ""))
    a = p.add_argument
    a("--weights", required=True, metavar="RUN_DIR", help="RUN_DIR from tav-tune, or an official Tune-A-Video output folder")
    a("--pretrained", metavar="SD_MODEL", help="where the base model the weights were tuned on is now, if not where "
      "they name it: a diffusers folder, a .safetensors/.ckpt file or a hub repo id ORG/NAME")
    a("--revision", help="branch, tag or commit of a hub repo id given with --pretrained (default main)")
    a("--prompt", required=True, help="what the edited video shows, e.g. 'spider man is skiing on the beach'")
    a("--negative-prompt", default="", help="the unconditional text of classifier-free guidance (default empty)")
    a("--steps", type=int, default=50, help="DDIM steps (default 50)")
    a("--guidance", type=float, default=12.5, help="classifier-free guidance scale (default 12.5, as the official configs)")
    a("--seed", type=int, default=0, help="seeds the starting noise (--init noise) and the eta noise")
    a("--init", choices=INITS, default="inverted", help="start from the clip's DDIM-inverted latents (default) or noise")
    a("--eta", type=float, default=0.0, help="DDIM eta (default 0: deterministic)")
    a("--temporal-window", type=int, metavar="W", help="frames each frame's temporal attention sees, 1..F (default: the "
      "run's, recorded in run.json: the frame count it was tuned on; F is full attention)")
    a("--fps", type=float, default=8, help="frames per second of mp4/gif (default 8, as the official GIFs)")
    a("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    a("--out", required=True, metavar="PATH", help="output: .mp4, .gif, .npy, or a folder of PNGs")
    a("--overwrite", action="store_true", help="replace an existing --out file (or folder of PNG frames)")
    a("--allow-base-mismatch", action="store_true",
      help="sample even if the SD folder changed since tuning (its hash differs from run.json's); results will differ")
    return p


def main_args(argv=None):
    args = build_parser().parse_args(argv)
    check_output_path(args.out, args.overwrite)  # reject a bad --out before minutes of sampling
    check_fps(args.fps)
    if args.revision and not args.pretrained:
        raise ValueError("--revision needs --pretrained (the run's own base model is pinned in its run.json)")
    device = resolve_device(args.device)
    base_dir = resolve_base_model(args.pretrained, args.revision).path if args.pretrained else None
    tuned = load_tuned(args.weights, base_dir=base_dir, allow_base_mismatch=args.allow_base_mismatch)
    if args.init == "inverted" and tuned.inverted_latents is None:
        raise ValueError(f"{args.weights} has no inverted latents; pass --init noise, or re-run tav-tune to make them")
    if args.temporal_window is not None:
        tuned.unet.temporal_window = check_temporal_window(args.temporal_window, tuned.frames)
    tuned.unet.to(device).eval()
    result = sample(tuned, args.prompt, args.negative_prompt, args.steps, args.guidance, args.seed, args.init, args.eta)
    print(write_video(result.frames, args.out, fps=args.fps, overwrite=args.overwrite))


def main(argv=None):
    return run_cli(PROG, main_args, argv)


if __name__ == "__main__":
    main()
