"""Every policy over many seeds: priority against the best single action and against none.

Reads the ``results.parquet`` of one or more ``cosim experiments`` directories (the
same regimes, other seeds; a run found twice is an error) and prints two tables, one
row per regime and event, for the event's target split (retained accuracy after a
leave, the newcomer's after a join):

* **against the best single action**, two rounds after the event and at the end: the
  single action (``local``, ``proximal``, ``sync``, ``topology``) with the highest mean
  over the seeds every policy ran, ``priority``'s difference to it paired by seed
  (mean, 95 % t interval, paired t test's p value), and whether it holds the
  tolerance: the mean difference at least ``-TOLERANCE`` (*within*), and the interval's
  lower end too (*bounded*);
* **against none**: ``none``'s final gap to retrain and ``priority``'s difference to
  ``none`` two rounds on and at the end, each paired by seed.

    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes --jobs 2
    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes-ten --jobs 2 \\
        --policy none --policy priority --policy local --policy proximal --policy sync \\
        --policy topology --policy retrain \\
        --seed 4 --seed 5 --seed 6 --seed 7 --seed 8 --seed 9 --seed 10
    .venv/bin/python analysis/policy_seeds_experiment.py runs/regimes runs/regimes-ten
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cosim.analysis import difference_cells, experiment_report, one_run_each, paired_difference
from cosim.experiments import target_accuracy

SINGLE = ("local", "proximal", "sync", "topology")
POLICIES = ("priority", "none", *SINGLE, "retrain")
TOLERANCE = 0.03  # how far below the best single action priority may be (accuracy)
WHEN = {"+2 rounds": "_early", "end": ""}  # column suffix of the target split's accuracy


def load(directories: list[Path]) -> pd.DataFrame:
    """Every run of the policies above from every directory, one row per regime, event, policy and seed."""
    df = pd.concat([pd.read_parquet(d / "results.parquet") for d in directories], ignore_index=True)
    df = df[df["policy"].isin(POLICIES)]
    return one_run_each(df, ["regime", "event", "policy", "seed"])


def best_single(df: pd.DataFrame, event: str, suffix: str) -> dict[str, object] | None:
    """Over the seeds where priority and every single action ran: the best single action by
    mean and priority's paired difference to it; None when no seed has them all."""
    by_policy = {p: target_accuracy(df[df["policy"] == p], event, suffix) for p in ("priority", *SINGLE)}
    seeds = by_policy["priority"].index
    for values in by_policy.values():
        seeds = seeds.intersection(values.index)
    if seeds.empty:
        return None
    means = {p: float(by_policy[p].loc[seeds].mean()) for p in SINGLE}
    best = max(SINGLE, key=lambda p: means[p])  # ties: the first in SINGLE's order
    diff = paired_difference(by_policy["priority"].loc[seeds] - by_policy[best].loc[seeds])
    return {
        "seeds": len(seeds),
        "best": best,
        "best_mean": means[best],
        "priority_mean": float(by_policy["priority"].loc[seeds].mean()),
        "diff": diff,
        "within": bool(diff["mean"] >= -TOLERANCE),
        "bounded": bool(not np.isnan(diff["low"]) and diff["low"] >= -TOLERANCE),
    }


def against_best_single(df: pd.DataFrame) -> str:
    lines = [
        "| regime | event | when | seeds | best single action | its mean | priority | "
        f"priority − best [95 % CI] | p | within {TOLERANCE:.2f} | interval within {TOLERANCE:.2f} |",
        "|---|---|---|---:|---|---:|---:|---|---:|---|---|",
    ]
    for (regime, event), rows in df.groupby(["regime", "event"], sort=True):
        for when, suffix in WHEN.items():
            r = best_single(rows, str(event), suffix)
            if r is None:
                continue
            diff = r["diff"]
            assert isinstance(diff, dict)
            cells = [
                when,
                str(r["seeds"]),
                str(r["best"]),
                f"{r['best_mean']:.2f}",
                f"{r['priority_mean']:.2f}",
                *difference_cells(diff),
                "yes" if r["within"] else "no",
                "yes" if r["bounded"] else "no",
            ]
            lines.append(f"| {regime} | {event} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def against_none(df: pd.DataFrame) -> str:
    lines = [
        "| regime | event | seeds | none − retrain at the end [95 % CI] | p | "
        "priority − none +2 rounds [95 % CI] | p | priority − none at the end [95 % CI] | p |",
        "|---|---|---:|---|---:|---|---:|---|---:|",
    ]
    for (regime, event), rows in df.groupby(["regime", "event"], sort=True):
        ev = str(event)
        of = {p: rows[rows["policy"] == p] for p in ("priority", "none", "retrain")}
        if any(x.empty for x in of.values()):
            continue
        gap = paired_difference(target_accuracy(of["none"], ev, "") - target_accuracy(of["retrain"], ev, ""))
        early = paired_difference(
            target_accuracy(of["priority"], ev, "_early") - target_accuracy(of["none"], ev, "_early")
        )
        final = paired_difference(
            target_accuracy(of["priority"], ev, "") - target_accuracy(of["none"], ev, "")
        )
        seeds = target_accuracy(of["priority"], ev, "").index.intersection(
            target_accuracy(of["none"], ev, "").index
        )
        cells = [
            str(len(seeds)),
            *difference_cells(gap),
            *difference_cells(early),
            *difference_cells(final),
        ]
        lines.append(f"| {regime} | {event} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    experiment_report(__doc__.splitlines()[0], load, against_best_single, against_none)


if __name__ == "__main__":
    main()
