"""``tav-tune``: tune Stable Diffusion 1.x on one clip and its caption (Tune-A-Video) into RUN_DIR.

Settings come from the defaults, then ``--config`` (an official Tune-A-Video YAML,
fields unchanged; its ``output_dir`` is used as RUN_DIR itself, without the
official timestamped subfolder), then the flags given explicitly.
"""

import argparse
import json
import warnings

from tav.runtime import flag_types as flags
from tav.runtime.command import CommandParser, UsageError, run_command
from tav.runtime.flag_types import MAX_FRAMES
from tav.runtime.sampling_limits import MAX_DDIM_STEPS, MAX_PROMPT_CHARS

from ..tuning.config import MAX_EVAL_PAIRS, PRECISIONS, TuneConfig, official_config_to_fields
from .flags import base_model, torch_device

PROG = "tav-tune"
REQUIRED = {"pretrained_model_path": "--pretrained", "video": "--video", "prompt": "--prompt", "out": "--out"}
MAX_STEPS = 1_000_000  # training steps: the official configs use 300-500


def build_parser() -> CommandParser:
    p = CommandParser(PROG, __doc__)
    a = p.add_argument
    a("--config", metavar="FILE.yaml", type=flags.existing_file("an official Tune-A-Video YAML config file"),
      help="official Tune-A-Video YAML config; explicit flags override it")
    a("--pretrained", dest="pretrained_model_path", metavar="SD_MODEL", type=base_model,
      help="Stable Diffusion 1.x base model: a diffusers folder, a .safetensors/.ckpt file, or a hub repo id ORG/NAME")
    a("--revision", dest="pretrained_model_revision", type=flags.text("a branch, tag or commit"),
      help="branch, tag or commit of a hub repo id (default main)")
    a("--video", metavar="CLIP", type=flags.existing_file_or_dir("a video file or a folder of images"),
      help="clip to tune on: mp4/webm/mov/gif or a folder of images")
    a("--prompt", type=flags.text("the clip's caption", MAX_PROMPT_CHARS),
      help="caption of the clip, e.g. 'a man is skiing'")
    a("--out", metavar="RUN_DIR", type=flags.out_path("the RUN_DIR to create", "folder"),
      help="RUN_DIR to create (built in RUN_DIR.partial/ and renamed when complete)")
    a("--frames", type=flags.positive_int(MAX_FRAMES), help="frames to tune on (default 8)")
    a("--stride", type=flags.positive_int(MAX_FRAMES), help="take every N-th frame (default 2)")
    a("--start", type=flags.non_negative_int(100 * MAX_FRAMES), help="first frame index (default 0)")
    a("--height", type=flags.multiple_of_8(), help="multiple of 8 (default 512)")
    a("--width", type=flags.multiple_of_8(), help="multiple of 8 (default 512)")
    a("--steps", type=flags.positive_int(MAX_STEPS), help="training steps (default 300)")
    a("--lr", type=flags.finite_float(0, 1, low_open=True), help="AdamW learning rate (default 3e-5)")
    a("--seed", type=flags.seed, help="seeds latents, noise, timesteps and new layers (default 0)")
    a("--precision", choices=PRECISIONS, help="default auto: bf16 on CUDA with bf16, else fp16 on CUDA, fp32 on CPU")
    a("--device", type=torch_device, help="auto (default), cpu, cuda, cuda:N")
    a("--gradient-checkpointing", action=argparse.BooleanOptionalAction, help="on by default")
    a("--checkpoint-every", type=flags.non_negative_int(MAX_STEPS),
      help="steps between resumable checkpoints (default 100; 0: only on Ctrl-C)")
    a("--resume", action="store_true", default=None, help="continue the interrupted run in RUN_DIR.partial/")
    a("--validate-every", type=flags.non_negative_int(MAX_STEPS),
      help="write samples of the prompt to RUN_DIR/validation/ every N steps (default off)")
    a("--inversion-steps", type=flags.positive_int(MAX_DDIM_STEPS),
      help="DDIM inversion steps for the inverted latents (default 50)")
    a("--eval-pairs", type=flags.non_negative_int(MAX_EVAL_PAIRS), metavar="N",
      help="UNet passes of the loss evaluation before and after tuning (default 8; 0: no evaluation, "
      "and run.json records no evaluation loss)")
    a("--quiet", action="store_true",
      help="no progress bars or stage lines on stderr; print only the summary and RUN_DIR")
    return p


def settings_from(args: argparse.Namespace) -> TuneConfig:
    values = {}
    if args.config:
        values = official_config_to_fields(args.config)
        import torch  # after parsing: --help answers without loading it

        if values.get("precision") == "fp16" and not torch.cuda.is_available():
            warnings.warn("the config asks for fp16, which needs a CUDA GPU; tuning in fp32 on the CPU", stacklevel=2)
            values["precision"] = "auto"
    explicit = {k: v for k, v in vars(args).items() if k not in ("config", "quiet") and v is not None}
    values.update(explicit)
    missing = [flag for key, flag in REQUIRED.items() if not values.get(key)]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (give the flags or a --config with them)")
    return TuneConfig(**values)


def run(args):
    cfg = settings_from(args)
    from ..tuning.tune import tune  # torch: after parsing, so --help is instant
    from .library_noise import quiet_loaded_libraries

    quiet_loaded_libraries()
    run_dir = tune(cfg, progress=not args.quiet)  # Ctrl-C/SIGTERM: TuneInterrupted, exit 130/143 with how to resume
    record = json.loads((run_dir / "run.json").read_text())
    print(summary(record))
    print(run_dir)


def summary(run: dict) -> str:
    gib = run["peak_memory_bytes"] / 2**30
    kind = "GPU max allocated" if run["peak_memory_kind"].startswith("cuda") else "process peak RSS"
    rate = f"{run['steps_per_s']:.2f} steps/s" if run["steps_per_s"] else "no new steps"
    return (
        f"{PROG}: {run['steps']} steps on {run['frames']} frames {run['width']}x{run['height']} "
        f"({run['resolved_device']}, {run['resolved_precision']}) in {run['wall_time_s']:.1f} s wall "
        f"(training {run['train_time_s']:.1f} s, {rate}; inversion {run['inversion_time_s']:.1f} s); "
        f"peak memory {gib:.2f} GiB ({kind}); eval loss {_eval_losses(run)}"
    )


def _eval_losses(run: dict) -> str:
    """"1.1152 -> 1.1042"; "not evaluated" (--eval-pairs 0); a "?" for the one a resume could not measure."""
    before, after = run.get("eval_loss_before"), run.get("eval_loss_after")
    if before is None and after is None:
        return "not evaluated (--eval-pairs 0)"
    return " -> ".join("?" if loss is None else f"{loss:.4f}" for loss in (before, after))


def main(argv=None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    main()
