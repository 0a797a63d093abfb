"""What a user sees while a long phase runs: tqdm bars and timed stage lines on stderr, or nothing with --quiet.

``Progress("tav-tune")`` prints ``tav-tune: inverting the clip (50 DDIM steps)`` when a stage
starts and ``tav-tune: inverting the clip: 12.3 s`` when it ends; ``bar`` is a tqdm bar on
stderr. ``on_stage(name)`` hears each stage's start as well (a service's job record follows it).
"""

import sys
import time
from contextlib import contextmanager

from tqdm import tqdm


class Progress:
    def __init__(self, prog: str, enabled: bool = True, on_stage=None):
        self.prog, self.enabled, self.on_stage = prog, enabled, on_stage

    def line(self, text: str):
        if self.enabled:
            # tqdm.write: does not tear an open bar. One write with its newline: a Ctrl-C between the text and
            # a separate newline would glue the command's last line onto this one.
            tqdm.write(f"{self.prog}: {text}\n", file=sys.stderr, end="")

    @contextmanager
    def stage(self, name: str, what: str):
        """Time ``what`` (a phrase: "evaluating the loss"), announcing it; ``name`` is the stage's id for on_stage."""
        if self.on_stage is not None:
            self.on_stage(name)
        self.line(what)
        start = time.perf_counter()
        yield
        self.line(f"{what}: {time.perf_counter() - start:.1f} s")

    def bar(self, total: int, desc: str, initial: int = 0, unit: str = "step") -> tqdm:
        return tqdm(total=total, initial=initial, desc=f"{self.prog} {desc}".strip(), unit=unit, dynamic_ncols=True,
                    file=sys.stderr, disable=not self.enabled)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``counted(1, "UNet pass", "UNet passes")`` -> "1 UNet pass"; the plural defaults to noun + "s"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
