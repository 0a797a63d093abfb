"""What every tav-* command shares: one-line errors on bad input, one-line warnings, quiet libraries.

A bad input ends the command with ``<prog>: error: <what and what to do>`` on stderr and exit
status 2, no traceback. ``TAV_DEBUG=1`` shows the traceback instead (for bug reports).
"""

import os
import sys
import warnings

from tav.runtime.one_line import first_line

# Errors that mean "bad input or environment"; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, OSError)


def run_cli(prog: str, main, argv=None) -> int:
    _quiet_libraries(prog)
    try:
        main(argv)
    except USER_ERRORS as err:
        if os.environ.get("TAV_DEBUG"):
            raise
        _fail(prog, _one_line(err), 2)
    except KeyboardInterrupt:  # outputs are written atomically, so an interrupt leaves nothing half-written
        _fail(prog, "interrupted; nothing was written", 130)
    return 0


def fail(prog: str, message: str, code: int = 2):
    _fail(prog, message, code)


def _fail(prog: str, message: str, code: int):
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return first_line(err, None)


def _quiet_libraries(prog: str):
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = show
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
