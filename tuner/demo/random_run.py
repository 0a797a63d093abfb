"""A RUN_DIR as tav-tune writes it (docs/CONTRACTS.md), built without tuning: for tests and benchmarks.

The tuned tensors are the trainable ones of the video UNet, perturbed, so an exporter that
ignored tuned.safetensors would fail parity against load_tuned; the inverted latents are
seeded noise. Exporting and sampling it does exactly the work of a real run at that size,
which is what the benchmark times at sizes where tuning on a CPU would take hours.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model.sd_folder import folder_hash
from ..model.video_unet import VideoUNet


def make_random_run(sd_dir, run_dir, frames: int, height: int, width: int, seed: int = 0, inverted: bool = True,
                    temporal_window: int | None = None) -> Path:
    """``temporal_window``: record it as a run tuned on that many frames and inverted at ``frames`` would
    (tav-invert)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    unet = VideoUNet.from_pretrained_2d(sd_dir, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    state = unet.state_dict()
    tuned = {
        name: (state[name] + 0.05 * torch.randn(state[name].shape, generator=generator)).contiguous()
        for name in unet.trainable_parameter_names()
    }
    save_file(tuned, str(run_dir / "tuned.safetensors"))
    if inverted:
        latents = torch.randn((1, 4, frames, height // 8, width // 8), generator=generator)
        save_file({"latents": latents}, str(run_dir / "inverted_latents.safetensors"))
    run = {"pretrained_model_path": str(Path(sd_dir).absolute()), "pretrained_model_hash": folder_hash(sd_dir),
           "frames": frames, "height": height, "width": width, "seed": seed}
    if temporal_window is not None:
        run.update(tuned_frames=temporal_window, temporal_window=temporal_window)
    (run_dir / "run.json").write_text(json.dumps(run, indent=2))
    return run_dir
