"""Where a ``VideoPipeline`` call is while it runs, for a progress bar or a function of yours.

A call has three stages, each a count of engine runs: ``text_encoder`` (1), ``denoise`` (one per step) and
``decode`` (one per decode_batch frames). ``progress=True`` draws one tqdm bar on stderr over all of them,
its label the current stage; ``progress=f`` calls ``f(stage, done, total)`` when a stage starts (done 0) and
after each of its runs, so no stage, not even a graph's first load, passes without a word.
"""

from tqdm import tqdm

STAGES = ("text_encoder", "denoise", "decode")


def check_progress(progress) -> None:
    """One line naming what ``progress`` may be, before any engine work."""
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be True, False or a function (stage, done, total), got {progress!r}")


class CallProgress:
    """Reports one call's stages; a context manager, so the bar goes away however the call ends."""

    def __init__(self, progress, steps: int, decode_runs: int):
        check_progress(progress)
        self._listener = progress if callable(progress) else None
        self._totals = {"text_encoder": 1, "denoise": steps, "decode": decode_runs}
        # The bar counts engine runs across the stages: a stage's runs start after the earlier stages' totals.
        self._offsets = {"text_encoder": 0, "denoise": 1, "decode": 1 + steps}
        self._bar = None
        if progress is True:
            self._bar = tqdm(total=1 + steps + decode_runs, desc=STAGES[0], unit="run", leave=False)

    def __call__(self, stage: str, done: int) -> None:
        total = self._totals[stage]
        if self._bar is not None:
            if self._bar.desc != stage:  # drawn at once: a long stage shows its name from its start
                self._bar.set_description_str(stage)
            self._bar.update(self._offsets[stage] + done - self._bar.n)
        if self._listener is not None:
            self._listener(stage, done, total)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
