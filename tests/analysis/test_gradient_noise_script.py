"""analysis/gradient_noise_experiment.py: the noise-free share of E at each run's first decision."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_the_share_is_read_from_the_first_decision_of_each_run(
    tmp_path: Path, analysis_script, write_decisions
) -> None:
    first = {"residuals": {"energy": [4.0, 2.0], "energy_unbiased": [1.0, -0.5]}}
    later = {"residuals": {"energy": [4.0, 2.0], "energy_unbiased": [4.0, 2.0]}}
    write_decisions(tmp_path, "regime_x-join-priority-s1", [first, later], "join")
    write_decisions(
        tmp_path,
        "regime_x-join-priority-s2",
        [{"residuals": {"energy": [2.0, 1.0], "energy_unbiased": [0.0, 0.5]}}],
        "join",
    )
    write_decisions(tmp_path, "regime_x-join-none-s1", [], "join")  # another policy: not read
    write_decisions(
        tmp_path, "regime_x-join-priority-shared-s1", [first], "join"
    )  # shared adapters: not read
    (tmp_path / "regime_x-join-priority-s3").mkdir()  # unfinished, no events: skipped
    module = analysis_script("gradient_noise_experiment")
    df = module.shares(tmp_path)
    assert sorted(df["run"].unique()) == ["regime_x-join-priority-s1", "regime_x-join-priority-s2"]
    assert df.set_index(["run", "group"])["share"].to_dict() == pytest.approx(
        {
            ("regime_x-join-priority-s1", 0): 0.25,
            ("regime_x-join-priority-s1", 1): -0.25,
            ("regime_x-join-priority-s2", 0): 0.0,
            ("regime_x-join-priority-s2", 1): 0.5,
        }
    )
    # Per group the mean over seeds, and the range over seeds and groups.
    assert "| regime_x | join | 2 | +0.125, +0.125 | -0.250 … +0.500 |" in module.table(df)
