"""analysis/best_policy_experiment.py: the cheapest catch-up of any policy, seed by seed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


def _row(policy: str, seed: int, regime: str = "regime_x", **values: float) -> dict:
    row = {
        "regime": regime,
        "event": "leave",
        "policy": policy,
        "seed": seed,
        "correction_seconds": 0.0,
        "correction_bits": 0.0,
        "caught_up": 1.0,
        "caught_up_s": 1.0,
        "caught_up_bits": 1e6,
    }
    return {**row, **values}


def _never(policy: str, seed: int) -> dict:
    return _row(policy, seed, caught_up=0.0, caught_up_s=float("nan"), caught_up_bits=float("nan"))


def _write(directory: Path, rows: list[dict]) -> Path:
    directory.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(directory / "results.parquet")
    return directory


ROWS = [
    _row("retrain", 1, correction_seconds=10.0, correction_bits=100e6),
    _row("retrain", 2, correction_seconds=20.0, correction_bits=200e6),
    _row("retrain", 3, correction_seconds=10.0, correction_bits=100e6),
    _row("federaser", 1, caught_up_s=0.1, caught_up_bits=1e6),  # a reference: never the best
    # seed 1: the lowest seconds (none, 10 / 4) and the lowest bits (local, 100 / 10) come
    # from two policies; neither is 5x in both
    _row("none", 1, caught_up_s=4.0, caught_up_bits=50e6),
    _row("local", 1, caught_up_s=5.0, caught_up_bits=10e6),
    # seed 2: local 5x in both exactly (20 / 4, 200 / 40), none already there
    _row("none", 2, caught_up_s=0.0, caught_up_bits=0.0),
    _row("local", 2, caught_up_s=4.0, caught_up_bits=40e6),
    # seed 3: no policy catches up
    _never("none", 3),
    _never("local", 3),
    # another regime without a retrain run: left out
    _row("none", 1, regime="regime_y"),
]


def test_the_lowest_costs_are_taken_per_seed_each_on_its_own(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("best_policy_experiment")
    df = script.load([_write(tmp_path / "regimes", ROWS)])
    seeds = script.per_seed(df).set_index("seed")
    assert list(seeds["regime"].unique()) == ["regime_x"]
    assert seeds.loc[1, "saving_s"] == pytest.approx(2.5) and seeds.loc[1, "saving_bits"] == pytest.approx(
        10.0
    )
    assert seeds.loc[1, "meets"] == ""
    assert seeds.loc[2, "saving_s"] == float("inf") and seeds.loc[2, "meets"] == "local, none"
    assert pd.isna(seeds.loc[3, "saving_s"]) and pd.isna(seeds.loc[3, "saving_bits"])
    assert seeds.loc[1, "policies"] == "local, none"  # federaser is a reference, not a correction


def test_the_table_counts_the_seeds(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("best_policy_experiment")
    df = script.load([_write(tmp_path / "regimes", ROWS)])
    (row,) = [line for line in script.table(df).splitlines() if line.startswith("| regime_x |")]
    assert row == (
        "| regime_x | local, none | 3 | 1 | [2.5x, already there] | 1/3 | [10.0x, already there] | 2/3 "
        "| 1/3 | local 1, none 1 |"
    )


def test_a_run_in_two_directories_is_an_error(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("best_policy_experiment")
    a = _write(tmp_path / "a", ROWS[:2])
    b = _write(tmp_path / "b", ROWS[:1])
    with pytest.raises(ValueError, match="regime_x retrain seed 1 is in more than one directory"):
        script.load([a, b])


def test_the_end_table_pairs_each_policy_with_retrain_by_seed(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("best_policy_experiment")
    gaps = {  # retain, forget, MIA AUC minus the same seed's retrain run
        ("none", 1): (-0.02, 0.0, 0.01),
        ("none", 2): (-0.04, 0.0, -0.01),
        ("none", 3): (0.0, 0.0, 0.03),
        ("local", 1): (0.03, 0.0, 0.0),
        ("local", 2): (0.74 - 0.75, 0.0, 0.0),  # a point below, up to rounding: counts as at most a point
    }
    rows = [dict(r) for r in ROWS if r["regime"] == "regime_x"]
    for r in rows:
        g = gaps.get((r["policy"], r["seed"]))
        if g is not None:
            r.update(retain_acc_vs_retrain=g[0], forget_acc_vs_retrain=g[1], mia_auc_vs_retrain=g[2])
    rows.append(_row("sync", 1))  # no figures against retrain: left out
    df = script.load([_write(tmp_path / "regimes", rows)])
    lines = {line.split(" | ")[1]: line for line in script.ends_against_retrain(df).splitlines()[2:]}
    assert set(lines) == {"local", "none"}  # no retrain or federaser row, no sync without a pair
    none = lines["none"].split(" | ")
    assert none[2] == "3"
    assert none[3] == "-0.02 [-0.07, +0.03]"  # mean of −0.02, −0.04, 0; t(0.975, 2) · 0.02 / √3
    assert none[-1] == "1/3 |"  # seed 3 only; seed 1 ends 0.02 below
    local = lines["local"].split(" | ")
    assert local[2] == "2" and local[-1] == "2/2 |"
    assert local[3] == "+0.01 [-0.24, +0.26]"  # +0.03 and −0.01: mean, t(0.975, 1) · sd / √2
    assert local[6] == "–"  # forget: every difference 0, no test
