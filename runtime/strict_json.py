"""Parsing JSON someone else may have written: bounded size and depth, and NaN/Infinity refused where asked.

Python's ``json`` accepts ``NaN`` and ``Infinity`` (JSON has neither), which the service's response
encoder then refuses: a pack whose metadata held one made every listing answer 500. A document nested
thousands of levels deep ends in a RecursionError. So each reader parses through ``parse_json``,
with the same rules the responses use; a refusal is a ``FileFormatError`` naming the file.
"""

import json

from .file_fields import FileFormatError
from .regular_files import open_regular

MAX_DEPTH = 32  # our deepest file (a manifest's graphs.unet.tensorrt.onnx.external_data[0]) is 6 levels
MAX_BYTES = 64 << 20  # run.json of a 100k-step run is about 2 MB


def parse_json(data, where, *, allow_nan: bool = False, max_depth: int = MAX_DEPTH):
    """The value of JSON text or bytes ``data`` from file ``where``; FileFormatError (one line) if it breaks a rule."""
    def no_constants(name):
        raise FileFormatError(f"{where}: holds {name}, which JSON does not allow", f"holds {name}")

    try:
        value = json.loads(data, parse_constant=None if allow_nan else no_constants)
    except RecursionError:
        raise _too_deep(where, max_depth) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problem = f"not valid JSON ({err})"
        raise FileFormatError(f"{where}: {problem}", problem) from None
    if depth_over(value, max_depth):
        raise _too_deep(where, max_depth)
    return value


def read_json_file(path, *, allow_nan: bool = False, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES):
    """``parse_json`` of the regular file ``path`` (NotRegularFile for a FIFO or device; OSError passes through)."""
    with open_regular(path) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        problem = f"larger than {max_bytes >> 20} MiB, which no file of this kind is"
        raise FileFormatError(f"{path}: {problem}", problem)
    return parse_json(data, path, allow_nan=allow_nan, max_depth=max_depth)


def depth_over(value, limit: int) -> bool:
    """Whether lists and objects in ``value`` nest more than ``limit`` levels (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _too_deep(where, limit: int) -> FileFormatError:
    problem = f"nested more than {limit} levels deep, which no file of this kind is"
    return FileFormatError(f"{where}: {problem}", problem)
