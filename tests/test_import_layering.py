"""The folders import each other as README's "The code, folder by folder" says, and never in a circle.

Imports are read with ``ast`` (every import statement, also those inside functions), so this sees what
path-based tools see. Each module belongs to its folder (``tuner/sampler.py`` to ``tuner``,
``tuner/model/video_unet.py`` to ``tuner/model``).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "cpp_ext", "tuner", "export", "serve", "bench", "scripts")

# README's "May import" column, by folder. A folder not named here may import what its package may.
MAY_IMPORT = {
    "runtime": set(),
    "cpp_ext": set(),
    "tuner/model": {"runtime", "cpp_ext"},
    "tuner/model_sources": {"tuner/model", "runtime"},
    "tuner": {"tuner/model", "tuner/model_sources", "runtime"},  # tuned_weights.py, sampler.py, progress.py
    "tuner/tuning": {"tuner", "tuner/model", "tuner/model_sources", "runtime"},
    "tuner/cli": {"tuner", "tuner/tuning", "tuner/model", "tuner/model_sources", "runtime"},
    "tuner/demo": {"tuner/model", "runtime"},
    "export": {"tuner", "runtime", "cpp_ext"},
    "serve": {"runtime"},
    "bench": set(PACKAGES) - {"bench", "scripts"},
    "scripts": set(PACKAGES) - {"scripts"},
}
# serve imports tuner and export only in job code (run in Ray workers).
SERVE_JOB_CODE = {"serve/tuning_job.py", "serve/jobs.py"}


def _module_file(module: str) -> Path | None:
    """tav.a.b -> a/b.py or a/b/__init__.py (None: not one of ours, or a name inside a module)."""
    parts = module.split(".")
    if parts[0] != "tav" or len(parts) < 2:
        return None
    base = ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set:
    """Every tav.* module ``path`` imports, relative imports resolved."""
    relative = path.relative_to(ROOT)
    package = ["tav", *relative.parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # `from pkg import name`: name is a submodule, or a name defined in pkg
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if _module_file(f"{module}.{alias.name}") else module)
    return {m for m in found if _module_file(m)}


def _folder(path: Path) -> str:
    return path.parent.relative_to(ROOT).as_posix()


def _arrows() -> dict:
    """{(from folder, to folder): [example 'file -> module', ...]} over all our packages."""
    arrows = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in sorted(_imported_modules(path)):
                target = _folder(_module_file(module))
                if target != _folder(path):
                    arrows.setdefault((_folder(path), target), []).append(
                        f"{path.relative_to(ROOT).as_posix()} -> {module}")
    return arrows


def _allowed(source_file: str, source: str, target: str) -> bool:
    top, target_top = source.split("/")[0], target.split("/")[0]
    if top == "serve" and target_top in ("tuner", "export"):
        return source_file in SERVE_JOB_CODE
    if top == target_top:  # inside one package: its folders' rules (a folder without rules is free inside it)
        return target in MAY_IMPORT.get(source, {target})
    return target_top in MAY_IMPORT.get(source, MAY_IMPORT[top])


def _cycle(graph: dict) -> list | None:
    """One cycle of folders in ``graph`` ({folder: {folder, ...}}), or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, trail + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_folder_imports_another_in_a_circle():
    arrows = _arrows()
    graph = {}
    for source, target in arrows:
        graph.setdefault(source, set()).add(target)
    cycle = _cycle(graph)
    evidence = [arrows[a][0] for a in zip(cycle[:-1], cycle[1:], strict=True)] if cycle else []
    assert cycle is None, f"folder cycle {' -> '.join(cycle)}: {evidence}"


def test_each_folder_imports_only_what_the_readme_allows():
    wrong = [example for (source, target), examples in _arrows().items()
             for example in examples if not _allowed(example.split(" -> ")[0], source, target)]
    assert wrong == [], "\n".join(wrong)


def test_runtime_never_imports_torch():
    offenders = []
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "torch"]
    assert offenders == []


def test_the_checker_sees_relative_and_lazy_imports_and_refuses_what_the_readme_does_not_allow():
    """The reader itself: a relative import two levels up, inside a function, resolves to the module."""
    imported = _imported_modules(ROOT / "tuner" / "cli" / "invert.py")
    assert {"tav.tuner.progress", "tav.tuner.tuning.invert_clip", "tav.tuner.cli.library_noise"} <= imported
    refused = [("runtime/x.py", "runtime", "tuner/model"), ("cpp_ext/x.py", "cpp_ext", "runtime"),
               ("tuner/model/x.py", "tuner/model", "tuner/model_sources"), ("tuner/model/x.py", "tuner/model", "tuner"),
               ("tuner/tuning/x.py", "tuner/tuning", "tuner/cli"), ("tuner/tuning/x.py", "tuner/tuning", "cpp_ext"),
               ("serve/ingress.py", "serve", "tuner/model"), ("export/x.py", "export", "serve")]
    assert [arrow for arrow in refused if _allowed(*arrow)] == []
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"] and _cycle({"a": {"b"}}) is None
