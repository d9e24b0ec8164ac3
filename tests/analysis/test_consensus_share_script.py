"""analysis/consensus_share_experiment.py: R_cons / M before and after each event."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


def test_the_share_sums_over_groups_at_the_first_decision(
    tmp_path: Path, analysis_script, write_decisions
) -> None:
    first = {
        "residuals": {"consensus": [1.0, 3.0], "magnitude": [10.0, 30.0]},  # 4 / 40
        "baseline": {"consensus": [2.0, 2.0], "magnitude": [5.0, 5.0]},  # 4 / 10
        "syncs": 2,
    }
    later = {"residuals": {"consensus": [9.0, 9.0], "magnitude": [1.0, 1.0]}, "syncs": 0}
    write_decisions(tmp_path / "a", "regime_x-leave-priority-s1", [first, later])
    second = {
        "residuals": {"consensus": [0.0, 2.0], "magnitude": [5.0, 5.0]},  # 0.2
        "baseline": {"consensus": [1.0, 0.0], "magnitude": [0.0, 0.0]},  # no size: NaN
        "syncs": 0,
    }
    write_decisions(tmp_path / "b", "regime_x-leave-priority-s2", [second])
    write_decisions(
        tmp_path / "b", "regime_x-leave-priority-s3", [{"residuals": {"consensus": [1.0, 1.0]}}]
    )  # older
    write_decisions(tmp_path / "b", "regime_x-leave-none-s1", [first])  # another policy: not read
    module = analysis_script("consensus_share_experiment")
    df = module.shares([tmp_path / "a", tmp_path / "b"])
    assert len(df) == 2
    by_run = df.set_index("run")
    assert by_run.loc[f"{tmp_path / 'a'}/regime_x-leave-priority-s1", ["before", "after"]].tolist() == (
        pytest.approx([0.4, 0.1])
    )
    row = by_run.loc[f"{tmp_path / 'b'}/regime_x-leave-priority-s2"]
    assert row["after"] == pytest.approx(0.2) and pd.isna(row["before"])
    # Mean and range over the runs (NaN left out), and the runs whose first decision synced.
    assert "| regime_x | leave | 2 | 0.4 (0.4 … 0.4) | 0.15 (0.1 … 0.2) | 1/2 |" in module.table(df)
