"""analysis/teacher_target_experiment.py: the two targets of local correction, paired by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats


def _row(policy: str, seed: int, **values: float) -> dict:
    row = {
        "regime": "regime_x",
        "event": "leave",
        "policy": policy,
        "seed": seed,
        "retain_acc": 0.8,
        "retain_acc_early": 0.6,
        "forget_acc": 0.1,
        "test_acc": 0.7,
        "mia_auc": 0.5,
        "correction_seconds": 10.0 if policy == "retrain" else 1.0,
        "correction_bits": 100e6 if policy == "retrain" else 1e6,
        "correction_extra_local_steps": 0,
        "caught_up": 1.0,
        "caught_up_s": 1.0,
        "caught_up_bits": 10e6,
    }
    return {**row, **values}


def _references(seeds: range) -> list[dict]:
    return [_row(p, s, mia_auc=0.5 + 0.01 * s) for p in ("none", "retrain") for s in seeds]


def test_the_second_directory_s_corrections_become_the_teacher_s(analysis_script) -> None:
    script = analysis_script("teacher_target_experiment")
    answers = pd.DataFrame([*_references(range(1, 3)), _row("priority", 1), _row("priority", 2)])
    teacher = pd.DataFrame(
        [*_references(range(1, 3)), _row("priority", 1, retain_acc=0.9), _row("priority", 2, retain_acc=0.7)]
    )
    df = script.combine(answers, teacher)
    counts = df.groupby("policy").size().to_dict()
    assert counts == {"none": 2, "retrain": 2, "priority": 2, "priority (teacher)": 2}
    taught = df[df["policy"] == "priority (teacher)"].set_index("seed")["retain_acc"]
    assert taught.to_dict() == {1: 0.9, 2: 0.7}
    assert script._policies(df) == ("none", "priority", "priority (teacher)")


def test_a_reference_run_that_differs_between_the_directories_is_an_error(analysis_script) -> None:
    script = analysis_script("teacher_target_experiment")
    answers = pd.DataFrame(_references(range(1, 3)))
    changed = [
        _row("retrain", 2, mia_auc=0.9) if (r["policy"], r["seed"]) == ("retrain", 2) else r
        for r in _references(range(1, 3))
    ]
    with pytest.raises(
        ValueError, match=r"regime_x retrain seed 2: mia_auc is 0\.52 in the first directory and 0\.9"
    ):
        script.combine(answers, pd.DataFrame(changed))


def test_load_needs_exactly_two_directories(analysis_script) -> None:
    script = analysis_script("teacher_target_experiment")
    with pytest.raises(ValueError, match=r"3 directories given; expected two"):
        script.load([Path("a"), Path("b"), Path("c")])


def test_teacher_against_answers_pairs_the_seeds(analysis_script) -> None:
    script = analysis_script("teacher_target_experiment")
    early_gain = [0.10, 0.20, 0.30]
    final_gain = [0.01, -0.02, 0.04]
    rows = _references(range(1, 4))
    for s in (1, 2, 3):
        rows.append(_row("priority", s, correction_extra_local_steps=40, caught_up_s=3.0))  # 3.3x: no
        rows.append(
            _row(
                "priority (teacher)",
                s,
                retain_acc_early=0.6 + early_gain[s - 1],
                retain_acc=0.8 + final_gain[s - 1],
                correction_extra_local_steps=[20, 40, 60][s - 1],
                caught_up_s=[1.0, 2.0, 3.0][s - 1],  # 10x and 5x in seconds: seeds 1 and 2 meet it
            )
        )
    table = script.teacher_against_answers(pd.DataFrame(rows))
    line = next(row for row in table.splitlines() if row.startswith("| regime_x | priority |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "3"

    def expected(values: list[float]) -> tuple[str, str]:
        d = np.array(values)
        half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
        p = stats.ttest_1samp(d, 0.0).pvalue
        return f"{d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}]", f"{p:.2f}"

    assert (cells[3], cells[4]) == expected(early_gain)
    assert (cells[5], cells[6]) == expected(final_gain)
    assert (cells[7], cells[8]) == ("+0.00 [+0.00, +0.00]", "–")  # the same AUC in every seed: no test
    assert cells[9] == "40 / 40"
    assert cells[10] == "0/3 / 2/3"
