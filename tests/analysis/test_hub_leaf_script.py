"""analysis/hub_leaf_experiment.py: links a correction added, its first reason, the end against none."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def test_links_and_the_end_against_none(analysis_script, write_decisions, tmp_path: Path) -> None:
    script = analysis_script("hub_leaf_experiment")
    split = {"topology_reason": "graph split into 2 components", "links_added": 2, "actions": ["topology"]}
    later = {"topology_reason": "", "links_added": 1, "actions": ["local"]}
    quiet = {"topology_reason": "", "links_added": 0, "actions": ["none"]}
    write_decisions(tmp_path, "regime_x-leave-priority-s1", [split, later])
    write_decisions(tmp_path, "regime_x-leave-priority-s2", [quiet])
    write_decisions(tmp_path, "regime_x-leave-none-s1", [quiet])
    write_decisions(tmp_path, "regime_x-leave-none-s2", [quiet])
    rows = [("none", 1, 0.50), ("none", 2, 0.60), ("priority", 1, 0.70), ("priority", 2, 0.60)]
    rows.append(("retrain", 1, 0.9))
    pd.DataFrame(
        [
            {"regime": "regime_x", "event": "leave", "policy": p, "seed": s, "retain_acc": a}
            for p, s, a in rows
        ]
    ).to_parquet(tmp_path / "results.parquet")

    links = script.link_rows(tmp_path, "priority").set_index("seed")
    assert links["links_added"].tolist() == [3, 0]
    assert links["topology_first"].tolist() == [True, False]
    table = script.hub_and_leaf(script.load([tmp_path]))
    line = next(x for x in table.splitlines() if "| priority |" in x)
    # Seed 1 adds 2 + 1 links, seed 2 none; end − none: +0.20 and 0.00.
    assert (
        f"| {tmp_path} | regime_x | priority | 2 | 1/2 | 1.5 | 1/2 | graph split into 2 components | +0.10 ["
        in line
    )
    assert "| none | 2 | 0/2 | 0.0 | 0/2 | – | – | – |" in table
