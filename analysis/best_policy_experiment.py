"""After a leave, the cheapest catch-up of any policy, chosen seed by seed after the fact.

Acceptance asks a correction to reach what retrain's replay buys (retained accuracy
within 1 point of retrain's at the end of its replay) at least 5 times cheaper than the
replay, in simulated seconds and in bits.  This script asks whether any of the policies
that were run gets there, taking for each regime and seed the best of them (an oracle
no policy has: it knows the outcome).  Reads the ``results.parquet`` of one or more
``cosim experiments`` directories (the same regimes, other seeds; a run found twice is
an error), keeps the leaves, and prints one row per regime:

* the policies compared (every one but ``retrain`` and ``federaser``) and the seeds;
* the seeds where no policy catches up at all;
* per seed the lowest catch-up seconds and, on their own, the lowest catch-up bits of
  any policy, each as the replay's cost over it: its range over the seeds (``already
  there`` where the deletion alone leaves the accuracy at the replay's) and the seeds
  where it is at least ``FACTOR``;
* the seeds where one policy catches up ``FACTOR`` times cheaper in both, and in how
  many seeds each policy does.

A second table gives, per regime and policy, where each policy ends: retained accuracy,
forget accuracy and MIA AUC at the end of the run minus the same seed's retrain run
(mean, 95 % interval, paired t test), and the seeds whose retained accuracy ends at most
``POINT`` below retrain's.

The 5x leaves the time of ``event round / 5`` of the replay's rounds (2.8 with the
leave at round 14), whatever the regime.

    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes --jobs 2
    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes-ten --jobs 2 \\
        --seed 4 --seed 5 --seed 6 --seed 7 --seed 8 --seed 9 --seed 10
    .venv/bin/python analysis/best_policy_experiment.py runs/regimes runs/regimes-ten
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cosim.analysis import against_retrain, beside_replay, experiment_report, one_run_each
from cosim.experiments import REFERENCES

FACTOR = 5.0  # the cost saving asked of a correction against the replay
POINT = 0.01  # retained accuracy at most this below retrain's counts as level with it


def load(directories: list[Path]) -> pd.DataFrame:
    """The leaves of every policy from every directory, one row per regime, policy and seed."""
    df = pd.concat([pd.read_parquet(d / "results.parquet") for d in directories], ignore_index=True)
    return one_run_each(df[df["event"] == "leave"], ["regime", "policy", "seed"])


def per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """Per regime and seed: the replay over the lowest catch-up cost of any policy, and who meets 5x.

    Columns ``saving_s`` and ``saving_bits`` (inf when a policy is already there after the
    deletion, NaN when none catches up), ``meets`` (the policies that catch up ``FACTOR``
    times cheaper in both, joined by commas; empty when none does).
    """
    policies = tuple(sorted(set(df["policy"]) - set(REFERENCES)))
    rows = beside_replay(df, policies, FACTOR)
    rows = rows[rows["correction_seconds_replay"].notna()]
    out = []
    for (regime, seed), runs in rows.groupby(["regime", "seed"], sort=True):
        caught = runs[runs["caught_up"] > 0]
        replay_s = float(runs["correction_seconds_replay"].iloc[0])
        replay_bits = float(runs["correction_bits_replay"].iloc[0])
        out.append(
            {
                "regime": regime,
                "seed": seed,
                "policies": ", ".join(sorted(runs["policy"])),
                "saving_s": _ratio(replay_s, caught["caught_up_s"]),
                "saving_bits": _ratio(replay_bits, caught["caught_up_bits"]),
                "meets": ", ".join(sorted(runs.loc[runs["meets"], "policy"])),
            }
        )
    return pd.DataFrame(out)


def _ratio(replay: float, costs: pd.Series) -> float:
    """``replay`` over the lowest of ``costs``: inf when it is 0, NaN with no cost."""
    if costs.empty:
        return float("nan")
    lowest = float(costs.astype(float).min())
    return float("inf") if lowest == 0 else replay / lowest


def _range(values: pd.Series) -> str:
    """``"[low, high]"`` of the ratios that are not missing (``already there`` for inf)."""
    kept = values.dropna().astype(float)
    if kept.empty:
        return "–"
    return f"[{_x(float(kept.min()))}, {_x(float(kept.max()))}]"


def _x(v: float) -> str:
    return "already there" if np.isinf(v) else f"{v:.1f}x"


def table(df: pd.DataFrame) -> str:
    lines = [
        "| regime | policies | seeds | no policy catches up | replay / lowest catch-up s: range "
        f"| {FACTOR:.0f}x in s | replay / lowest catch-up Mbit: range | {FACTOR:.0f}x in Mbit "
        f"| one policy {FACTOR:.0f}x in both | seeds each policy does it in |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---|",
    ]
    for regime, seeds in per_seed(df).groupby("regime", sort=True):
        n = len(seeds)
        never = int(seeds["saving_s"].isna().sum())
        met = seeds["meets"].str.split(", ").explode()
        counts = met[met != ""].value_counts()
        by = ", ".join(f"{p} {c}" for p, c in sorted(counts.items(), key=lambda pc: (-pc[1], pc[0]))) or "–"
        policies = sorted({p for ps in seeds["policies"] for p in ps.split(", ")})
        cells = [
            ", ".join(policies),
            str(n),
            str(never),
            _range(seeds["saving_s"]),
            f"{int((seeds['saving_s'] >= FACTOR).sum())}/{n}",
            _range(seeds["saving_bits"]),
            f"{int((seeds['saving_bits'] >= FACTOR).sum())}/{n}",
            f"{int((seeds['meets'] != '').sum())}/{n}",
            by,
        ]
        lines.append(f"| {regime} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ends_against_retrain(df: pd.DataFrame) -> str:
    """Per regime and policy: the end of the run against the same seed's retrain run."""
    corrections = tuple(sorted(set(df["policy"]) - set(REFERENCES)))
    return against_retrain(df, corrections, within=POINT)


def main() -> None:
    experiment_report(__doc__.splitlines()[0], load, table, ends_against_retrain)


if __name__ == "__main__":
    main()
