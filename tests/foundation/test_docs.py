"""The documentation builds without warnings and documents every public class."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_addons

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))
import gen_api  # noqa: E402

sys.path.pop(0)


def _public_classes() -> dict[str, str]:
    """Dotted definition path -> public name, for every class in any lightning_addons package's ``__all__``."""
    found = {}
    for info in pkgutil.walk_packages(lightning_addons.__path__, "lightning_addons."):
        if not info.ispkg:
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) and obj.__module__.startswith("lightning_addons."):
                found[f"{obj.__module__}.{obj.__qualname__}"] = name
    return found


def test_api_pages_are_generated_from_the_current_public_names():
    stale = [f for f, text in gen_api.pages().items() if (gen_api.API_DIR / f).read_text() != text]
    assert not stale, f"docs/api pages out of date: {stale}; run `python docs/gen_api.py`"


def test_every_public_class_has_a_rendered_api_entry():
    rendered = "\n".join(p.read_text() for p in gen_api.API_DIR.glob("*.md"))
    missing = sorted(name for path, name in _public_classes().items() if f"::: {path}\n" not in rendered)
    assert not missing, (
        f"public classes without an API entry (add their package to docs/gen_api.py): {missing}"
    )


def test_docs_build_in_strict_mode_without_warnings(tmp_path):
    pytest.importorskip("mkdocstrings")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    warnings = [line for line in out.stderr.splitlines() if line.startswith("WARNING")]
    assert out.returncode == 0 and not warnings, "\n".join(warnings) or out.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "callbacks" / "index.html").is_file()
