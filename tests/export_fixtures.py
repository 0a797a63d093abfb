"""The RUN_DIR exporter and runtime tests share: tav.tuner.demo.random_run's, at the tiny test size.

3 frames: frame 2 is the first whose previous frame is not frame 0, so sparse-causal
attention is exercised beyond its frame-0 special case.
"""

from tav.tuner.demo.random_run import make_random_run

FRAMES, HEIGHT, WIDTH = 3, 64, 64


def make_run_dir(sd_dir, run_dir, frames=FRAMES, height=HEIGHT, width=WIDTH, seed=0, inverted=True):
    return make_random_run(sd_dir, run_dir, frames, height, width, seed=seed, inverted=inverted)
