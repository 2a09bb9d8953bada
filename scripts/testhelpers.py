"""Load a module of ``tests/`` (and the ``conftest`` it imports) by file path, for the scripts that
render pages from test tables or drive the UI helpers, without putting ``tests/`` on ``sys.path``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parent.parent / "tests"


def load(name: str) -> ModuleType:
    """``tests/<name>.py`` as module ``name`` (its ``from conftest import ...`` resolves to tests/conftest.py)."""
    for module in ("conftest", name):
        if module not in sys.modules:
            spec = importlib.util.spec_from_file_location(module, TESTS / f"{module}.py")
            assert spec is not None and spec.loader is not None
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[module] = loaded
            spec.loader.exec_module(loaded)
    return sys.modules[name]
