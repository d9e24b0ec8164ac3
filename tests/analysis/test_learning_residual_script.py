"""analysis/learning_residual_experiment.py: R_learn's parts against the measured loss."""

from __future__ import annotations

from pathlib import Path

import pytest

BASE = {"devices": [0, 1, 2], "loss_devices": [0.5, 1.0, 1.5]}


def test_a_leave_compares_the_shock_with_the_retained_devices_loss_jump(
    tmp_path: Path, analysis_script, write_decisions
) -> None:
    first = {
        "event": "leave",
        "affected": [0, 2],  # device 1 left
        "actions": ["none", "local_correction"],
        "residuals": {"learn": [10.0, 6.0], "shock": [0.5, 0.25], "loss_devices": [0.75, 2.5]},
        "baseline": BASE,
    }
    later = {**first, "baseline": {}, "actions": ["none", "none"]}
    write_decisions(tmp_path, "regime_x-leave-priority-s1", kind="leave", device=1, decisions=[first, later])
    write_decisions(tmp_path, "regime_x-leave-none-s1", kind="leave", device=1, decisions=[first])  # not read
    (tmp_path / "regime_x-leave-priority-s2").mkdir()  # unfinished: skipped
    module = analysis_script("learning_residual_experiment")
    df = module.first_decisions(tmp_path)
    assert df["run"].tolist() == ["regime_x-leave-priority-s1"]
    row = df.iloc[0]
    assert row["pl"] == pytest.approx(16.0 - 0.75)
    assert row["shock"] == pytest.approx(0.75)
    assert row["shock_share"] == pytest.approx(0.75 / 16.0)
    # Devices 0 and 2 were measured before and after: (0.75 - 0.5) + (2.5 - 1.5).
    assert row["loss_jump"] == pytest.approx(1.25)
    assert row["loss_ratio"] == pytest.approx(3.25 / 2.0)
    assert bool(row["acted"])
    assert "| regime_x | leave | 1 | 15 ± 0 | 0.750 ± 0.000 | 4.7e-02 ± 0.0e+00 | 1.250 ± 0.000 " in (
        module.table(df)
    )


def test_a_join_compares_the_newcomer_s_loss_with_the_devices_before_it(
    tmp_path: Path, analysis_script, write_decisions
) -> None:
    for seed, newcomer_loss in ((1, 3.0), (2, 1.0)):
        first = {
            "event": "join",
            "affected": [1, 3],
            "actions": ["none", "none"],
            "residuals": {"learn": [4.0, 4.0], "shock": [0.0, 0.0], "loss_devices": [1.0, newcomer_loss]},
            "baseline": BASE,
        }
        write_decisions(tmp_path, f"regime_x-join-priority-s{seed}", kind="join", device=3, decisions=[first])
    module = analysis_script("learning_residual_experiment")
    df = module.first_decisions(tmp_path)
    # The devices' mean loss before the join is 1.0.
    assert sorted(df["newcomer_ratio"]) == pytest.approx([1.0, 3.0])
    assert not df["acted"].any()
    line = next(x for x in module.table(df).splitlines() if "| join |" in x)
    assert "| 2.00 ± 1.00 | 0/2 |" in line
