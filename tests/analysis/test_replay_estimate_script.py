"""analysis/replay_estimate_experiment.py: the engine's replay estimate, rebuilt from a run's trace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

EAGER = "correction.tolerances={learn: 1.0e-9, drift: 1.0e-12, consensus: 1.0e-12, gamma_min: 0.0}"
LATE = ("events=[{kind: leave, device: 1, round: 6}]", "training.rounds=10")


def test_the_trace_gives_the_engine_s_estimate_and_the_replay_beside_it(
    analysis_script, run_tiny, tmp_path: Path
) -> None:
    script = analysis_script("replay_estimate_experiment")
    budgeted = run_tiny(*LATE, "correction.policy=local", EAGER, "correction.budget.replay_share=0.4")
    retrain = run_tiny(*LATE, "correction.policy=retrain")
    event_round, cost, ran_s, ran_bits = script.trace_estimate(budgeted.out_dir)
    first = next(json.loads(e["detail"]) for e in budgeted.rows("events") if e["kind"] == "correction")
    # The same records replayed the same way: the engine's figures to the last bit.
    assert event_round == 6 and cost.rounds == 6
    assert (cost.seconds, cost.bits) == (
        first["replay_estimate"]["seconds"],
        first["replay_estimate"]["bits"],
    )
    assert ran_s == min(r["time_s"] for r in budgeted.rows("rounds") if r["round"] == 6)
    assert ran_bits == sum(t["delivered_bits"] for t in budgeted.rows("transfers") if t["round"] < 6)

    # As a cosim experiments directory: the leave run (here local; none where there is one)
    # beside the same seed's retrain run.
    out = tmp_path / "runs"
    shutil.copytree(budgeted.out_dir, out / "tiny-leave-local-s3")
    shutil.copytree(retrain.out_dir, out / "tiny-leave-retrain-s3")
    rows = [{"regime": "tiny", "event": "leave", "policy": p, "seed": 3} for p in ("local", "retrain")]
    pd.DataFrame(rows).to_parquet(out / "results.parquet")
    df = script.load([out])
    end = next(json.loads(e["detail"]) for e in retrain.rows("events") if e["kind"] == "correction_end")
    assert len(df) == 1
    row = df.iloc[0]
    assert row["estimate_s"] == pytest.approx(cost.seconds / end["seconds"])
    assert row["estimate_bits"] == cost.bits / end["bits"] == 1.0  # every message went whole
    assert row["as_ran_bits"] == pytest.approx(ran_bits / end["bits"])
    assert row["as_ran_bits"] > 2.0  # device 1's links and slot: most of the bits as they ran
    estimate_s = f"{row['estimate_s']:.2f}"
    assert f"| {out} | tiny | 6 | 1 | {estimate_s} ({estimate_s}–{estimate_s}) | 1.00 (1.00–1.00) |" in (
        script.ratios(df)
    )


def test_a_directory_without_a_leave_beside_a_retrain_run_is_an_error(
    analysis_script, tmp_path: Path
) -> None:
    script = analysis_script("replay_estimate_experiment")
    rows = [{"regime": "tiny", "event": "leave", "policy": "retrain", "seed": 1}]
    pd.DataFrame(rows).to_parquet(tmp_path / "results.parquet")
    with pytest.raises(ValueError, match="no leave run with a retrain run"):
        script.load([tmp_path])
