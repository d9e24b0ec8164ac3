"""analysis/paired_priority_experiment.py: priority in two directories, leave by leave."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from scipy import stats

GATE_REASON = (
    "accuracy on the retained devices' samples +0.000 since before the event "
    "(a fall of less than accuracy_drop 0.01)"
)


def _directory(root: Path, name: str, rows: list[dict], ends: dict[int, dict]) -> Path:
    """``results.parquet`` of ``rows`` and, per priority seed in ``ends``, a run directory whose
    ``events.parquet`` holds that ``correction_end`` detail."""
    directory = root / name
    directory.mkdir()
    pd.DataFrame(rows).to_parquet(directory / "results.parquet")
    for seed, end in ends.items():
        run = directory / f"regime_x-leave-priority-s{seed}"
        run.mkdir()
        events = [{"round": 14, "kind": "correction_end", "device": -1, "detail": json.dumps(end)}]
        pd.DataFrame(events).to_parquet(run / "events.parquet")
    return directory


def _row(
    policy: str, seed: int, early: float = 0.5, end: float = 0.9, s: float = 0.0, bits: float = 0.0
) -> dict:
    return {
        "regime": "regime_x",
        "event": "leave",
        "policy": policy,
        "seed": seed,
        "retain_acc_early": early,
        "retain_acc": end,
        "correction_seconds": s,
        "correction_bits": bits,
        "caught_up": 1.0,
        "caught_up_s": 0.0,
        "caught_up_bits": 0.0,
    }


def test_priority_is_paired_by_seed_with_its_gate_and_costs(analysis_script, tmp_path) -> None:
    script = analysis_script("paired_priority_experiment")
    replay = [_row("retrain", seed, s=10.0, bits=100e6) for seed in (1, 2, 3)]
    a = _directory(
        tmp_path,
        "a",
        [
            *replay,
            _row("priority", 1, early=0.6, end=0.90),  # gated at the leave: nothing spent
            _row("priority", 2, early=0.5, end=0.80, s=2.0, bits=20e6),  # gated a round later
            _row("priority", 3, early=0.7, end=0.95, s=1.0, bits=10e6),
        ],
        {
            1: {"reason": GATE_REASON, "rounds": 0},
            2: {"reason": GATE_REASON, "rounds": 1},
            3: {"reason": "every residual within tolerance", "rounds": 1},
        },
    )
    b = _directory(
        tmp_path,
        "b",
        [
            # b's own replay, twice a's: each directory's ratio is against its own retrain runs
            *[_row("retrain", seed, s=20.0, bits=200e6) for seed in (3, 2, 1, 0)],
            _row("priority", 0),  # no seed 0 in a: left out
            _row("priority", 3, early=0.6, end=0.95, s=3.0, bits=60e6),  # rows out of seed order
            _row("priority", 1, early=0.4, end=0.90, s=6.0, bits=60e6),
            _row("priority", 2, early=0.5, end=0.85, s=6.0, bits=30e6),
        ],
        {seed: {"reason": "round budget spent", "rounds": 5} for seed in (0, 1, 2, 3)},
    )
    line = script.table(a, b).splitlines()[-1]
    early = stats.ttest_1samp([0.2, 0.0, 0.1], 0.0).pvalue
    end = stats.ttest_1samp([0.0, -0.05, 0.0], 0.0).pvalue
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:4] == ["regime_x", "3", "1", "1"]
    assert cells[4].startswith("+0.10 [") and cells[5] == f"{early:.2f}"
    assert cells[6].startswith("-0.02 [") and cells[7] == f"{end:.2f}"
    # a: 1.0 s and 10 Mbit on the mean against a replay of 10 s and 100 Mbit; b: 5.0 s and
    # 50 Mbit against 20 s and 200 Mbit
    assert cells[8:] == ["1.00 / 5.00", "10 / 50", "10.0x / 4.0x", "10.0x / 4.0x"]


def test_a_seed_without_a_replay_is_left_out_of_the_ratio_and_counted(analysis_script, tmp_path) -> None:
    script = analysis_script("paired_priority_experiment")
    rows = [
        _row("retrain", 1, s=10.0, bits=100e6),  # seed 2 has no retrain run
        _row("priority", 1, s=1.0, bits=10e6),
        _row("priority", 2, s=9.0, bits=90e6),
    ]
    ends = {seed: {"reason": "round budget spent", "rounds": 5} for seed in (1, 2)}
    a = _directory(tmp_path, "a", rows, ends)
    b = _directory(tmp_path, "b", rows, ends)
    cells = [c.strip() for c in script.table(a, b).splitlines()[-1].strip("|").split("|")]
    assert cells[1] == "2"  # both seeds are paired for the accuracies
    assert cells[8:10] == ["5.00 / 5.00", "50 / 50"]  # the means over both seeds
    # the ratio is seed 1's alone (10 / 1), not seed 1's replay over both seeds' mean (10 / 5)
    assert cells[10:] == ["10.0x (1 of 2 seeds) / 10.0x (1 of 2 seeds)"] * 2
