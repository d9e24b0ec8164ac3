"""analysis/membership_rise_experiment.py: the extra local steps read from a run's decisions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def _events(directory: Path, decisions: list[dict], end: dict | None) -> Path:
    """A run directory whose ``events.parquet`` holds a leave at round 3, one ``correction``
    event per decision and, if given, a ``correction_end``."""
    directory.mkdir()
    rows = [{"round": 3, "kind": "leave", "device": 2, "detail": "{}"}]
    rows += [
        {"round": 3 + i, "kind": "correction", "device": -1, "detail": json.dumps(d)}
        for i, d in enumerate(decisions)
    ]
    if end is not None:
        rows.append({"round": 6, "kind": "correction_end", "device": -1, "detail": json.dumps(end)})
    pd.DataFrame(rows).to_parquet(directory / "events.parquet")
    return directory


def test_steps_skip_the_waiting_decision(analysis_script, tmp_path) -> None:
    script = analysis_script("membership_rise_experiment")
    waited = _events(
        tmp_path / "waited",
        [
            {"actions": ["none", "none"], "local_steps": 0, "waiting": True},
            {"actions": ["learn", "none"], "local_steps": 40},
            {"actions": ["sync", "sync"], "local_steps": 0},
        ],
        {"extra_local_steps": 240},
    )
    # the first decision that does not wait took 40 steps a device; the whole correction 240
    assert script.steps(waited) == (40, 240)


def test_steps_of_a_correction_that_acts_at_once_or_never(analysis_script, tmp_path) -> None:
    script = analysis_script("membership_rise_experiment")
    at_once = _events(
        tmp_path / "at_once",
        [{"actions": ["learn", "learn"], "local_steps": 12}, {"actions": ["none"], "local_steps": 5}],
        {"extra_local_steps": 102},
    )
    assert script.steps(at_once) == (12, 102)
    # waiting, then every residual within tolerance: no step anywhere
    only_wait = _events(
        tmp_path / "only_wait",
        [{"actions": ["none", "none"], "local_steps": 0, "waiting": True}],
        {"extra_local_steps": 0},
    )
    assert script.steps(only_wait) == (0, 0)
    no_correction = _events(tmp_path / "none", [], None)
    assert script.steps(no_correction) == (0, 0)
