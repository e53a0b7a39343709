"""Settings of the browser tests (see conftest.py): paths, switches, the browser."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _truthy(value: str | None) -> bool:
    return (value or "").strip() not in ("", "0", "false", "False", "no")


def requested_by_env() -> bool:
    return _truthy(os.environ.get("NORMTEXT_BROWSER_TEST"))


def must_not_skip() -> bool:
    """In CI, or when asked for by the environment, a missing prerequisite fails."""
    return requested_by_env() or _truthy(os.environ.get("CI"))


def html_dir() -> Path:
    path = Path(os.environ.get("NORMTEXT_HTML_DIR", ROOT / "_build" / "html"))
    return path if path.is_absolute() else (ROOT / path)


def screenshot_dir() -> Path:
    env = os.environ.get("NORMTEXT_SCREENSHOT_DIR")
    path = Path(env) if env else html_dir().parent / "screenshots"
    return path if path.is_absolute() else (ROOT / path)


def chromium_path() -> str | None:
    env = os.environ.get("NORMTEXT_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or "",
                      shutil.which("chromium-browser") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def html_pages(root: Path) -> list[str]:
    """Every HTML page of the built book, relative to ``root`` (posix paths), sorted."""
    if not root.is_dir():
        return []
    pages = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("_static/", "_sources/", "_images/")):
            continue
        pages.append(rel)
    return pages
