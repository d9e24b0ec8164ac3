"""Fixtures for the tests of the analysis scripts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ANALYSIS = Path(__file__).resolve().parents[2] / "analysis"


@pytest.fixture
def analysis_script():
    """``analysis_script(name)``: the script ``analysis/<name>.py``, imported as a module."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, ANALYSIS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
