"""The one way our readers take fields out of a file: each is checked for its form as it is taken.

Every file format we read (manifest.json, a pack's header, run.json, a job record, an official
config.yaml, a checkpoint's keys) is parsed to plain Python values, then read through ``Fields``: a
value of the wrong type, out of range or missing raises ``FieldError``, one line naming the file, the
field and the form expected ("run.json: stride is '2', expected a positive integer; re-run tav-tune").
Readers keep their typed results as small frozen dataclasses. Plain functions, no pydantic: runtime/
is installed without it.
"""

import math
import reprlib
from dataclasses import dataclass
from typing import Callable

MISSING = object()
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 40, 40, 4, 3, 2


class FileFormatError(ValueError):
    """A file that does not hold what its format says; the message is one line naming the file.

    ``problem``: the message without the file's name and the hint, for readers that word their own refusal.
    """

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem or message


class FieldError(FileFormatError):
    """One field of a file has the wrong type, is out of range or is missing."""

    def __init__(self, where, field: str, found: str, expected: str, hint: str | None = None):
        self.where, self.field, self.expected = str(where), field, expected
        problem = f"{field} is {found}, expected {expected}"
        super().__init__(f"{where}: {problem}" + (f"; {hint}" if hint else ""), problem)


def shown(value) -> str:
    """A value as a message shows it: short, whatever its size."""
    return _SHORT.repr(value)


@dataclass(frozen=True)
class Form:
    """What a field must be: a test, and the words a refusal uses for it."""

    words: str
    test: Callable[[object], bool]

    def __call__(self, value) -> bool:
        return self.test(value)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def is_number(value) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


TEXT = Form("a string", lambda v: isinstance(v, str))
NAME = Form("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")
INTEGER = Form("an integer", is_int)
POSITIVE_INT = Form("a positive integer", lambda v: is_int(v) and v > 0)
COUNT = Form("an integer >= 0", lambda v: is_int(v) and v >= 0)
NUMBER = Form("a finite number", is_number)
POSITIVE_NUMBER = Form("a positive finite number", lambda v: is_number(v) and v > 0)
BOOLEAN = Form("true or false", lambda v: isinstance(v, bool))
OBJECT = Form("an object", lambda v: isinstance(v, dict))
LIST = Form("a list", lambda v: isinstance(v, list))


def int_from(low: int, high: int | None = None) -> Form:
    words = f"an integer from {low}" + (f" to {high}" if high is not None else " up")
    return Form(words, lambda v: is_int(v) and v >= low and (high is None or v <= high))


def one_of(*choices) -> Form:
    return Form("one of " + ", ".join(map(repr, choices)),
                lambda v: isinstance(v, (str, int)) and not isinstance(v, bool) and v in choices)


def optional(form: Form) -> Form:
    return Form(f"{form.words} or null", lambda v: v is None or form(v))


def list_of(form: Form) -> Form:
    return Form(f"a list of {form.words.removeprefix('a ').removeprefix('an ')}s",
                lambda v: isinstance(v, list) and all(form(x) for x in v))


class Fields:
    """The fields of one object of file ``where``; ``path`` is where the object sits in the file ("base.")."""

    def __init__(self, raw, where, path: str = ""):
        self.where, self.path = where, path
        if not isinstance(raw, dict):
            if path:
                self.refuse(path.rstrip("."), shown(raw), "an object")
            self.refuse("the top level", _kind(raw), "an object")
        self.raw = raw

    def refuse(self, field: str, found: str, expected: str):
        raise FieldError(self.where, field, found, expected)

    def take(self, name: str, form: Form, default=MISSING):
        """The field ``name`` if it has ``form``; ``default`` when it is absent (a null that is present is checked)."""
        if name not in self.raw:
            if default is MISSING:
                self.refuse(self.path + name, "missing", form.words)
            return default
        value = self.raw[name]
        if not form(value):
            self.refuse(self.path + name, shown(value), form.words)
        return value

    def section(self, name: str, required: bool = False) -> "Fields":
        """The object under ``name`` (absent or null and not required: an empty one)."""
        value = self.raw.get(name)
        if value is None and not required:
            return Fields({}, self.where, f"{self.path}{name}.")
        if name not in self.raw:
            self.refuse(self.path + name, "missing", "an object")
        if not isinstance(value, dict):
            self.refuse(self.path + name, shown(value), "an object")
        return Fields(value, self.where, f"{self.path}{name}.")

    def each(self, name: str, required: bool = True) -> list:
        """The objects of the list under ``name``, each as ``Fields`` ("graphs.unet.inputs[0].")."""
        items = self.take(name, LIST, MISSING if required else [])
        return [Fields(item, self.where, f"{self.path}{name}[{i}].") for i, item in enumerate(items)]


def _kind(value) -> str:
    """"a list", "a string", "null": a parsed JSON or YAML value's kind, as a message names it."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number"}
    return "null" if value is None else names.get(type(value), f"a {type(value).__name__}")
