"""The package's rooms and the direction of its imports.

normtext is built in rooms, each one kind of thing, and imports point down
only: the floors (``numpy``, ``torch``, ``mxnet``) read the core (``spec``,
``errors``, ``moments``) and nothing else; the parity harness reads the floors;
nothing in the library reads the book's experiments. The test parses every
module (imports inside functions included) and fails on any import that points
up or sideways.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "normtext"

CORE = {"core"}
FLOORS = {"numpy", "torch", "mxnet"}
# room -> the rooms its modules may import (its own included)
ALLOWED: Dict[str, set] = {
    "core": CORE,
    "numpy": CORE | {"numpy"},
    "torch": CORE | {"torch"},
    "mxnet": CORE | {"mxnet"},
    "kernels": CORE | {"torch", "kernels"},
    "testing": CORE | FLOORS | {"kernels", "testing"},
    "distributed": CORE | FLOORS | {"kernels", "testing", "distributed"},
    "tools": CORE | FLOORS | {"kernels", "testing", "distributed", "tools"},
    "experiments": CORE | FLOORS | {"kernels", "testing", "distributed", "tools", "experiments"},
}
TOOLS = {"bench", "check"}


def room_of(module: str) -> str:
    """The room of a dotted module name inside normtext."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("spec", "errors", "moments"):
        return "core"
    if parts[1] in TOOLS:
        return "tools"
    if parts[1] in ALLOWED:
        return parts[1]
    raise ValueError(f"{module} is in no room: add it to one in tests/test_layout.py")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str, root: Path) -> bool:
    base = root.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(path: Path, root: Path) -> Iterator[Tuple[int, str]]:
    """(line, normtext module) for every import of the package in one file."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == root.name:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != root.name:
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_module(candidate, root) else base


def violations(root: Path = PACKAGE) -> List[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        source = room_of(module_name(path, root))
        for line, target in imports_of(path, root):
            if room_of(target) not in ALLOWED[source]:
                found.append(f"{path.relative_to(root.parent)}:{line}: {source} imports "
                             f"{target} ({room_of(target)})")
    return found


def test_imports_point_down_only():
    assert violations() == []


# Modules that import an optional dependency (MXNet, Numba, Triton) when they are
# imported: the only normtext imports that may stay inside a function, so that
# everything else imports without them.
OPTIONAL_BACKENDS = {"normtext.mxnet", "normtext.kernels._numba", "normtext.kernels._triton",
                     "normtext.kernels.gpu"}


def nested_imports(path: Path, root: Path) -> Iterator[Tuple[int, str]]:
    """Imports of normtext made anywhere but at a module's top level."""
    top_level = {node.lineno for node in ast.parse(path.read_text()).body
                 if isinstance(node, (ast.Import, ast.ImportFrom))}
    for line, target in imports_of(path, root):
        if line not in top_level:
            yield line, target


def test_imports_sit_at_the_top():
    """A normtext import inside a function hides a dependency; only optional backends may."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {target}"
             for path in sorted(PACKAGE.rglob("*.py"))
             for line, target in nested_imports(path, PACKAGE)
             if target not in OPTIONAL_BACKENDS]
    assert found == []


def test_every_module_is_in_a_room():
    for path in PACKAGE.rglob("*.py"):
        assert room_of(module_name(path, PACKAGE)) in ALLOWED


@pytest.mark.parametrize("where, statement, expected", [
    ("torch/layer.py", "from ..testing import compare\n", "torch imports normtext.testing.compare"),
    ("torch/layer.py", "from normtext import numpy as ref\n", "torch imports normtext.numpy"),
    ("testing/harness.py", "def f():\n    from normtext.experiments import data\n",
     "testing imports normtext.experiments.data"),
    ("spec.py", "import normtext.torch.functional\n", "core imports normtext.torch.functional"),
    ("bench.py", "from .experiments.train import cached\n", "tools imports normtext.experiments.train"),
])
def test_an_upward_import_is_found(tmp_path, where, statement, expected):
    """The checker itself: a tree with one upward import yields exactly that violation."""
    root = tmp_path / "normtext"
    for module in ("__init__.py", "spec.py", "bench.py", "torch/__init__.py", "numpy/__init__.py",
                   "testing/__init__.py", "testing/compare.py", "experiments/__init__.py",
                   "experiments/data.py", "experiments/train.py", "torch/functional.py"):
        (root / module).parent.mkdir(parents=True, exist_ok=True)
        (root / module).write_text("")
    (root / where).write_text(statement)
    found = violations(root)
    assert len(found) == 1 and expected in found[0], found
