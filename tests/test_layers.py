"""Dependencies flow one way: no module of ``reidlib`` imports a layer above its own, at the top of a file
or inside a function. Read from the source (ast), so it takes milliseconds and imports nothing."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "reidlib"
# Top first. A module not named here is in the bottom layer: the trial contract, the config, errors, the
# data, model, training and evaluation code, the W&B writer, ...
LAYERS = (
    ("entry points", ("reidlib.cli", "reidlib.workflow")),
    ("analysis and reporting", ("reidlib.analysis", "reidlib.report")),
    ("sweep machinery", ("reidlib.sweep",)),
)
BOTTOM = (len(LAYERS), "contract, config, data, model, training")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> tuple[int, str]:
    for rank, (name, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(f"{p}.") for p in prefixes):
            return rank, name
    return BOTTOM


def imports(module: str, path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for each module of ``reidlib`` that ``path`` imports anywhere in it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from reidlib.sweep import layout`` imports the module reidlib.sweep.layout
            found += [(node.lineno, f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
                      for alias in node.names]
    return [(line, name) for line, name in found if name == "reidlib" or name.startswith("reidlib.")]


def upward_imports() -> list[str]:
    found = []
    for module, path in MODULES.items():
        rank, name = layer(module)
        for line, imported in imports(module, path):
            above, above_name = layer(imported)
            if above < rank:
                found.append(f"{path.relative_to(REPO)}:{line}: {module} ({name}) imports {imported} ({above_name})")
    return found


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports() == []


def test_every_layer_names_modules_that_exist():
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            assert prefix in MODULES, f"{prefix} is in LAYERS but not a module of reidlib"


def test_an_import_inside_a_function_counts(tmp_path):
    """The check reads every import, not only those at the top of a file."""
    path = tmp_path / "reidlib" / "sweep" / "late.py"
    path.parent.mkdir(parents=True)
    path.write_text("def f():\n    from reidlib.analysis import open_sweep\n    from . import layout\n")
    assert imports("reidlib.sweep.late", path) == [(2, "reidlib.analysis"), (3, "reidlib.sweep.layout")]
