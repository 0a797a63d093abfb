"""``tav-tune``: tune Stable Diffusion 1.x on one clip and its caption (Tune-A-Video) into RUN_DIR.

Settings come from the defaults, then ``--config`` (an official Tune-A-Video YAML,
fields unchanged; its ``output_dir`` is used as RUN_DIR itself, without the
official timestamped subfolder), then the flags given explicitly.
"""

import argparse
import json
import warnings

from tav.runtime.help_format import DefaultsHelpFormatter

from ..tuning.config import PRECISIONS, TuneConfig, official_config_to_fields
from .common import fail, run_cli

PROG = "tav-tune"
REQUIRED = {"pretrained_model_path": "--pretrained", "video": "--video", "prompt": "--prompt", "out": "--out"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0].replace("``", ""),
                                formatter_class=DefaultsHelpFormatter)
    a = p.add_argument
    a("--config", metavar="FILE.yaml", help="official Tune-A-Video YAML config; explicit flags override it")
    a("--pretrained", dest="pretrained_model_path", metavar="SD_MODEL",
      help="Stable Diffusion 1.x base model: a diffusers folder, a .safetensors/.ckpt file, or a hub repo id ORG/NAME")
    a("--revision", dest="pretrained_model_revision", help="branch, tag or commit of a hub repo id (default main)")
    a("--video", metavar="CLIP", help="clip to tune on: mp4/webm/mov/gif or a folder of images")
    a("--prompt", help="caption of the clip, e.g. 'a man is skiing'")
    a("--out", metavar="RUN_DIR", help="RUN_DIR to create (built in RUN_DIR.partial/ and renamed when complete)")
    a("--frames", type=int, help="frames to tune on (default 8)")
    a("--stride", type=int, help="take every N-th frame (default 2)")
    a("--start", type=int, help="first frame index (default 0)")
    a("--height", type=int, help="multiple of 8 (default 512)")
    a("--width", type=int, help="multiple of 8 (default 512)")
    a("--steps", type=int, help="training steps (default 300)")
    a("--lr", type=float, help="AdamW learning rate (default 3e-5)")
    a("--seed", type=int, help="seeds latents, noise, timesteps and new layers (default 0)")
    a("--precision", choices=PRECISIONS, help="default auto: bf16 on CUDA with bf16, else fp16 on CUDA, fp32 on CPU")
    a("--device", help="auto (default), cpu, cuda, cuda:N")
    a("--gradient-checkpointing", action=argparse.BooleanOptionalAction, help="on by default")
    a("--checkpoint-every", type=int, help="steps between resumable checkpoints (default 100; 0: only on Ctrl-C)")
    a("--resume", action="store_true", default=None, help="continue the interrupted run in RUN_DIR.partial/")
    a("--validate-every", type=int,
      help="write samples of the prompt to RUN_DIR/validation/ every N steps (default off)")
    a("--inversion-steps", type=int, help="DDIM inversion steps for the inverted latents (default 50)")
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
        raise ValueError(f"missing {', '.join(missing)} (give the flags or a --config with them)")
    return TuneConfig(**values)


def main_args(argv=None):
    args = build_parser().parse_args(argv)
    cfg = settings_from(args)
    from ..tuning.tune import TuneInterrupted, tune  # torch: after parsing, so --help is instant

    try:
        run_dir = tune(cfg, progress=not args.quiet)
    except TuneInterrupted as err:
        fail(PROG, str(err), 130)
    run = json.loads((run_dir / "run.json").read_text())
    print(summary(run))
    print(run_dir)


def summary(run: dict) -> str:
    gib = run["peak_memory_bytes"] / 2**30
    kind = "GPU max allocated" if run["peak_memory_kind"].startswith("cuda") else "process peak RSS"
    rate = f"{run['steps_per_s']:.2f} steps/s" if run["steps_per_s"] else "no new steps"
    return (
        f"{PROG}: {run['steps']} steps on {run['frames']} frames {run['width']}x{run['height']} "
        f"({run['resolved_device']}, {run['resolved_precision']}) in {run['wall_time_s']:.1f} s wall "
        f"(training {run['train_time_s']:.1f} s, {rate}; inversion {run['inversion_time_s']:.1f} s); "
        f"peak memory {gib:.2f} GiB ({kind}); eval loss {run['eval_loss_before']:.4f} -> {run['eval_loss_after']:.4f}"
    )


def main(argv=None):
    return run_cli(PROG, main_args, argv)


if __name__ == "__main__":
    main()
