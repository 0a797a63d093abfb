"""How a command stops: Ctrl-C and SIGTERM end it at any moment, in one line, leaving nothing half-written.

- ``sigterm_interrupts()``: SIGTERM raises ``Stopped``, a KeyboardInterrupt, so every clean-up written for
  Ctrl-C (temp files and staging folders removed, tav-tune's checkpoint) runs for it too; exit status
  ``interrupt_status``: 130 or 143. An interrupt Python would swallow in a finaliser is sent again.
- ``stops_held(done_anyway)``: both signals wait while a finished output is renamed into place.

tav.runtime.command's ``run_command`` uses the first around every command; the console-script launcher
(tav.scripts) holds both signals from its first line until then.
"""

import os
import signal
import sys
import threading
from contextlib import contextmanager


class Stopped(KeyboardInterrupt):
    """SIGTERM (a service manager, `kill`, a job's cancel) raised where Ctrl-C would raise KeyboardInterrupt."""

    signum = signal.SIGTERM


def interrupt_status(err: BaseException) -> int:
    """The exit status of a stop: 128 + its signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + int(getattr(err, "signum", None) or signal.SIGINT)


def _raise_stopped(signum, frame):
    raise Stopped()


@contextmanager
def sigterm_interrupts():
    """While the block runs, SIGTERM raises ``Stopped`` (Python's default would end the process at once, with no
    message and no clean-up of half-written outputs), and no stop is lost where Python ignores exceptions
    (``_stops_not_swallowed``). The previous handler and hook are back afterwards. Off the main thread (a host
    program's worker) nothing changes: only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous, previous_hook = signal.signal(signal.SIGTERM, _raise_stopped), sys.unraisablehook
    sys.unraisablehook = _stops_not_swallowed(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        sys.unraisablehook = previous_hook


def _stops_not_swallowed(previous_hook):
    """An interrupt raised while a ``__del__`` or a weakref callback runs (the garbage collector runs them at any
    line) is ignored by Python, with an "Exception ignored" traceback, and the command would go on. Instead its
    signal is sent again, from a thread a moment later (sent from here, its handler would run, and raise, at
    once, inside this hook): it is raised in ordinary code, or lands in a finaliser again and comes back here."""

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            signum = getattr(unraisable.exc_value, "signum", signal.SIGINT)
            again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            again.daemon = True  # a process that ends first needs no second signal
            again.start()
        else:
            previous_hook(unraisable)

    return hook


@contextmanager
def stops_held(done_anyway):
    """Ctrl-C and SIGTERM wait until the block ends: for the rename of a command's finished output into place
    (milliseconds). The output is complete by then, so instead of an interrupt ``done_anyway(signum)`` says so
    and the command finishes. An interrupt there would report "nothing was written" with the output in place, or
    cut a swap between its two renames. Off the main thread (a service's job) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if received:
        done_anyway(received[0])
