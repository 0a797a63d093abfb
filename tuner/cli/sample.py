"""``tav-sample``: generate a video from tuned weights with the PyTorch reference sampler.

``--weights`` takes a RUN_DIR from tav-tune or an official Tune-A-Video output folder.
``--out`` picks the format: .mp4, .gif, .npy (uint8 [F, H, W, 3]) or a folder of PNGs
(a path without suffix, or ending in /).
"""

import argparse
import time

from tav.runtime.help_format import DefaultsHelpFormatter
from tav.runtime.video_output import check_fps, check_output_path, write_video

from ..progress import Progress, counted
from .common import run_cli

PROG = "tav-sample"
INITS = ("inverted", "noise")  # the sampler's (tav.tuner.sampler.INITS), without importing torch for --help


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].replace("``", ""),
                                formatter_class=DefaultsHelpFormatter)
    a = p.add_argument
    a("--weights", required=True, metavar="RUN_DIR",
      help="RUN_DIR from tav-tune, or an official Tune-A-Video output folder")
    a("--pretrained", metavar="SD_MODEL", help="where the base model the weights were tuned on is now, if not where "
      "they name it: a diffusers folder, a .safetensors/.ckpt file or a hub repo id ORG/NAME")
    a("--revision", help="branch, tag or commit of a hub repo id given with --pretrained (default main)")
    a("--prompt", required=True, help="what the edited video shows, e.g. 'spider man is skiing on the beach'")
    a("--negative-prompt", default="", help="the unconditional text of classifier-free guidance (default empty)")
    a("--steps", type=int, default=50, help="DDIM steps (default 50)")
    a("--guidance", type=float, default=12.5,
      help="classifier-free guidance scale (default 12.5, as the official configs)")
    a("--seed", type=int, default=0, help="seeds the starting noise (--init noise) and the eta noise")
    a("--init", choices=INITS, default="inverted",
      help="start from the clip's DDIM-inverted latents (default) or noise")
    a("--eta", type=float, default=0.0, help="DDIM eta (default 0: deterministic)")
    a("--temporal-window", type=int, metavar="W",
      help="frames each frame's temporal attention sees, 1..F "
      "(default: the run's, recorded in run.json: the frame count it was tuned on; F is full attention)")
    a("--fps", type=float, default=8, help="frames per second of mp4/gif (default 8, as the official GIFs)")
    a("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    a("--out", required=True, metavar="PATH", help="output: .mp4, .gif, .npy, or a folder of PNGs")
    a("--overwrite", action="store_true", help="replace an existing --out file (or folder of PNG frames)")
    a("--allow-base-mismatch", action="store_true",
      help="sample even if the SD folder changed since tuning (its hash differs from run.json's); results will differ")
    a("--quiet", action="store_true", help="no progress bar or stage lines on stderr; print only the output path")
    return p


def main_args(argv=None):
    args = build_parser().parse_args(argv)
    check_output_path(args.out, args.overwrite)  # reject a bad --out before minutes of sampling
    check_fps(args.fps)
    if args.revision and not args.pretrained:
        raise ValueError("--revision needs --pretrained (the run's own base model is pinned in its run.json)")
    shown, start = Progress(PROG, not args.quiet), time.perf_counter()
    # torch and diffusers: imported after parsing, so --help answers at once
    from ..model.temporal_window import check_temporal_window
    from ..model_sources import resolve_base_model
    from ..sampler import sample
    from ..tuned_weights import load_tuned
    from ..tuning.session import resolve_device

    device = resolve_device(args.device)
    base_dir = resolve_base_model(args.pretrained, args.revision).path if args.pretrained else None
    tuned = load_tuned(args.weights, base_dir=base_dir, allow_base_mismatch=args.allow_base_mismatch)
    if args.init == "inverted" and tuned.inverted_latents is None:
        raise ValueError(f"{args.weights} has no inverted latents; pass --init noise, or re-run tav-tune to make them")
    if args.temporal_window is not None:
        tuned.unet.temporal_window = check_temporal_window(args.temporal_window, tuned.frames)
    tuned.unet.to(device).eval()
    # Said once loaded, not before: a bad RUN_DIR stays a single error line.
    shown.line(f"loaded the tuned model in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    with shown.bar(args.steps, "DDIM") as bar:
        result = sample(tuned, args.prompt, args.negative_prompt, args.steps, args.guidance, args.seed, args.init,
                        args.eta, callback=lambda *_: bar.update(1))
    shown.line(f"sampled {counted(args.steps, 'step')} and decoded in {time.perf_counter() - start:.1f} s")
    print(write_video(result.frames, args.out, fps=args.fps, overwrite=args.overwrite))


def main(argv=None):
    return run_cli(PROG, main_args, argv)


if __name__ == "__main__":
    main()
