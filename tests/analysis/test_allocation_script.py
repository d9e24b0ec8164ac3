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


def _ref(method: str, seed: int, s: float, mbit: float, reached: bool = True) -> dict:
    return {
        "method": method,
        "budget_fraction": 0.004,
        "event": "leave",
        "seed": seed,
        "ref_target": 0.93,
        "ref_reached": reached,
        "ref_s": s if reached else float("nan"),
        "ref_Mbit": mbit if reached else float("nan"),
    }


def test_paired_reference_counts_a_seed_only_priority_reached_as_first_and_cheaper(analysis_script) -> None:
    script = analysis_script("allocation_experiment")
    df = pd.DataFrame(
        [
            _ref("priority", 1, 2.0, 10.0),
            _ref("uniform", 1, 0.0, 0.0, reached=False),  # only priority: first, and fewer bits
            _ref("priority", 2, 3.0, 20.0),
            _ref("uniform", 2, 4.0, 15.0),  # both: sooner, more bits
            _ref("priority", 3, 0.0, 0.0, reached=False),
            _ref("uniform", 3, 5.0, 5.0),  # only uniform: counts against priority
            _ref("priority", 4, 0.0, 0.0, reached=False),
            _ref("uniform", 4, 0.0, 0.0, reached=False),  # neither: left out
            _ref("full", 1, 1.0, 1.0),  # no budget: not compared
        ]
    )
    pairs = script.paired_reference(df)
    assert len(pairs) == 1
    r = pairs.iloc[0]
    got = (r["method"], r["seeds"], r["neither"], r["only"], r["both"], r["first_s"], r["first_bits"])
    assert got == ("uniform", 3, 1, 1, 1, 2, 1)
    assert "| 0.004 | leave | uniform | 3 | 1 | 1 | 2/3 | 1/3 |" in script.paired_reference_markdown(pairs)
    table = script.reference_markdown(df)
    assert "| 0.004 | leave | priority | 0.93 | 2/4 | 2.5 ± 0.7 | 15.0 ± 7.1 |" in table
    assert "| 0.004 | leave | uniform | 0.93 | 2/4 | 4.5 ± 0.7 | 10.0 ± 7.1 |" in table
