"""Fixtures for the tests of the analysis scripts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pandas as pd
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


def _write_decisions(
    directory: Path, name: str, decisions: list[dict], kind: str = "leave", device: int = -1
) -> None:
    """A run directory ``directory/name`` whose ``events.parquet`` holds one ``kind`` event of
    ``device`` at round 3 and then one ``correction`` event per decision (its ``detail``)."""
    (directory / name).mkdir(parents=True)
    rows = [{"round": 3, "kind": kind, "device": device, "detail": "{}"}]
    rows += [
        {"round": 3 + i, "kind": "correction", "device": -1, "detail": json.dumps(d)}
        for i, d in enumerate(decisions)
    ]
    pd.DataFrame(rows).to_parquet(directory / name / "events.parquet")


@pytest.fixture
def write_decisions():
    """``write_decisions(directory, name, decisions, kind="leave", device=-1)``: a run directory
    with one event and a ``correction`` event per decision (for the scripts that read decisions)."""
    return _write_decisions
