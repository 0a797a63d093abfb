"""Validation samples while tuning (the official ``validation_steps``): the prompts sampled with the current weights.

tav-tune's ``--validate-every N`` writes them every N steps into ``RUN_DIR/validation/``, one gif per prompt.
"""

import re
from pathlib import Path

from tav.runtime.video_output import write_video

from ..model import sd_folder
from ..sampler import PipelineParts, sample
from ..tuned_weights import TunedModel
from .ddim_inversion import ddim_inversion
from .session import TuningSession


def write_validation_samples(s: TuningSession, sd_dir: Path, partial: Path, step: int):
    """Sample the validation prompts with the current weights into ``partial``/validation/."""
    cfg = s.cfg
    if s.parts is None:
        s.parts = PipelineParts.load(sd_dir, s.device)
    tuned = TunedModel(s.unet, sd_dir, cfg.frames, cfg.height, cfg.width, None, "", {})
    s.unet.eval()
    try:
        if cfg.validation_init == "inverted":
            tuned.inverted_latents = ddim_inversion(s.unet, s.latents, s.empty_text, sd_folder.load_ddim(sd_dir),
                                                    cfg.inversion_steps, s.autocast)
        for prompt in cfg.validation_prompts or [cfg.prompt]:
            result = sample(tuned, prompt, steps=cfg.validation_steps, guidance=cfg.validation_guidance, seed=cfg.seed,
                            init=cfg.validation_init, parts=s.parts, autocast=s.autocast)
            slug = re.sub(r"[^A-Za-z0-9]+", "-", prompt).strip("-")[:60] or "empty"
            (partial / "validation").mkdir(exist_ok=True)
            # overwrite: a resumed run re-validates the steps after its checkpoint
            write_video(result.frames, partial / "validation" / f"step-{step:06d}-{slug}.gif", overwrite=True)
    finally:
        s.unet.train()
