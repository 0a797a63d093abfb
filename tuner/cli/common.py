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
    quiet_environment()
    # Libraries read those variables when first imported; one already imported (a test calling main()) is told directly.
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


def quiet_environment():
    """Silence known third-party notices through the variables the libraries read at import.

    Set here, before torch/diffusers/transformers are imported (after argument parsing, so
    ``--help`` stays fast): transformers' and diffusers' info/warning chatter (the
    "requires torchvision" notices, the "pip install accelerate" advice) and their
    loading progress bars. Values a user exported win.
    """
    for name, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DIFFUSERS_VERBOSITY", "error"),
                        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(name, value)
