"""One UNet step at the CFG batch, per backend: a callable to time and its output to check.

Every backend gets the same seeded inputs; accuracy is measured against the
PyTorch model in fp32 on the same device.
"""

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class StepInputs:
    sample: np.ndarray  # [2, 4, F, h, w] float32
    timestep: np.ndarray  # [1] float32
    text: np.ndarray  # [2, 77, D] float32

    @classmethod
    def seeded(cls, frames: int, latent_hw: tuple, text_dim: int, seed: int = 0) -> "StepInputs":
        rng = np.random.default_rng(seed)
        return cls(
            rng.standard_normal((2, 4, frames, *latent_hw), dtype=np.float32),
            np.array([500.0], dtype=np.float32),
            rng.standard_normal((2, 77, text_dim), dtype=np.float32),
        )


def torch_step(unet, inputs: StepInputs, device: str, dtype: torch.dtype, compile: bool = False):
    """(callable, output) of the eager (or torch.compile'd) model at ``dtype`` on ``device``."""
    model = unet.to(device=device, dtype=dtype).eval()
    if compile:
        model = torch.compile(model)
    args = [torch.from_numpy(a).to(device=device, dtype=dtype) for a in (inputs.sample, inputs.timestep, inputs.text)]

    @torch.inference_mode()
    def step():
        return model(*args).sample

    return step, step().float().cpu().numpy()


def runtime_step(engine_dir, backend: str, inputs: StepInputs, device: str):
    """(callable, output, loaded graphs to close) of the exported UNet through tav-run's own engine wrapper.

    That is what the runtime really executes per denoising step: ORT with IOBinding and a CUDA
    graph on a GPU, plain ORT on CPU, or the TensorRT plan with persistent buffers.
    """
    from tav.runtime.backends import LoadedGraphs, choose_backend
    from tav.runtime.manifest import read_manifest

    manifest = read_manifest(engine_dir)
    graphs = LoadedGraphs(manifest, choose_backend(manifest, backend, device))
    unet = graphs.graphs["unet"]
    feeds = {"sample": inputs.sample, "timestep": inputs.timestep, "encoder_hidden_states": inputs.text}

    def step():
        return unet.run(feeds)["noise_pred"]

    return step, np.asarray(step(), dtype=np.float32), graphs


def accuracy(output: np.ndarray, reference: np.ndarray) -> dict:
    diff = output.astype(np.float64) - reference.astype(np.float64)
    return {
        "max_abs_err": float(np.abs(diff).max()),
        "rel_l2_err": float(np.linalg.norm(diff) / max(np.linalg.norm(reference), 1e-30)),
    }
