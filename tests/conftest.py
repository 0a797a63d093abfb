"""Shared fixtures: one tiny seeded SD-1.x pipeline per test session, real clips from ../shared/data."""

from pathlib import Path

import pytest
import torch

from tav.tuner.tiny_model import make_tiny

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "sd", seed=0)


@pytest.fixture(scope="session")
def skiing_clip() -> Path:
    clip = SHARED_DATA / "man-skiing.mp4"
    if not clip.is_file():
        pytest.skip(f"real clip {clip} not present (it ships in ../shared/data)")
    return clip


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model's ops are too small to gain from threads, and on a shared CPU extra threads cost ~10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
