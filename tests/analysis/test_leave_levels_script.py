"""analysis/leave_levels_experiment.py: retained accuracy before a leave, beside retrain's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

EVENT = 4  # the leave's round; device 2 leaves


def _round_rows(r: int, per_device: dict[int, float], network: float, stage: str = "round") -> list[dict]:
    rows = [
        {"round": r, "stage": stage, "split": "retain", "device": float(d), "accuracy": a}
        for d, a in per_device.items()
    ]
    rows += [{"round": r, "stage": stage, "split": "retain", "device": float("nan"), "accuracy": network}]
    rows += [
        {"round": r, "stage": stage, "split": "test", "device": float("nan"), "accuracy": 0.0}
    ]  # not retain
    return rows


def _run(directory: Path, name: str, rows: list[dict]) -> None:
    (directory / name).mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(directory / name / "evaluations.parquet")


def _policy_run(directory: Path, policy: str, seed: int, ends: list[float]) -> None:
    """Rounds 0..3 with the leaver (its model at 0: the mean leaves it out), then its
    deletion and rounds 4.. at ``ends``, network-wide."""
    rows = []
    for r in range(EVENT):
        rows += _round_rows(r, {0: 0.5 + 0.1 * r, 1: 0.5 + 0.1 * r, 2: 0.0}, network=0.0)
    rows += _round_rows(EVENT, {0: 0.2, 1: 0.2}, network=0.2, stage="after_event")
    for i, a in enumerate(ends):
        rows += _round_rows(EVENT + i, {0: a, 1: a}, network=a)
    _run(directory, f"regime_x-leave-{policy}-s{seed}", rows)


def _retrain_run(directory: Path, seed: int, replay: list[float], ends: list[float]) -> None:
    """Rounds 0..3 with the leaver, then a replay of rounds 4..7 and the rounds after it."""
    rows = []
    for r in range(EVENT):
        rows += _round_rows(r, {0: 0.5, 1: 0.5, 2: 0.5}, network=0.5)
    for i, a in enumerate(replay + ends):
        rows += _round_rows(EVENT + i, {0: a, 1: a}, network=a)
    _run(directory, f"regime_x-leave-retrain-s{seed}", rows)


def test_levels_are_averaged_and_paired_by_seed(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("leave_levels_experiment")
    d = tmp_path / "runs"
    results = []
    for seed in (1, 2):
        # before the leave, the last two rounds of devices 0 and 1: (0.7 + 0.8) / 2 = 0.75
        _policy_run(d, "none", seed, ends=[0.3, 0.6, 0.7 + 0.02 * seed, 0.7 + 0.02 * seed])
        _policy_run(d, "local", seed, ends=[0.4, 0.8, 0.9, 0.9])
        # the replay's last two rounds (6, 7): 0.85; the end: 0.95
        _retrain_run(d, seed, replay=[0.2, 0.5, 0.8, 0.9], ends=[0.9, 0.95, 0.95])
        for policy, end_round in (("none", 7), ("local", 7), ("retrain", 2 * EVENT - 1)):
            results.append(
                {
                    "regime": "regime_x",
                    "event": "leave",
                    "policy": policy,
                    "seed": seed,
                    "event_round": EVENT,
                    "correction_end_round": end_round,
                }
            )
    _run(d, "regime_x-leave-none-s3", [])  # no retrain run for seed 3: left out
    results.append(
        {"regime": "regime_x", "event": "leave", "policy": "none", "seed": 3, "event_round": EVENT}
    )
    pd.DataFrame(results).to_parquet(d / "results.parquet")

    df = script.levels(d, rounds=2).set_index(["policy", "seed"])
    assert sorted(df.index) == [("local", 1), ("local", 2), ("none", 1), ("none", 2)]
    assert df["before"].tolist() == pytest.approx([0.75] * 4)
    assert df["replay_level"].tolist() == pytest.approx([0.85] * 4)
    assert df["retrain_end"].tolist() == pytest.approx([0.95] * 4)
    assert df.loc[("none", 2), "end"] == pytest.approx(0.74)
    assert df.loc[("local", 1), "end"] == pytest.approx(0.9)

    lines = script.table(df.reset_index(), rounds=2).splitlines()
    (none,) = [line for line in lines if "| none |" in line]
    cells = [c.strip() for c in none.strip("|").split("|")]
    assert cells[3] == "2"
    assert cells[4] == "-0.10 [-0.10, -0.10]" and cells[5] == "–"  # 0.75 − 0.85 in both seeds
    assert cells[6].startswith("-0.22 [") and cells[7] != "–"  # 0.72 and 0.74 against 0.95
    assert cells[8].startswith("-0.02 [")  # 0.72 and 0.74 against 0.75


def test_a_run_without_enough_rounds_before_the_leave_is_an_error(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("leave_levels_experiment")
    _policy_run(tmp_path, "none", 1, ends=[0.5])
    with pytest.raises(ValueError, match="4 evaluated rounds before the leave, 5 asked"):
        script.before_leave(tmp_path / "regime_x-leave-none-s1", EVENT, rounds=5)
