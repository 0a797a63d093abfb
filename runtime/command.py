"""What every tav-* command shares: its parser, one-line messages, and one run loop with one set of exit codes.

A command is a parser (``CommandParser``, whose flags check their values with the types in
tav.runtime.flag_types) and a function ``run(args)`` doing the work; ``run_command`` ties them:

- exit 0: done;
- exit 2: bad input or usage: a refused flag (argparse, or ``UsageError`` from a command's own checks),
  and bad files (a ValueError such as a corrupt ENGINE_DIR, a missing or unwritable path);
- exit 1: a failure while running (RuntimeError, other OSErrors: a full disk, a backend that fails);
- exit 130: Ctrl-C; 143: SIGTERM (128 + the signal's number, as shells report it). SIGTERM is raised as
  ``Stopped``, a KeyboardInterrupt, so whatever undoes a half-done output on Ctrl-C undoes it on SIGTERM
  too (runtime/stops.py); a command that handles a signal itself raises ``Interrupted`` (tav-tune
  checkpoints first).

Each failure is one line on stderr, ``<prog>: error: <what is wrong and what to do>``; an exception of
any other type is a bug and keeps its traceback (exit 1). ``TAV_DEBUG=1`` prints the traceback of every
failure, then the same line and exit status.
"""

import argparse
import copy
import os
import signal
import sys
import traceback
import warnings

from .stops import interrupt_status, sigterm_interrupts, stops_held

OK, FAILED, BAD_INPUT = 0, 1, 2
INTERRUPTED = 128 + signal.SIGINT  # 130, as shells report a process ended by Ctrl-C
# Read here only, once: TAV_DEBUG=1 shows every failure's traceback (for bug reports).
DEBUG = os.environ.get("TAV_DEBUG", "") not in ("", "0")

# Bad input: what the user passed (its value, or the file it names) is refused. Other OSErrors
# (ENOSPC, EIO, ...) are failures of the machine while running.
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError)
RUN_FAILURES = (RuntimeError, OSError, ArithmeticError, MemoryError, ImportError)


class UsageError(ValueError):
    """A flag value (or combination) a command refuses after parsing; the message names the flag and what to do."""


class Interrupted(Exception):
    """A command stopped by a signal it handled: one line (what was kept), exit 128 + ``signum`` (None: Ctrl-C)."""

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.signum = int(signum or signal.SIGINT)


# --- one-line messages -------------------------------------------------------------------------------


def first_text_line(text: str, limit: int | None = 200) -> str:
    """The first non-blank line of ``text``, stripped and cut at ``limit`` characters; "" when it has none."""
    line = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    return line if limit is None else line[:limit]


def first_line(err: BaseException, limit: int | None = 200, with_type: bool = False) -> str:
    """The first non-blank line of ``err``'s message, cut at ``limit`` characters; its type's name if it has none.

    ``with_type`` prefixes ``TypeName: `` (for errors raised by libraries, whose message alone may be cryptic).
    """
    text = first_text_line(str(err), limit)
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text}" if with_type else text


def error_line(err: BaseException) -> str:
    """One line for ``err``: an OSError as "path: reason", a missing module by its name, else its first line."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    if isinstance(err, ModuleNotFoundError) and err.name:
        return f"{err.name} is not installed; install the extra this command needs (README, Set up)"
    return " ".join(first_line(err, None).split())


# --- the parser ----------------------------------------------------------------------------------------


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default (also for options without help text), except where a default would
    mislead: None (the value comes from elsewhere: a config, the run, the hardware; the help text says from where),
    a plain switch's False, and help texts that already name their default."""

    def add_argument(self, action):
        if not action.help and action.option_strings and _shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        super().add_argument(action)

    def _get_help_string(self, action):
        text = action.help or ""
        if not _shows_default(action) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def _shows_default(action) -> bool:
    # `is`, not `in`: 0 and 0.0 are real defaults, though they compare equal to False
    return not (action.default is None or action.default is False or action.default is argparse.SUPPRESS
                or isinstance(action, argparse._HelpAction))


class CommandParser(argparse.ArgumentParser):
    """argparse with the project's help layout whose usage errors are one line and exit 2 (no usage dump)."""

    def __init__(self, prog: str, doc: str, **kwargs):
        summary = first_text_line(doc, None).replace("``", "")
        if summary.startswith(prog + ":"):  # "``tav-tune``: tune ..." -> "Tune ..."
            summary = summary[len(prog) + 1:].strip()
            summary = summary[:1].upper() + summary[1:]
        super().__init__(prog=prog, description=summary, formatter_class=DefaultsHelpFormatter, **kwargs)

    def error(self, message):
        if message.startswith("argument "):  # "argument --steps: 0 is not ..." -> "--steps 0 is not ..."
            flag, _, rest = message[len("argument "):].partition(": ")
            message = f"{flag.split('/')[-1]} {rest}"
        else:  # unknown or missing flags: where to look them up
            message += f" (see {self.prog} --help)"
        fail(self.prog, " ".join(message.split()), BAD_INPUT)


def fail(prog: str, message: str, code: int):
    sys.stderr.write(f"{prog}: error: {message}\n")  # one write: a signal cannot split the line from its newline
    sys.stderr.flush()
    sys.exit(code)


def _report_stop(prog: str, message: str, code: int):
    """``fail`` for a stop: a second Ctrl-C or SIGTERM while it is reported changes nothing (no traceback)."""
    with stops_held(lambda signum: None):
        fail(prog, message, code)


# --- the run loop --------------------------------------------------------------------------------------


def run_command(parser: argparse.ArgumentParser, work, argv=None) -> int:
    """Parse ``argv``, run ``work(args)`` and end as the module docstring says: returns 0 when the work is done;
    a failure exits through SystemExit with its status, after one line on stderr."""
    prog = parser.prog
    with sigterm_interrupts():
        try:
            args = parser.parse_args(argv)
            _quiet_libraries(prog)
            work(args)
        except Interrupted as err:
            _show_traceback()
            _report_stop(prog, error_line(err), 128 + err.signum)
        except KeyboardInterrupt as err:  # outputs are written atomically: an interrupt leaves nothing half-written
            _show_traceback()
            _report_stop(prog, "interrupted; nothing was written", interrupt_status(err))
        except INPUT_ERRORS as err:
            _show_traceback()
            fail(prog, error_line(err), BAD_INPUT)
        except RUN_FAILURES as err:
            _show_traceback()
            fail(prog, error_line(err), FAILED)
    return OK


def _show_traceback():
    if DEBUG:
        traceback.print_exc(file=sys.stderr)


def _quiet_libraries(prog: str):
    """Warnings as one line each; third-party notices silenced (quiet_environment)."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = show
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    quiet_environment()


def quiet_environment():
    """Silence known third-party notices through the variables the libraries read when imported.

    Set after argument parsing (so ``--help`` stays fast) and before torch/diffusers/transformers load:
    their info/warning chatter ("requires torchvision", "pip install accelerate") and loading progress
    bars. Child processes (Ray workers, tav-bench's stages) inherit them. Values a user exported win.
    """
    for name, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"),
                        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(name, value)
