"""argparse ``type=`` functions for the tav-* flags: each value is checked when parsed, before any work starts.

A refused value raises argparse.ArgumentTypeError("VALUE is not RULE; WHAT TO DO"), which
tav.runtime.command.CommandParser shows as one line, ``<prog>: error: --flag VALUE is not ...``, exit 2.
Paths are looked at with ``os.stat`` only: a FIFO, device or socket is refused without being opened
(opening a FIFO for reading blocks until someone writes).
"""

import argparse
import math
import os
import stat

from .regular_files import describe_kind
from .sampling_limits import MAX_SEED

# Bounds of the video's shape: far beyond what fits in memory today, so they only catch typos.
MAX_FRAMES = 10_000  # seven minutes at 24 fps
MAX_SIDE = 4096  # pixels


def whole(low: int, high: int):
    """A whole number from ``low`` to ``high``. Every flag has an upper bound: a typo of a few extra digits is
    refused at once rather than allocating or running for ever."""
    rule = f"a whole number from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise refused(text, f"is not {rule}", "pass one") from None
        if value < low or value > high:
            raise refused(text, f"is not {rule}", "pass one in that range")
        return value

    parse.__name__ = "whole number"
    return parse


def finite_float(low: float, high: float, low_open: bool = False):
    """A finite number from ``low`` (or above it, ``low_open``) to ``high``: never NaN or infinite."""
    rule = (f"a finite number {'above' if low_open else 'from'} {_number(low)} "
            f"{'and at most' if low_open else 'to'} {_number(high)}")

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise refused(text, f"is not {rule}", "pass one") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            raise refused(text, f"is not {rule}", "pass one in that range")
        return value

    parse.__name__ = "number"
    return parse


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def positive_int(high: int):
    return whole(1, high)


def non_negative_int(high: int):
    return whole(0, high)


seed = whole(0, MAX_SEED)
port = whole(1, 65535)


def multiple_of_8(low: int = 8, high: int = MAX_SIDE):
    """A size in pixels: the VAE works on 8x8 blocks."""
    in_range = whole(low, high)

    def parse(text: str) -> int:
        value = in_range(text)
        if value % 8:
            raise refused(text, "is not a multiple of 8 (the VAE works on 8x8 pixel blocks)",
                           f"pass {value // 8 * 8 or 8} or {value // 8 * 8 + 8}")
        return value

    parse.__name__ = "size"
    return parse


def text(what: str = "some text", max_chars: int | None = None):
    """Any text that is not empty (or only spaces), at most ``max_chars`` long."""

    def parse(value: str) -> str:
        if not value.strip():
            raise refused(value, "is empty", f"pass {what}")
        if max_chars is not None and len(value) > max_chars:
            raise argparse.ArgumentTypeError(f"is {len(value)} characters long; pass at most {max_chars}")
        return value

    parse.__name__ = "text"
    return parse


def existing_file(what: str = "an existing file"):
    """A path to a regular file (symlinks followed): not a folder, FIFO, device or socket."""
    return _existing(what, stat.S_ISREG)


def existing_dir(what: str = "an existing folder"):
    return _existing(what, stat.S_ISDIR)


def existing_file_or_dir(what: str):
    return _existing(what, lambda mode: stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def folder_to_use(what: str = "a folder"):
    """A folder that may not exist yet (it is created); when it exists it must be a folder."""

    def parse(value: str) -> str:
        mode = path_mode(value, what)
        if mode is not None and not stat.S_ISDIR(mode):
            raise refused(value, f"is {describe_kind(mode) if not stat.S_ISREG(mode) else 'a file'}, not a folder",
                           f"pass {what}")
        return value

    parse.__name__ = "folder"
    return _named_path(parse, what)


def out_path(what: str = "a path to write", kind: str = "file or folder"):
    """Where an output goes: a ``kind`` name (not empty, not "-": outputs are files, never stdout). Its own command
    checks the rest (the format, what is in the way, the folder) before the work starts."""

    def parse(value: str) -> str:
        if value.strip() in ("", "-"):
            stdout = " (outputs are not written to stdout)" if value.strip() else ""
            raise refused(value, f"is not a {kind} name{stdout}", f"pass {what}")
        return value

    parse.__name__ = "path"
    return parse


def comma_list(choices, what: str = "names"):
    """Comma-separated names out of ``choices``; empty items are dropped, so "" is the empty list."""

    def parse(value: str) -> list:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise refused(value, f"names {', '.join(map(repr, unknown))}, which {'is' if len(unknown) == 1 else 'are'}"
                           f" not known", f"pass {what} from {', '.join(choices)}, separated by commas")
        return names

    parse.__name__ = "list"
    return parse


def _existing(what: str, wanted):
    def parse(value: str) -> str:
        mode = path_mode(value, what)
        if mode is None:
            raise refused(value, "does not exist", f"pass {what}")
        if not wanted(mode):
            kind = "a file" if stat.S_ISREG(mode) else describe_kind(mode)
            raise refused(value, f"is {kind}", f"pass {what}")
        return value

    parse.__name__ = "path"
    return _named_path(parse, what)


def _named_path(parse, what: str):
    def checked(value: str) -> str:
        if not value.strip():
            raise refused(value, "is empty", f"pass {what}")
        return parse(value)

    checked.__name__ = parse.__name__
    return checked


def path_mode(value: str, what: str) -> int | None:
    """``stat``'s mode of ``value`` (symlinks followed), or None when nothing is there."""
    try:
        return os.stat(os.path.expanduser(value)).st_mode
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # a name too long, a component that is a file, a NUL byte, no permission
        raise refused(value, f"cannot be looked at ({getattr(err, 'strerror', None) or err})", f"pass {what}") from None


def refused(value: str, problem: str, action: str) -> argparse.ArgumentTypeError:
    """The error of a refused ``value``: shown as typed, quoted where blanks or emptiness would hide it."""
    shown = value if len(value) <= 80 else value[:77] + "..."
    if not shown or not shown.isprintable() or any(c.isspace() for c in shown):
        shown = repr(shown)
    return argparse.ArgumentTypeError(f"{shown} {problem}; {action}")
