"""analysis/policy_seeds_experiment.py: priority against the best single action and against none."""

from __future__ import annotations

import math

import pandas as pd
import pytest


def _row(policy: str, seed: int, event: str = "leave", acc: float = 0.8, early: float = 0.6) -> dict:
    split = "retain" if event == "leave" else "newcomer"
    return {
        "regime": "regime_x",
        "event": event,
        "policy": policy,
        "seed": seed,
        f"{split}_acc": acc,
        f"{split}_acc_early": early,
    }


def _runs(event: str, finals: dict[str, list[float]], early: float = 0.6) -> pd.DataFrame:
    return pd.DataFrame(
        [
            _row(policy, seed, event, acc, early)
            for policy, values in finals.items()
            for seed, acc in enumerate(values, start=1)
            if not math.isnan(acc)
        ]
    )


def test_the_best_single_action_is_the_best_mean_over_the_seeds_all_policies_ran(analysis_script) -> None:
    script = analysis_script("policy_seeds_experiment")
    nan = float("nan")
    df = _runs(
        "leave",
        {
            "priority": [0.86, 0.84, 0.85, 0.10],
            "local": [0.90, 0.80, 0.70, 0.99],  # mean 0.80 over seeds 1-3
            "proximal": [0.85, 0.85, 0.85, 0.99],  # the best over seeds 1-3
            "sync": [0.50, 0.50, 0.50, nan],  # seed 4 missing: left out for every policy
            "topology": [0.60, 0.60, 0.60, 0.99],
        },
    )
    r = script.best_single(df, "leave", "")
    assert r["seeds"] == 3 and r["best"] == "proximal"
    assert r["best_mean"] == pytest.approx(0.85) and r["priority_mean"] == pytest.approx(0.85)
    # Differences +0.01, -0.01, 0: mean 0, sd 0.01, half width t(0.975, 2) 0.01 / sqrt(3).
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert r["diff"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert r["diff"]["low"] == pytest.approx(-half, rel=1e-5)
    assert r["within"] and r["bounded"]  # -0.025 >= -0.03

    worse = df.copy()
    worse.loc[(worse["policy"] == "priority") & (worse["seed"] == 3), "retain_acc"] = 0.75
    r = script.best_single(worse, "leave", "")
    # Differences +0.01, -0.01, -0.10: mean -0.0333 below the tolerance.
    assert r["diff"]["mean"] == pytest.approx(-0.1 / 3)
    assert not r["within"] and not r["bounded"]
    line = script.against_best_single(worse).splitlines()[-1]
    assert line.startswith("| regime_x | leave | end | 3 | proximal | 0.85 | 0.82 | -0.03 [")
    assert line.endswith("| no | no |")


def test_two_rounds_on_reads_the_early_accuracy(analysis_script) -> None:
    script = analysis_script("policy_seeds_experiment")
    df = _runs("join", {p: [0.9, 0.9] for p in ("priority", "local", "proximal", "sync", "topology")})
    df.loc[df["policy"] == "sync", "newcomer_acc_early"] = 0.7
    df.loc[df["policy"] == "priority", "newcomer_acc_early"] = [0.65, 0.66]
    r = script.best_single(df, "join", "_early")
    assert r["best"] == "sync" and r["diff"]["mean"] == pytest.approx(-0.045)
    assert script.best_single(df[df["policy"] != "local"], "join", "") is None  # no seed has them all


def test_against_none_pairs_the_gap_and_the_differences_by_seed(analysis_script) -> None:
    script = analysis_script("policy_seeds_experiment")
    df = _runs("join", {"none": [0.70, 0.80], "retrain": [0.90, 0.90], "priority": [0.90, 0.90]})
    df.loc[df["policy"] == "priority", "newcomer_acc_early"] = [0.8, 0.9]
    line = script.against_none(df).splitlines()[-1]
    # Gap: -0.2 and -0.1; +2 rounds: +0.2 and +0.3; end: +0.2 and +0.1.
    assert line.startswith("| regime_x | join | 2 | -0.15 [")
    assert "| +0.25 [" in line and "| +0.15 [" in line


def test_a_run_in_two_directories_is_an_error(analysis_script, tmp_path) -> None:
    script = analysis_script("policy_seeds_experiment")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        pd.DataFrame([_row("local", 1, "join")]).to_parquet(tmp_path / name / "results.parquet")
    with pytest.raises(ValueError, match="regime_x join local seed 1 is in more than one directory"):
        script.load([tmp_path / "a", tmp_path / "b"])
