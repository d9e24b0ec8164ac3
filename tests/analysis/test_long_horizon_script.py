"""analysis/long_horizon_experiment.py: the catch-up target against the network's level, and after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def _run(
    directory: Path,
    name: str,
    curve: dict[int, tuple[float, float]],
    events: list[tuple[int, str]],
    before: tuple[int, float] | None = None,
) -> Path:
    """A run directory with network-wide retained evaluations (round -> (accuracy, loss)) and
    events; ``before`` adds the evaluation just before the event.  A per-device row at 0.0
    accuracy beside each round's must be ignored."""
    run = directory / name
    run.mkdir(parents=True)
    rows = []
    for r, (acc, loss) in curve.items():
        rows.append(
            {"round": r, "stage": "round", "split": "retain", "device": np.nan, "accuracy": acc, "loss": loss}
        )
        rows.append(
            {"round": r, "stage": "round", "split": "retain", "device": 0.0, "accuracy": 0.0, "loss": 9.0}
        )
        rows.append(
            {"round": r, "stage": "round", "split": "test", "device": np.nan, "accuracy": 0.0, "loss": 9.0}
        )
    if before is not None:
        r, acc = before
        rows.append(
            {
                "round": r,
                "stage": "before_event",
                "split": "retain",
                "device": np.nan,
                "accuracy": acc,
                "loss": 0.2,
            }
        )
    pd.DataFrame(rows).to_parquet(run / "evaluations.parquet")
    pd.DataFrame([{"round": r, "kind": k} for r, k in events]).to_parquet(run / "events.parquet")
    return run


def _seed(
    directory: Path, seed: int, before: float, none: list[float], target: float, later: list[float]
) -> None:
    """A leave at round 5; none's rounds 5.. with ``none``; retrain replays to round 10 (``target``)
    and goes on with ``later`` (losses 0.1 at the replay's end, then 0.5, 0.3, ...)."""
    _run(
        directory,
        f"regime_x-leave-none-s{seed}",
        {5 + i: (a, 0.4) for i, a in enumerate(none)},
        [(5, "leave")],
        before=(5, before),
    )
    ref = {r: (0.5, 1.0) for r in range(5, 10)}
    ref[10] = (target, 0.1)
    ref.update({11 + i: (a, 0.5 - 0.2 * i) for i, a in enumerate(later)})
    _run(directory, f"regime_x-leave-retrain-s{seed}", ref, [(5, "leave"), (10, "correction_end")])


def test_a_seeds_figures_against_hand_values(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("long_horizon_experiment")
    _seed(tmp_path, 1, before=0.80, none=[0.7, 0.85, 0.9, 0.88], target=0.95, later=[0.85, 0.9])
    row = script.seed_row(tmp_path / "regime_x-leave-none-s1", tmp_path / "regime_x-leave-retrain-s1")
    assert row == pytest.approx(
        {
            "before": 0.80,
            "target": 0.95,
            "none_best": 0.9,
            "retrain_low": 0.85,
            "retrain_last": 0.9,
            "loss_end": 0.1,
            "loss_high": 0.5,
        }
    )


def test_the_summary_counts_the_seeds(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("long_horizon_experiment")
    # seed 1: target 0.15 above before (counted, as is seed 3's 0.05), none short of it,
    # retrain falls 0.10 below it
    _seed(tmp_path, 1, before=0.80, none=[0.7, 0.85, 0.9], target=0.95, later=[0.85, 0.9])
    # seed 2: target 0.005 above before (not counted), none gets there, retrain holds
    _seed(tmp_path, 2, before=0.995, none=[0.9, 0.995], target=1.0, later=[0.98])
    # seed 3: the retrain run ends with its replay; a none run alone is left out
    _seed(tmp_path, 3, before=0.90, none=[0.95], target=0.95, later=[])
    _run(tmp_path, "regime_x-leave-none-s4", {5: (0.5, 1.0)}, [(5, "leave")], before=(5, 0.5))
    df = script.load(tmp_path)
    assert list(df["seed"]) == [1, 2, 3]
    assert np.isnan(df.set_index("seed").loc[3, "retrain_low"])
    text = script.table(df)
    assert "| regime_x | 3 | 0.900 | 0.950 | +0.050 | 0.950 | – | – | 0.10 → – |" in text
    summary = text.splitlines()[-1]
    assert "| all 3 | 0.898 | 0.967 |" in summary  # (0.8 + 0.995 + 0.9) / 3, (0.95 + 1 + 0.95) / 3
    assert "2/3 above by > 0.01" in summary
    assert "1/3 never within 0.01" in summary
    assert "1/3 more than 0.05 below the target" in summary
    assert "| 0.940 |" in summary  # retrain's last, over the seeds that go on: (0.9 + 0.98) / 2


def test_a_directory_without_pairs_is_an_error(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("long_horizon_experiment")
    _run(tmp_path, "regime_x-leave-none-s1", {5: (0.5, 1.0)}, [(5, "leave")], before=(5, 0.5))
    with pytest.raises(ValueError, match="no regime with both a none and a retrain leave"):
        script.load(tmp_path)


def test_plain_runs_side_by_side(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("long_horizon_experiment")
    a = _run(tmp_path, "a", {r: (r / 10, 1 - r / 10) for r in range(5)}, [])
    b = _run(tmp_path, "b", {r: (0.5, 0.5) for r in range(3)}, [])
    lines = script.runs_table([a, b], every=2).splitlines()
    assert lines[2:] == [
        "| 0 | 0.000 | 1.00 | 0.500 | 0.50 |",
        "| 2 | 0.200 | 0.80 | 0.500 | 0.50 |",
        "| 4 | 0.400 | 0.60 | – | – |",
    ]
