"""What ``tav-export --overwrite`` may delete: an ENGINE_DIR proven ours, and only if it holds nothing else.

A folder is ours when its manifest.json parses as a tav-export manifest, every file in the folder
is one the manifest names (graphs, external data, plans, plugin libraries, ``files``) or one of
our known outputs, and every folder in it leads to such a file. A stray ``thesis.tex`` or ``.git``
(or a symlink, which we never write) makes it not ours, and --overwrite then refuses.
"""

import json
import os
from pathlib import Path

from tav.runtime.engine_paths import UnsafeName, resolve_inside
from tav.runtime.manifest_schema import MANIFEST
from tav.runtime.plugin_library import PLUGIN_FILE

from .manifest import TIMING_CACHE

KNOWN_OUTPUTS = {MANIFEST, TIMING_CACHE, PLUGIN_FILE}
# Keys of a graph entry whose string values are file names, at any depth: "file" in external_data,
# "plan" and "plugins" under tensorrt, "onnx" also inside schema 2's tensorrt.onnx (the plans'
# standard-op twin); any key ending in "onnx" counts, so a later graph file is not taken for a stranger.
FILE_KEYS = ("onnx", "file", "plan", "plugins")


def foreign_entries(folder: Path) -> str | None:
    """None when ``folder`` is provably an ENGINE_DIR and nothing else; else what is in the way, briefly."""
    listed = _listed_names(folder)
    if isinstance(listed, str):
        return listed
    on_the_way = {parent.as_posix() for name in listed for parent in Path(name).parents if parent != Path(".")}
    foreign = []
    for dirpath, dirnames, filenames in os.walk(folder):  # does not follow symlinked folders
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                foreign.append(relative)
            elif name in dirnames and relative not in on_the_way:
                foreign.append(relative + "/")
                dirnames.remove(name)  # its contents go with it
            elif name in filenames and relative not in listed:
                foreign.append(relative)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"it holds {', '.join(foreign[:3])}{more}, which its manifest.json does not list"
    return None


def _listed_names(folder: Path):
    """The file names manifest.json lists plus our known outputs, or a string saying why it is not ours."""
    path = folder / MANIFEST
    if path.is_symlink() or not path.is_file():
        return "it has no manifest.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its manifest.json does not parse"
    if not (isinstance(raw, dict) and isinstance(raw.get("schema_version"), int) and isinstance(raw.get("graphs"), dict)
            and isinstance(raw.get("files"), dict)):
        return "its manifest.json is not one tav-export writes"
    names = set(raw["files"])
    for entry in raw["graphs"].values():
        names.update(_file_values(entry))
    for name in names:
        try:
            resolve_inside(folder, name)
        except UnsafeName:
            return "its manifest.json names files outside the folder"
    return names | KNOWN_OUTPUTS


def _file_values(value, key: str = ""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _file_values(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from _file_values(item, key)
    elif key in FILE_KEYS or key.endswith("onnx"):
        yield value  # a non-string fails resolve_inside above
