"""``tav-sample``: generate a video from tuned weights with the PyTorch reference sampler.

``--weights`` takes a RUN_DIR from tav-tune or an official Tune-A-Video output folder.
``--out`` picks the format: .mp4, .gif, .npy (uint8 [F, H, W, 3]) or a folder of PNGs
(a path without suffix, or ending in /).
"""

import time

from tav.runtime import flag_types as flags
from tav.runtime.command import CommandParser, UsageError, run_command
from tav.runtime.flag_types import MAX_FRAMES
from tav.runtime.sampling_limits import ETA_MAX, ETA_MIN, MAX_DDIM_STEPS, MAX_GUIDANCE, MAX_PROMPT_CHARS
from tav.runtime.video_output import MAX_FPS, MIN_FPS, check_output_path, write_video

from ..progress import Progress, counted
from .flags import base_model, torch_device

PROG = "tav-sample"
INITS = ("inverted", "noise")  # the sampler's (tav.tuner.sampler.INITS), without importing torch for --help


def build_parser() -> CommandParser:
    p = CommandParser(PROG, __doc__)
    a = p.add_argument
    a("--weights", required=True, metavar="RUN_DIR", type=flags.existing_dir("a RUN_DIR or an official output folder"),
      help="RUN_DIR from tav-tune, or an official Tune-A-Video output folder")
    a("--pretrained", metavar="SD_MODEL", type=base_model,
      help="where the base model the weights were tuned on is now, if not where "
      "they name it: a diffusers folder, a .safetensors/.ckpt file or a hub repo id ORG/NAME")
    a("--revision", type=flags.text("a branch, tag or commit"),
      help="branch, tag or commit of a hub repo id given with --pretrained (default main)")
    a("--prompt", required=True, type=flags.text("what the edited video shows", MAX_PROMPT_CHARS),
      help="what the edited video shows, e.g. 'spider man is skiing on the beach'")
    a("--negative-prompt", default="", help="the unconditional text of classifier-free guidance (default empty)")
    a("--steps", type=flags.positive_int(MAX_DDIM_STEPS), default=50, help="DDIM steps (default 50)")
    a("--guidance", type=flags.finite_float(0, MAX_GUIDANCE), default=12.5,
      help="classifier-free guidance scale (default 12.5, as the official configs)")
    a("--seed", type=flags.seed, default=0, help="seeds the starting noise (--init noise) and the eta noise")
    a("--init", choices=INITS, default="inverted",
      help="start from the clip's DDIM-inverted latents (default) or noise")
    a("--eta", type=flags.finite_float(ETA_MIN, ETA_MAX), default=0.0, help="DDIM eta (default 0: deterministic)")
    a("--temporal-window", type=flags.positive_int(MAX_FRAMES), metavar="W",
      help="frames each frame's temporal attention sees, 1..F "
      "(default: the run's, recorded in run.json: the frame count it was tuned on; F is full attention)")
    a("--fps", type=flags.finite_float(MIN_FPS, MAX_FPS), default=8,
      help="frames per second of mp4/gif (default 8, as the official GIFs)")
    a("--device", default="auto", type=torch_device, help="auto (default), cpu, cuda, cuda:N")
    a("--out", required=True, metavar="PATH", type=flags.out_path("a .mp4, .gif or .npy file or a folder"),
      help="output: .mp4, .gif, .npy, or a folder of PNGs")
    a("--overwrite", action="store_true", help="replace an existing --out file (or folder of PNG frames)")
    a("--allow-base-mismatch", action="store_true",
      help="sample even if the SD folder changed since tuning (its hash differs from run.json's); results will differ")
    a("--quiet", action="store_true", help="no progress bar or stage lines on stderr; print only the output path")
    return p


def run(args):
    if args.revision and not args.pretrained:
        raise UsageError("--revision needs --pretrained (the run's own base model is pinned in its run.json)")
    check_output_path(args.out, args.overwrite, "--out")  # reject a bad --out before minutes of sampling
    shown, start = Progress(PROG, not args.quiet), time.perf_counter()
    # torch and diffusers: imported after parsing, so --help answers at once
    from ..model.temporal_window import check_temporal_window
    from ..model_sources import resolve_base_model
    from ..sampler import sample
    from ..tuned_weights import load_tuned
    from ..tuning.session import resolve_device
    from .library_noise import quiet_loaded_libraries

    quiet_loaded_libraries()
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


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    main()
