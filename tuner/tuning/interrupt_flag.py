"""Ctrl-C and SIGTERM during tav-tune: a request honoured between steps, so a checkpoint is never half-written."""

import signal
import sys
import threading

from tqdm import tqdm


class InterruptFlag:
    """Turns the first Ctrl-C (or SIGTERM, as a service manager or `kill` stops a job) into a request honoured
    between steps, so a checkpoint is saved and never half-updated.

    A second signal interrupts at once (the previous handlers are back by then). ``signum``: the first
    signal's number (None while none came).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = False
        self.signum = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.requested = True
        self.signum = signum
        self._restore()
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        tqdm.write(f"tav-tune: {name}: stopping once the current step or pass ends, keeping a checkpoint of the "
                   "steps done (again to stop at once)\n", file=sys.stderr, end="")  # one write (tuner/progress.py)

    def _restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def check(self):
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        self._restore()
        return False
