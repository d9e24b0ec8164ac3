"""analysis/allocation_experiment.py: the seed-by-seed comparison with the priority allocation."""

from __future__ import annotations

import pandas as pd
import pytest


def _row(method: str, seed: int, s: float, mbit: float, reached: bool = True) -> dict:
    return {
        "method": method,
        "budget_fraction": 0.004,
        "event": "join",
        "seed": seed,
        "common_reached": reached,
        "common_s": s,
        "common_Mbit": mbit,
    }


def test_paired_counts_the_seeds_where_priority_is_cheaper_and_averages_the_savings(analysis_script) -> None:
    script = analysis_script("allocation_experiment")
    df = pd.DataFrame(
        [
            _row("priority", 1, 2.0, 10.0),
            _row("uniform", 1, 5.0, 8.0),  # sooner, more bits
            _row("priority", 2, 3.0, 20.0),
            _row("uniform", 2, 4.0, 30.0),  # sooner, fewer bits
            _row("priority", 3, 1.0, 5.0),
            _row("uniform", 3, 9.0, 50.0, reached=False),  # not reached: left out of the pairs
            _row("full", 1, 1.0, 1.0),  # no budget: not compared
        ]
    )
    pairs = script.paired(df)
    assert len(pairs) == 1
    r = pairs.iloc[0]
    assert (r["method"], r["seeds"], r["fewer_s"], r["fewer_bits"]) == ("uniform", 2, 2, 1)
    # Differences uniform - priority: seconds 3 and 1, Mbit -2 and 10.
    assert r["saved_s"] == pytest.approx(2.0) and r["saved_s_sd"] == pytest.approx(2**0.5)
    assert r["saved_Mbit"] == pytest.approx(4.0) and r["saved_Mbit_sd"] == pytest.approx(72**0.5)
    assert "| 0.004 | join | uniform | 2 | 2/2 | 1/2 | 2.0 ± 1.4 | 4.0 ± 8.5 |" in script.paired_markdown(
        pairs
    )
