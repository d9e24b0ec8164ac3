"""analysis/history_length_experiment.py: each directory against its own retrain runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _row(policy: str, seed: int, **values: float) -> dict:
    row = {
        "regime": "regime_x",
        "event": "leave",
        "event_round": 14,
        "policy": policy,
        "seed": seed,
        "retain_acc_early": 0.5,
        "retain_acc_vs_retrain": 0.0,
        "forget_acc_vs_retrain": 0.0,
        "mia_auc_vs_retrain": 0.0,
        "correction_seconds": 0.0,
        "correction_bits": 0.0,
        "correction_extra_local_steps": 0,
        "caught_up": True,
        "caught_up_s": 1.0,
        "caught_up_bits": 1e6,
    }
    return {**row, **values}


def _write(directory: Path, rows: list[dict]) -> Path:
    directory.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(directory / "results.parquet")
    return directory


def test_each_directory_is_read_against_its_own_replay(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("history_length_experiment")
    a = _write(
        tmp_path / "cap40" / "regimes",  # the same base name as b: still two directories
        [
            _row("retrain", 1, correction_seconds=8.0, correction_bits=80e6),
            _row("priority", 1, caught_up_s=2.0, caught_up_bits=10e6, correction_extra_local_steps=240),
        ],
    )
    b = _write(
        tmp_path / "cap10" / "regimes",
        [
            _row("retrain", 1, correction_seconds=8.0, correction_bits=80e6),
            _row("priority", 1, caught_up_s=4.0, caught_up_bits=20e6, correction_extra_local_steps=60),
        ],
    )
    lines = script.table([a, b]).splitlines()
    assert any(
        line.startswith(f"| regime_x | 14 | {a} | priority |") and "| 4.0x | 8.0x |" in line for line in lines
    )
    assert any(
        line.startswith(f"| regime_x | 14 | {b} | priority |") and "| 2.0x | 4.0x |" in line for line in lines
    )
    early = script.early_table([a, b]).splitlines()
    assert f"| regime_x | 14 | {b} | priority | 0.50 ± 0.00 | 0.00 ± 0.00 | 60 |" in early
    assert f"| regime_x | 14 | {a} | priority | 0.50 ± 0.00 | 0.00 ± 0.00 | 240 |" in early


def test_the_factor_is_counted_seed_by_seed_against_the_same_seeds_replay(
    analysis_script, tmp_path: Path
) -> None:
    script = analysis_script("history_length_experiment")
    d = _write(
        tmp_path / "regimes",
        [
            _row("retrain", 1, correction_seconds=10.0, correction_bits=100e6),
            _row("retrain", 2, correction_seconds=30.0, correction_bits=300e6),
            _row("retrain", 3, correction_seconds=10.0, correction_bits=100e6),
            _row("retrain", 4, correction_seconds=10.0, correction_bits=100e6),
            # seed 1: 5x and 5x exactly; seed 2: 6x seconds but 4x bits; seed 3 already there;
            # seed 4 never caught up
            _row("priority", 1, caught_up_s=2.0, caught_up_bits=20e6),
            _row("priority", 2, caught_up_s=5.0, caught_up_bits=75e6),
            _row("priority", 3, caught_up_s=0.0, caught_up_bits=0.0),
            _row("priority", 4, caught_up=False, caught_up_s=float("nan"), caught_up_bits=float("nan")),
        ],
    )
    row = next(line for line in script.table([d]).splitlines() if "| priority |" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # caught up 3/4; ratio of the means over those: 15 s / (7/3 s) = 6.4x, 150 / (95/3) = 4.7x
    assert cells[8:12] == ["3/4", "6.4x", "4.7x", "2/4"]
