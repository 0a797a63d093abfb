"""How every command ends on Ctrl-C and SIGTERM (runtime/command.py, scripts/__init__.py), in fast unit checks:
SIGTERM raised like Ctrl-C (exit 143, one line), held while an output is put in place, and covered by the launcher
from its first line. tests/test_clean_stops.py (slow) stops the real commands at every stage.

The launcher also lets --help through without the command's extra (the lean install answers it).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

import tav.scripts
from tav.runtime.command import CommandParser, run_command
from tav.runtime.stops import Stopped, interrupt_status, stops_held

from fixtures.commands import run_main


@pytest.fixture
def handlers_kept():
    """The launcher sets the process's handlers for good (it ends the process); put pytest's back."""
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in kept.items():
        signal.signal(sig, handler)


def wait_for_the_handler():
    for _ in range(200):  # the handler runs at the next bytecode; a sleep gives it one
        time.sleep(0.005)


def test_sigterm_during_work_is_one_line_and_exit_143_and_the_previous_handler_is_back(capsys):
    before = signal.getsignal(signal.SIGTERM)

    def work(args):
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for_the_handler()
        raise AssertionError("SIGTERM did not interrupt the work")

    with pytest.raises(SystemExit) as done:
        run_command(CommandParser("tav-x", "tav-x: a test command."), work, [])
    assert done.value.code == 143 and capsys.readouterr().err == "tav-x: error: interrupted; nothing was written\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_raised_inside_a_finaliser_is_not_lost(capsys):
    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            wait_for_the_handler()  # Stopped is raised here, where Python ignores exceptions

    def work(args):
        Finalised()  # collected at once
        wait_for_the_handler()
        raise AssertionError("the stop was lost")

    with pytest.raises(SystemExit) as done:
        run_command(CommandParser("tav-x", "tav-x: a test command."), work, [])
    assert done.value.code == 143 and capsys.readouterr().err == "tav-x: error: interrupted; nothing was written\n"


def test_exit_status_is_128_plus_the_signal():
    assert (interrupt_status(KeyboardInterrupt()), interrupt_status(Stopped())) == (130, 143)


def test_a_stop_while_an_output_is_put_in_place_waits_and_the_command_finishes():
    heard, finished = [], False
    with stops_held(heard.append):
        signal.raise_signal(signal.SIGINT)
        wait_for_the_handler()
        finished = True
    assert finished and heard == [signal.SIGINT]


def test_a_second_stop_while_the_first_is_reported_changes_nothing(capsys):
    def work(args):
        raise KeyboardInterrupt

    real_write = sys.stderr.write

    def write_then_stop_again(text):  # Ctrl-C pressed again just as the line is printed
        real_write(text)
        signal.raise_signal(signal.SIGINT)
        wait_for_the_handler()

    sys.stderr.write = write_then_stop_again
    try:
        with pytest.raises(SystemExit) as done:
            run_command(CommandParser("tav-x", "tav-x: a test command."), work, [])
    finally:
        del sys.stderr.write
    assert done.value.code == 130 and capsys.readouterr().err == "tav-x: error: interrupted; nothing was written\n"


def launched(code: str) -> subprocess.CompletedProcess:
    """``code`` run after ``import tav.scripts as s`` in a fresh interpreter, as a console script runs."""
    return subprocess.run([sys.executable, "-c", f"import os, signal, sys\nimport tav.scripts as s\n{code}"],
                          capture_output=True, text=True, timeout=120)


def test_sigterm_before_the_runner_is_imported_is_held_then_one_line_143():
    # The extras check is the launcher's first step, before it imports the runner.
    done = launched("s._missing = lambda modules: os.kill(os.getpid(), signal.SIGTERM) or []\n"
                    "sys.argv = ['tav-tune', '--steps', '1']\ns.tav_tune()")
    assert done.returncode == 143, done.stderr
    assert done.stderr == "tav-tune: error: interrupted while starting; nothing was written\n"


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_while_the_command_module_is_imported_is_one_line(sig, code):
    done = launched(f"real = s.importlib.import_module\n"
                    f"s.importlib.import_module = lambda name: (os.kill(os.getpid(), {int(sig)}), real(name))[1]\n"
                    "sys.argv = ['tav-grid', 'a.gif', 'b.gif', '--out', 'c.gif']\ns.tav_grid()")
    assert done.returncode == code, done.stderr
    assert done.stderr == "tav-grid: error: interrupted while starting; nothing was written\n"


def test_help_is_answered_without_the_extra_and_a_run_names_it(monkeypatch, handlers_kept):
    monkeypatch.setattr(tav.scripts, "_missing", lambda modules: ["torch"])
    monkeypatch.setattr(sys, "argv", ["tav-tune", "--help"])
    help_run = run_main(lambda argv: tav.scripts.tav_tune(), [])
    assert help_run.code == 0 and "--eval-pairs" in help_run.out, help_run.err
    monkeypatch.setattr(sys, "argv", ["tav-tune", "--steps", "1"])
    with pytest.raises(SystemExit) as done:
        tav.scripts.tav_tune()
    assert done.value.code == "tav-tune needs the tune extra: pip install 'tav-runtime[tune]'"
