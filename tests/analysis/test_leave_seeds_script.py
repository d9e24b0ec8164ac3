"""analysis/leave_seeds_experiment.py: against retrain, against the replay, priority against none."""

from __future__ import annotations

import pandas as pd
import pytest


def _row(policy: str, seed: int, **values: float) -> dict:
    row = {
        "regime": "regime_x",
        "event": "leave",
        "policy": policy,
        "seed": seed,
        "retain_acc": 0.8,
        "retain_acc_early": 0.6,
        "correction_seconds": 0.0,
        "correction_bits": 0.0,
        "correction_extra_local_steps": 0,
        "caught_up": True,
        "caught_up_s": 1.0,
        "caught_up_bits": 10e6,
    }
    return {**row, **values}


def test_a_seed_meets_the_factor_only_when_caught_up_and_cheaper_in_both(analysis_script) -> None:
    script = analysis_script("leave_seeds_experiment")
    df = pd.DataFrame(
        [
            _row("retrain", 1, correction_seconds=10.0, correction_bits=100e6),
            _row("retrain", 2, correction_seconds=10.0, correction_bits=100e6),
            _row("retrain", 3, correction_seconds=4.0, correction_bits=100e6),
            _row("none", 1, caught_up_s=2.0, caught_up_bits=20e6),  # exactly 5x in both
            _row("none", 2, caught_up_s=1.0, caught_up_bits=30e6),  # 10x in seconds, 3.3x in bits
            _row("none", 3, caught_up=False, caught_up_s=float("nan"), caught_up_bits=float("nan")),
        ]
    )
    rows = script.cost_rows(df).set_index("seed")
    assert rows["meets"].tolist() == [True, False, False]
    assert rows.loc[3, "correction_seconds_replay"] == 4.0
    table = script.against_replay(df)
    line = next(x for x in table.splitlines() if "| none |" in x)
    # Over the two seeds that caught up: replay 10 s / 100 Mbit, catch-up 1.5 s / 25 Mbit.
    assert "| 2/3 | 10.0 | 100 | 1.5 | 25 | 6.7x | 4.0x | 1/3 |" in line


def test_priority_against_none_pairs_the_seeds_and_counts_where_it_acted(analysis_script) -> None:
    script = analysis_script("leave_seeds_experiment")
    df = pd.DataFrame(
        [
            _row("none", 1, retain_acc_early=0.5, retain_acc=0.80),
            _row("none", 2, retain_acc_early=0.6, retain_acc=0.90),
            _row("priority", 1, retain_acc_early=0.7, retain_acc=0.86, correction_extra_local_steps=40),
            _row("priority", 2, retain_acc_early=0.6, retain_acc=0.90),  # nothing acted
            _row("priority", 3, retain_acc_early=0.9, retain_acc=0.99),  # no none run: left out
        ]
    )
    line = script.priority_against_none(df).splitlines()[-1]
    assert line.startswith("| regime_x | 2 | 1/2 | +0.10 [")  # differences 0.2 and 0.0
    assert "| +0.03 [" in line  # final: 0.06 and 0.0


def test_a_correction_that_waited_counts_as_acting_only_in_the_rounds_it_acted(analysis_script) -> None:
    script = analysis_script("leave_seeds_experiment")
    df = pd.DataFrame(
        [
            # waited a round (seconds above 0), then acted in none: not acted
            _row("priority", 1, correction_seconds=2.0, correction_acting_rounds=0.0),
            _row("priority", 2, correction_seconds=3.0, correction_acting_rounds=1.0),
            # from before the count (NaN): seconds above 0 mean it acted
            _row("priority", 3, correction_seconds=1.0, correction_acting_rounds=float("nan")),
            _row("priority", 4, correction_acting_rounds=float("nan")),
        ]
    )
    assert script.acted(df).tolist() == [False, True, True, False]


def test_the_whole_correction_is_set_beside_the_replay_over_the_seeds_where_it_acted(analysis_script) -> None:
    script = analysis_script("leave_seeds_experiment")
    df = pd.DataFrame(
        [
            _row("retrain", 1, correction_seconds=10.0, correction_bits=100e6),
            _row("retrain", 2, correction_seconds=20.0, correction_bits=100e6),
            _row("retrain", 3, correction_seconds=6.0, correction_bits=100e6),
            _row("priority", 1, correction_seconds=1.0, correction_bits=10e6, correction_acting_rounds=1),
            _row("priority", 2, correction_seconds=9.0, correction_bits=40e6, correction_acting_rounds=2),
            # waited a round and did nothing more: its seconds count over every seed only
            _row("priority", 3, correction_seconds=2.0, correction_bits=10e6, correction_acting_rounds=0),
        ]
    )
    line = script.whole_correction(df).splitlines()[-1]
    # Acted (seeds 1, 2): replay 15 s / 100 Mbit, correction 5 s / 25 Mbit; every seed: 12 s / 100 Mbit
    # against 4 s / 20 Mbit; seed 1 is 10x in both, seed 2 2.2x in seconds.
    assert line == "| regime_x | 3 | 2/3 | 3.0x | 4.0x | 3.0x / 5.0x | 1/2 |"


def test_a_seed_in_two_directories_is_an_error(analysis_script, tmp_path) -> None:
    script = analysis_script("leave_seeds_experiment")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        pd.DataFrame([_row("none", 1)]).to_parquet(tmp_path / name / "results.parquet")
    with pytest.raises(ValueError, match="regime_x none seed 1 is in more than one directory"):
        script.load([tmp_path / "a", tmp_path / "b"])
