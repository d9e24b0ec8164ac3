"""analysis/wait_default_experiment.py: every residual policy with and without the wait, paired by seed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats


def _directory(root: Path, name: str, rows: list[dict], wait: int | None) -> Path:
    """A results directory: ``results.parquet`` and, per row, a run directory whose manifest
    states ``correction.wait_rounds`` (None: not stated)."""
    directory = root / name
    directory.mkdir()
    for row in rows:
        run = directory / f"{row['regime']}-{row['event']}-{row['policy']}-s{row['seed']}"
        run.mkdir()
        correction = {} if wait is None else {"wait_rounds": wait}
        (run / "manifest.json").write_text(json.dumps({"scenario": {"correction": correction}}))
    pd.DataFrame(rows).to_parquet(directory / "results.parquet")
    return directory


def _row(policy: str, seed: int, acc: float, early: float = 0.5, event: str = "leave") -> dict:
    split = "retain" if event == "leave" else "newcomer"
    return {
        "regime": "regime_x",
        "event": event,
        "policy": policy,
        "seed": seed,
        f"{split}_acc": acc,
        f"{split}_acc_early": early,
    }


def test_each_policy_with_the_wait_is_paired_by_seed_with_itself_without_it(
    analysis_script, tmp_path
) -> None:
    script = analysis_script("wait_default_experiment")
    waited = _directory(
        tmp_path,
        "wait",
        [
            _row("priority", 1, 0.80, early=0.40),
            _row("priority", 2, 0.70, early=0.50),
            _row("priority", 3, 0.75, early=0.45),
            _row("local", 1, 0.60),
            _row("none", 1, 0.10),  # none and retrain do not wait: left out
            _row("retrain", 1, 0.90),
        ],
        1,
    )
    old = _directory(
        tmp_path,
        "old",  # made before the option: no wait_rounds stated, read as 0
        [
            _row("priority", 1, 0.70, early=0.50),
            _row("priority", 2, 0.72, early=0.50),
            _row("priority", 3, 0.60, early=0.50),
            _row("priority", 4, 0.99, early=0.50),  # no run with the wait: not paired
            _row("none", 1, 0.10),
        ],
        None,
    )
    df = script.load([waited, old])
    assert sorted(df["policy"].unique()) == ["local", "priority"]
    assert sorted(df[df["policy"] == "priority"]["wait"].unique()) == [0, 1]
    lines = script.table(df).splitlines()[2:]
    # local ran with the wait only: no row; priority two rounds on and at the end.
    assert len(lines) == 2
    early, end = ([c.strip() for c in line.strip("|").split("|")] for line in lines)
    # with - without two rounds on: -0.10, 0.00, -0.05
    assert early[:7] == ["regime_x", "leave", "+2 rounds", "priority", "3", "0.50", "0.45"]
    assert early[7].startswith("-0.05 [")
    # at the end: +0.10, -0.02, +0.15; mean +0.0767
    assert end[:7] == ["regime_x", "leave", "end", "priority", "3", "0.67", "0.75"]
    assert end[7].startswith("+0.08 [")
    expected = stats.ttest_1samp([0.10, -0.02, 0.15], 0.0).pvalue
    assert end[8] == f"{expected:.2f}"


def test_a_run_found_twice_with_the_same_wait_is_an_error(analysis_script, tmp_path) -> None:
    script = analysis_script("wait_default_experiment")
    a = _directory(tmp_path, "a", [_row("priority", 1, 0.5)], 1)
    b = _directory(tmp_path, "b", [_row("priority", 1, 0.6)], 1)
    with pytest.raises(ValueError, match="seed 1 is in more than one directory"):
        script.load([a, b])


def test_two_different_waits_beside_none_are_an_error(analysis_script, tmp_path) -> None:
    script = analysis_script("wait_default_experiment")
    zero = _directory(tmp_path, "zero", [_row("priority", 1, 0.5)], 0)
    one = _directory(tmp_path, "one", [_row("priority", 1, 0.6)], 1)
    two = _directory(tmp_path, "two", [_row("priority", 2, 0.6)], 2)
    with pytest.raises(ValueError, match="more than one wait_rounds"):
        script.table(script.load([zero, one, two]))
