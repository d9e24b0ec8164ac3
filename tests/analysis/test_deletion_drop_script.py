"""analysis/deletion_drop_experiment.py: leaves split by how much the deletion alone took off."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

NAN = float("nan")


def _row(policy: str, seed: int, **values: float) -> dict:
    row = {
        "regime": "regime_x",
        "event": "leave",
        "policy": policy,
        "seed": seed,
        "correction_seconds": 0.0,
        "correction_bits": 0.0,
        "correction_extra_local_steps": 0,
        "caught_up": 1.0,
        "caught_up_s": 0.0,
        "caught_up_bits": 0.0,
    }
    return {**row, **values}


def _evaluations(run: Path, before: float, after: float) -> None:
    """A run directory whose evaluations hold the network-wide retained accuracy around a leave
    (and a device's own row and another split, which must not count)."""
    run.mkdir(parents=True)
    rows = [  # the rows that must not count come first
        {"round": 3, "stage": "before_event", "split": "retain", "device": 0.0, "accuracy": 0.0},
        {"round": 3, "stage": "before_event", "split": "forget", "device": None, "accuracy": 0.0},
        {"round": 3, "stage": "after_event", "split": "retain", "device": 0.0, "accuracy": 0.0},
        {"round": 3, "stage": "after_event", "split": "forget", "device": None, "accuracy": 0.0},
        {"round": 3, "stage": "before_event", "split": "retain", "device": None, "accuracy": before},
        {"round": 3, "stage": "after_event", "split": "retain", "device": None, "accuracy": after},
    ]
    pd.DataFrame(rows).to_parquet(run / "evaluations.parquet")


def test_seeds_are_split_by_the_deletions_drop_and_counted(analysis_script, tmp_path) -> None:
    script = analysis_script("deletion_drop_experiment")
    replay = {"correction_seconds": 10.0, "correction_bits": 100e6}
    results = [
        _row("retrain", 1, **replay),
        _row("retrain", 2, **replay),
        _row("retrain", 3, **replay),
        # seed 1: the deletion took off half a point; already there; priority stepped all the same
        _row("none", 1),
        _row("priority", 1, correction_extra_local_steps=40, correction_seconds=4.0, correction_bits=50e6),
        # seed 2: nothing taken off; none catches up 3.3x cheaper, priority 10x without a step
        _row("none", 2, caught_up_s=3.0, caught_up_bits=30e6),
        _row(
            "priority", 2, caught_up_s=1.0, caught_up_bits=10e6, correction_seconds=1.0, correction_bits=10e6
        ),
        # seed 3: five points taken off; none never catches up, priority exactly 5x in both
        _row("none", 3, caught_up=0.0, caught_up_s=NAN, caught_up_bits=NAN),
        _row(
            "priority",
            3,
            correction_extra_local_steps=10,
            correction_seconds=2.0,
            correction_bits=10e6,
            caught_up_s=2.0,
            caught_up_bits=20e6,
        ),
        # seed 4: no retrain run to compare with: left out
        _row("none", 4),
        _row("priority", 4),
    ]
    pd.DataFrame(results).to_parquet(tmp_path / "results.parquet")
    for seed, (before, after) in {1: (1.0, 0.995), 2: (0.9, 0.9), 3: (0.95, 0.90), 4: (1.0, 0.0)}.items():
        _evaluations(tmp_path / f"regime_x-leave-none-s{seed}", before, after)

    rows = script.rows(tmp_path).set_index("seed")
    assert rows["drop"].round(6).to_dict() == {1: 0.005, 2: 0.0, 3: 0.05}
    assert rows["already"].tolist() == [True, False, False]
    assert rows["none_meets"].tolist() == [True, False, False]
    assert rows["priority_meets"].tolist() == [True, True, True]
    lines = script.table([tmp_path]).splitlines()
    # under a point (seeds 1, 2): 1 already there, none 5x in 1, priority in 2; it stepped in
    # seed 1 only, whose whole correction is 10 / 4 = 2.5x and 100 / 50 = 2.0x cheaper than the replay
    assert lines[2:] == [
        f"| {tmp_path} | regime_x | a point or more | 1 | 0 | 0 | 1 | 1 | 5.0x | 10.0x |",
        f"| {tmp_path} | regime_x | under a point | 2 | 1 | 1 | 2 | 1 | 2.5x | 2.0x |",
    ]


def test_a_run_without_a_leave_has_no_deletion_drop(analysis_script, tmp_path) -> None:
    script = analysis_script("deletion_drop_experiment")
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        [{"round": 0, "stage": "round", "split": "retain", "device": None, "accuracy": 0.5}]
    ).to_parquet(run / "evaluations.parquet")
    with pytest.raises(ValueError, match="no retained accuracy just before and after a leave"):
        script.deletion_drop(run)
