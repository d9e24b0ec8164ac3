"""Leaves over many seeds: unlearning against retrain, the cost against the replay, priority against none.

Reads the ``results.parquet`` of one or more ``cosim experiments`` directories (the
same regimes, other seeds), keeps the leaves of ``none``, ``priority`` and ``retrain``
(one row per regime, policy and seed; a seed found twice is an error), and prints
three tables, one row per regime and policy:

* **against retrain** (paired by seed): final retained accuracy, forget accuracy and
  MIA AUC minus the retrain run's, each as mean, 95 % t interval and the paired t
  test's p value (``–`` when the differences do not vary);
* **against the replay**: the seeds whose retained accuracy got within 1 point of
  what retrain's replay buys (*caught up*), the replay's and the catch-up's mean
  seconds and bits over those seeds, the ratio of the means, and the seeds where the
  catch-up cost at most a fifth of the same seed's replay in both seconds and bits;
* **priority against none** (paired by seed): retained accuracy two rounds after the
  leave and at the end, the mean difference with its 95 % t interval, and the seeds
  where ``priority`` acted (:func:`acted`);
* **priority's whole correction against the replay**: the correction's own seconds and
  bits (``correction_end``, to its last round, whether or not retained accuracy caught up
  before) beside the same seed's replay, as a ratio of the means over the seeds where it
  acted and over every seed, and the seeds where it acted at least 5x cheaper in both.

    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes --jobs 2
    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes-more --event leave --jobs 2 \\
        --policy none --policy priority --policy retrain \\
        --seed 4 --seed 5 --seed 6 --seed 7 --seed 8 --seed 9 --seed 10
    .venv/bin/python analysis/leave_seeds_experiment.py runs/regimes runs/regimes-more
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cosim.analysis import against_retrain as compare_against_retrain
from cosim.analysis import (
    beside_replay,
    difference_cells,
    experiment_report,
    one_run_each,
    paired_difference,
    saving,
)

POLICIES = ("none", "priority")
FACTOR = 5.0  # the cost saving asked of a correction against the replay


def load(directories: list[Path]) -> pd.DataFrame:
    """The leaves of none, priority and retrain from every directory, one row per regime, policy and seed."""
    df = pd.concat([pd.read_parquet(d / "results.parquet") for d in directories], ignore_index=True)
    df = df[(df["event"] == "leave") & df["policy"].isin([*POLICIES, "retrain"])]
    return one_run_each(df, ["regime", "policy", "seed"])


def against_retrain(df: pd.DataFrame, policies: tuple[str, ...] = POLICIES) -> str:
    return compare_against_retrain(df, policies)


def cost_rows(df: pd.DataFrame, policies: tuple[str, ...] = POLICIES) -> pd.DataFrame:
    """Per regime, policy and seed: the catch-up's cost beside the same seed's replay."""
    return beside_replay(df, policies, FACTOR)


def _in_order(df: pd.DataFrame, policies: tuple[str, ...]) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """``df``'s groups by regime and policy: regimes sorted, policies in the order of ``policies``."""
    groups = dict(iter(df.groupby(["regime", "policy"], sort=True)))
    return sorted(groups.items(), key=lambda item: (item[0][0], policies.index(item[0][1])))


def against_replay(df: pd.DataFrame, policies: tuple[str, ...] = POLICIES) -> str:
    lines = [
        "| regime | policy | caught up | replay s | replay Mbit | catch-up s | catch-up Mbit "
        f"| replay / catch-up s | replay / catch-up Mbit | seeds {FACTOR:.0f}x cheaper in both |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (regime, policy), rows in _in_order(cost_rows(df, policies), policies):
        caught = rows[rows["caught_up"] > 0]
        replay_s = float(caught["correction_seconds_replay"].mean()) if len(caught) else float("nan")
        replay_mbit = float(caught["correction_bits_replay"].mean()) / 1e6 if len(caught) else float("nan")
        cost_s = float(caught["caught_up_s"].mean()) if len(caught) else float("nan")
        cost_mbit = float(caught["caught_up_bits"].mean()) / 1e6 if len(caught) else float("nan")
        cells = [
            f"{len(caught)}/{len(rows)}",
            f"{replay_s:.1f}",
            f"{replay_mbit:.0f}",
            f"{cost_s:.1f}",
            f"{cost_mbit:.0f}",
            saving(replay_s, cost_s),
            saving(replay_mbit, cost_mbit),
            f"{int(rows['meets'].sum())}/{len(rows)}",
        ]
        lines.append(f"| {regime} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def acted(df: pd.DataFrame) -> pd.Series:
    """Whether a run's correction acted (extra local steps, damping, exchanges or links in a round).

    ``correction_acting_rounds`` counts those rounds.  Runs from before it was recorded
    (NaN) never waited: their correction ends at its first decision when nothing is to be
    done, so one that acts lasts at least that round and its simulated seconds are above 0.
    """
    old = (df["correction_seconds"] > 0) | (df["correction_extra_local_steps"] > 0)
    if "correction_acting_rounds" not in df:
        return old
    counted = df["correction_acting_rounds"]
    return counted.gt(0).where(counted.notna(), old).astype(bool)


def priority_against_none(df: pd.DataFrame) -> str:
    lines = [
        "| regime | seeds | priority acted | retained +2 rounds: priority − none [95 % CI] | p "
        "| final retained: priority − none [95 % CI] | p |",
        "|---|---:|---:|---|---:|---|---:|",
    ]
    for regime, rows in df.groupby("regime", sort=True):
        pri = rows[rows["policy"] == "priority"].set_index("seed")
        non = rows[rows["policy"] == "none"].set_index("seed")
        seeds = pri.index.intersection(non.index)
        if seeds.empty:
            continue
        pri, non = pri.loc[seeds], non.loc[seeds]
        early = paired_difference(pri["retain_acc_early"] - non["retain_acc_early"])
        final = paired_difference(pri["retain_acc"] - non["retain_acc"])
        cells = [
            str(len(seeds)),
            f"{int(acted(pri).sum())}/{len(seeds)}",
            *difference_cells(early),
            *difference_cells(final),
        ]
        lines.append(f"| {regime} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _replay_ratios(rows: pd.DataFrame) -> tuple[str, str]:
    """The replay's mean seconds and bits over the correction's, as table cells ("–" with no rows)."""
    if rows.empty:
        return "–", "–"
    return (
        saving(rows["correction_seconds_replay"].mean(), rows["correction_seconds"].mean()),
        saving(rows["correction_bits_replay"].mean(), rows["correction_bits"].mean()),
    )


def whole_correction(df: pd.DataFrame) -> str:
    """``priority``'s whole correction beside the same seed's replay (see the module docstring)."""
    lines = [
        "| regime | seeds | acted | replay s / correction s, acted | replay Mbit / correction Mbit, acted "
        "| the same, every seed | acted, 5x cheaper in both |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    rows = beside_replay(df, ("priority",), FACTOR)
    rows = rows[rows["correction_seconds_replay"].notna()]
    for regime, runs in rows.groupby("regime", sort=True):
        did = runs[acted(runs)]
        cheap = (did["correction_seconds"] * FACTOR <= did["correction_seconds_replay"]) & (
            did["correction_bits"] * FACTOR <= did["correction_bits_replay"]
        )

        acted_s, acted_bits = _replay_ratios(did)
        every_s, every_bits = _replay_ratios(runs)
        cells = [
            str(len(runs)),
            f"{len(did)}/{len(runs)}",
            acted_s,
            acted_bits,
            f"{every_s} / {every_bits}",
            f"{int(cheap.sum())}/{len(did)}",
        ]
        lines.append(f"| {regime} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    experiment_report(
        __doc__.splitlines()[0],
        load,
        against_retrain,
        against_replay,
        priority_against_none,
        whole_correction,
    )


if __name__ == "__main__":
    main()
