"""analysis/event_first_experiment.py: priority with and without event_first, paired by seed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

SINGLE = ("local", "proximal", "sync", "topology")


def _directory(root: Path, name: str, rows: list[dict], event_first: bool | None, write_decisions) -> Path:
    """A results directory: ``results.parquet`` and, per priority row, a run directory with a
    manifest stating ``event_first`` (None: not stated) and one decision per ``actions`` entry."""
    directory = root / name
    directory.mkdir()
    for row in rows:
        if row["policy"] != "priority":
            continue
        run = f"{row['regime']}-{row['event']}-priority-s{row['seed']}"
        write_decisions(directory, run, [{"actions": a} for a in row.pop("actions")], kind=row["event"])
        tolerances = {} if event_first is None else {"event_first": event_first}
        manifest = {"scenario": {"correction": {"tolerances": tolerances}}}
        (directory / run / "manifest.json").write_text(json.dumps(manifest))
    pd.DataFrame(rows).to_parquet(directory / "results.parquet")
    return directory


def _row(policy: str, seed: int, acc: float, early: float = 0.5, actions=None) -> dict:
    row = {
        "regime": "regime_x",
        "event": "join",
        "policy": policy,
        "seed": seed,
        "newcomer_acc": acc,
        "newcomer_acc_early": early,
    }
    if policy == "priority":
        row["actions"] = actions
    return row


def test_the_two_kinds_are_paired_by_seed_against_each_other_and_the_best_single_action(
    analysis_script, tmp_path, write_decisions
) -> None:
    script = analysis_script("event_first_experiment")
    singles = [
        _row(p, s, acc) for s in (1, 2, 3) for p, acc in zip(SINGLE, (0.80, 0.70, 0.60, 0.50), strict=True)
    ]
    main = _directory(
        tmp_path,
        "main",
        [
            *singles,
            _row("priority", 1, 0.80, actions=[["local_correction"], ["sync_scheduling"]]),
            _row("priority", 2, 0.78, actions=[["local_correction"]]),
            _row("priority", 3, 0.79, actions=[["local_correction"]]),
        ],
        True,
        write_decisions,
    )
    off = _directory(
        tmp_path,
        "off",
        [
            _row("priority", 1, 0.50, actions=[["sync_scheduling"], ["sync_scheduling"]]),
            _row("priority", 2, 0.78, actions=[["local_correction"]]),  # the same decisions
            _row("priority", 3, 0.60, actions=[["sync_scheduling"]]),
        ],
        False,
        write_decisions,
    )
    df = script.load([main, off])
    assert sorted(df["policy"].unique()) == sorted([script.ON, script.OFF, *SINGLE])
    early, line = script.table(df).splitlines()[-2:]
    # Two rounds on every accuracy is 0.5: every difference is 0 and has no p value.
    cells = [c.strip() for c in early.strip("|").split("|")]
    assert cells[:9] == ["regime_x", "join", "+2 rounds", "3", "2", "local", "0.50", "0.50", "0.50"]
    assert [cells[i] for i in (10, 12, 14)] == ["–", "–", "–"]
    assert cells[13].startswith("+0.00 [")
    cells = [c.strip() for c in line.strip("|").split("|")]
    # regime, event, when, seeds, decisions differ (seeds 1 and 3), best single, its mean, off, on
    assert cells[:9] == ["regime_x", "join", "end", "3", "2", "local", "0.80", "0.63", "0.79"]
    # on - off: +0.30, 0, +0.19: mean 0.1633
    on_off = (0.30 + 0.0 + 0.19) / 3
    assert cells[13].startswith(f"+{on_off:.2f} [")
    # off - best: -0.30, -0.02, -0.20; on - best: 0, -0.02, -0.01
    assert cells[9].startswith(f"{(-0.30 - 0.02 - 0.20) / 3:.2f} [")
    assert cells[11].startswith(f"{(0.0 - 0.02 - 0.01) / 3:.2f} [")
    # The paired t test's p value of off - best, against scipy's.
    expected = stats.ttest_1samp([-0.30, -0.02, -0.20], 0.0).pvalue
    assert cells[10] == f"{expected:.2f}"


def test_a_priority_run_that_does_not_state_the_option_is_an_error(
    analysis_script, tmp_path, write_decisions
) -> None:
    script = analysis_script("event_first_experiment")
    old = _directory(tmp_path, "old", [_row("priority", 1, 0.5, actions=[["none"]])], None, write_decisions)
    with pytest.raises(ValueError, match=r"does not state tolerances\.event_first"):
        script.load([old])
