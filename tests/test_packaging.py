"""How normtext installs and builds: without MXNet, on numpy 1 or 2, one cache per build mode.

* Everything but the MXNet floor imports where MXNet cannot be imported (a reader
  on macOS, on Python 3.12+, on a hosted notebook service).
* The package's own requirements admit numpy 2 and leave MXNet and its numpy pin
  to the ``mxnet`` extra; requirements.txt (the book's pinned environment) lies
  inside those ranges.
* ``make quick-book`` and ``make book`` keep separate execution caches: a full
  build after a quick one executes in full mode, whatever ``NORMTEXT_QUICK`` the
  caller's shell holds.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "normtext"

# Modules that are MXNet code through and through; everything else must import without it.
MXNET_ONLY = ("normtext.mxnet", "normtext.experiments.gluon_models")


def module_names() -> list[str]:
    """Every module of the package in this checkout, by walking its files (importing nothing)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__main__":          # importing it would run the command
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def is_mxnet_only(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in MXNET_ONLY)


# Runs in a fresh interpreter: `import mxnet` raises ImportError there, as it does
# where MXNet is not installed. Prints {module: [error type, missing module, message]}.
IMPORT_ALL = textwrap.dedent("""
    import importlib, json, sys
    sys.modules["mxnet"] = None
    failed = {}
    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
        except Exception as e:
            failed[name] = [type(e).__name__, getattr(e, "name", None), str(e)]
    print(json.dumps(failed))
""")


def import_without_mxnet(names: list[str]) -> dict[str, list]:
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL, json.dumps(names)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def extras_import_names() -> set[str]:
    """Import names of the packages in the optional extras (data, kernels, ...) but MXNet."""
    from packaging.requirements import Requirement
    extras = project_metadata()["optional-dependencies"]
    names = {Requirement(r).name.lower() for reqs in extras.values() for r in reqs}
    return {{"scikit-learn": "sklearn"}.get(n, n.replace("-", "_")) for n in names} - {"mxnet"}


def test_the_module_list_sees_every_room():
    names = module_names()
    for room in ("normtext.numpy", "normtext.torch", "normtext.testing", "normtext.distributed",
                 "normtext.experiments", "normtext.bench", "normtext.mxnet.batch_norm"):
        assert room in names


def test_everything_but_the_mxnet_floor_imports_without_mxnet():
    failed = import_without_mxnet([n for n in module_names() if not is_mxnet_only(n)])
    needs_mxnet = {n: msg for n, (kind, missing, msg) in failed.items()
                   if missing == "mxnet" or "mxnet" in msg.lower()}
    assert needs_mxnet == {}, "these modules import MXNet at import time; import it inside " \
                              f"the functions that use it: {needs_mxnet}"
    # Any other failure is a bug, except a module of an optional extra not installed here.
    optional = extras_import_names()
    broken = {n: msg for n, (kind, missing, msg) in failed.items()
              if not (kind == "ModuleNotFoundError" and (missing or "").split(".")[0] in optional)}
    assert broken == {}


def test_without_mxnet_the_mxnet_floor_says_why():
    kind, missing, msg = import_without_mxnet(["normtext.mxnet"])["normtext.mxnet"]
    assert kind == "ImportError" and "Linux x86_64 only" in msg


# --- requirements ------------------------------------------------------------------

def project_metadata() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def requirements(lines) -> dict:
    from packaging.requirements import Requirement
    reqs = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            r = Requirement(line)
            reqs.setdefault(r.name.lower(), []).append(r)
    return reqs


def test_the_package_admits_numpy_1_and_2_and_leaves_mxnet_to_its_extra():
    project = project_metadata()
    core = requirements(project["dependencies"])
    assert "mxnet" not in core
    (numpy,) = core["numpy"]
    assert numpy.specifier.contains("1.23.5") and numpy.specifier.contains("2.2.0")
    extra = requirements(project["optional-dependencies"]["mxnet"])
    assert "mxnet" in extra
    assert not any(r.specifier.contains("1.24.0") for r in extra["numpy"])


def test_the_pinned_environment_lies_inside_the_package_ranges():
    project = project_metadata()
    wanted = requirements(project["dependencies"]
                          + [r for extra in project["optional-dependencies"].values() for r in extra])
    pinned = requirements((ROOT / "requirements.txt").read_text().splitlines())
    checked = 0
    for name, pins in pinned.items():
        for pin in pins:
            # an exact pin, or a range's lower bound (triton's range: see requirements.txt)
            version = next(s.version for s in sorted(pin.specifier, key=lambda s: s.operator != "==")
                           if s.operator in ("==", ">="))
            for r in wanted.get(name, []):
                assert r.specifier.contains(version), f"requirements.txt pins {pin}, pyproject wants {r}"
                checked += 1
    assert checked >= 5


# --- one execution cache per build mode -----------------------------------------

TINY_NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "mode", "metadata": {},
               "outputs": [], "source": ["import os, normtext\n",
                                         "print('mode:', 'quick' if normtext.quick_mode() else 'full')\n",
                                         "print('cache:', os.environ.get('NORMTEXT_JUPYTER_CACHE'))"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def make(target: str, book: Path, quick_in_env: str | None) -> None:
    """``make TARGET`` on the tiny book, with the venv that runs this test; no reinstall."""
    venv = Path(sys.prefix)
    env = {k: v for k, v in os.environ.items() if k != "NORMTEXT_QUICK"}
    if quick_in_env is not None:
        env["NORMTEXT_QUICK"] = quick_in_env
    env["PYTHONPATH"] = str(ROOT)      # the kernel imports this checkout's normtext
    out = subprocess.run(["make", "-C", str(ROOT), "-o", str(venv / ".installed"), target,
                          f"VENV={venv}", f"BOOK={book}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def executed(html: Path) -> tuple[str, Path]:
    """The mode the tiny notebook ran in, and the execution cache the build named to it."""
    text = html.read_text()
    modes = [m for m in ("quick", "full") if f"mode: {m}" in text]
    assert len(modes) == 1, modes
    return modes[0], Path(re.search(r"cache: (\S+)", text).group(1))


def test_a_full_build_after_a_quick_build_executes_in_full_mode(tmp_path):
    jupyter_book = Path(sys.prefix) / "bin" / "jupyter-book"
    if not jupyter_book.exists() or shutil.which("make") is None:
        pytest.skip("needs make and jupyter-book (the book's environment, requirements.txt)")
    import yaml
    book = tmp_path / "tiny"
    book.mkdir()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    # The book's own execution settings (cache mode, and a cache path if one is ever set).
    (book / "_config.yml").write_text(yaml.safe_dump(
        {"title": "tiny", "only_build_toc_files": True, "execute": config["execute"]}))
    (book / "_toc.yml").write_text("format: jb-book\nroot: tiny\n")
    (book / "tiny.ipynb").write_text(json.dumps(TINY_NOTEBOOK))

    # Each target sets its own mode: quick-book without NORMTEXT_QUICK in the
    # environment, book with NORMTEXT_QUICK=1 left over in it.
    make("quick-book", book, quick_in_env=None)
    make("book", book, quick_in_env="1")
    for mode, out in [("full", book / "_build"), ("quick", book / "_build" / "quick" / "_build")]:
        ran_in, cache = executed(out / "html" / "tiny.html")
        assert ran_in == mode
        # book/how-built.md reads the cache the build names: that of its own mode.
        assert cache == out / ".jupyter_cache" and (cache / "global.db").is_file()
