"""The value ranges a sampling call accepts, in one place: ``VideoPipeline`` checks them, and services
(tav.serve's request schema) take their bounds from here so the two never disagree.

The step count's upper bound depends on the ENGINE_DIR's scheduler (``DDIMScheduler.max_steps``:
999 for SD 1.x's "leading" spacing with steps_offset 1), so it is read from the scheduler, not fixed here.
"""

ETA_MIN, ETA_MAX = 0.0, 1.0  # above 1 the DDIM noise term exceeds what the step leaves room for
MAX_PROMPT_CHARS = 1000  # CLIP reads 77 tokens (longer text is cut with a warning); far longer text is a caller's bug
MAX_SEED = 2**63 - 1  # numpy's generators take any non-negative int; services keep it inside a signed 64-bit JSON int
MAX_DDIM_STEPS = 1000  # SD 1.x's training timesteps; the scheduler's own bound (999) is checked when sampling
MAX_GUIDANCE = 100.0  # far past any useful scale (7.5-15): the commands refuse more as a typo
