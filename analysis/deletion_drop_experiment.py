"""Leaves whose deletion alone takes off less than a point: what ``priority``'s steps buy there.

Reads ``cosim experiments`` directories of leaves (``none``, ``priority`` and ``retrain``
per regime and seed). For each seed, the deletion's drop is the network-wide retained
accuracy just before the leave minus just after the deletion (the ``evaluations``
table's ``before_event`` and ``after_event`` rows of the ``none`` run; the deleted
model is the same under every policy). That mean is over every device's model on the
retained devices' samples, the leaver's model among them before the leave; it is not
what a device measures on its own samples (``correction.tolerances.accuracy_drop``
reads that). The seeds are split by that drop: under a point (``< 0.01``) or not. Per
directory, regime and group it prints:

* *seeds*, and *already there*: the seeds whose retained accuracy is within a point of
  the replay's level right after the deletion (``none``'s catch-up costs 0);
* *none 5x*, *priority 5x*: the seeds caught up at least 5x cheaper than the same seed's
  replay in seconds and in bits (:func:`cosim.analysis.beside_replay`);
* *priority stepped*: the seeds where ``priority`` took extra local steps, and over those
  its whole correction (``correction_end``) beside the replay, seconds and bits, as a
  ratio of the means.

    .venv/bin/python analysis/deletion_drop_experiment.py runs/alloc-r56 runs/wait-every
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cosim.analysis import beside_replay, one_run_each, saving

FACTOR = 5.0  # the cost saving asked of a correction against the replay
POINT = 0.01  # a point of accuracy


def deletion_drop(run_dir: Path) -> float:
    """Network-wide retained accuracy just before the leave minus just after the deletion."""
    evals = pd.read_parquet(run_dir / "evaluations.parquet")
    rows = evals[evals["device"].isna() & (evals["split"] == "retain")]
    before, after = rows[rows["stage"] == "before_event"], rows[rows["stage"] == "after_event"]
    if before.empty or after.empty:
        raise ValueError(f"{run_dir}: no retained accuracy just before and after a leave")
    return float(before["accuracy"].iloc[0] - after["accuracy"].iloc[0])


def rows(directory: Path) -> pd.DataFrame:
    """One row per regime and seed with ``none``, ``priority`` and ``retrain`` leaves."""
    df = pd.read_parquet(directory / "results.parquet")
    df = one_run_each(
        df[(df["event"] == "leave") & df["policy"].isin(["none", "priority", "retrain"])],
        ["regime", "policy", "seed"],
    )
    costs = beside_replay(df, ("none", "priority"), FACTOR).set_index(["regime", "seed", "policy"])
    out = []
    for (regime, seed), runs in costs.groupby(level=["regime", "seed"]):
        policies = set(runs.index.get_level_values("policy"))
        if policies != {"none", "priority"} or runs["correction_seconds_replay"].isna().any():
            continue
        none, prio = runs.xs("none", level="policy").iloc[0], runs.xs("priority", level="policy").iloc[0]
        out.append(
            {
                "regime": regime,
                "seed": seed,
                "drop": deletion_drop(directory / f"{regime}-leave-none-s{seed}"),
                "already": bool(none["caught_up"] > 0 and none["caught_up_s"] == 0),
                "none_meets": bool(none["meets"]),
                "priority_meets": bool(prio["meets"]),
                "stepped": int(prio["correction_extra_local_steps"]) > 0,
                "priority_s": float(prio["correction_seconds"]),
                "priority_bits": float(prio["correction_bits"]),
                "replay_s": float(prio["correction_seconds_replay"]),
                "replay_bits": float(prio["correction_bits_replay"]),
            }
        )
    if not out:
        raise SystemExit(f"{directory}: no regime and seed with none, priority and retrain leaves")
    return pd.DataFrame(out)


def table(directories: list[Path]) -> str:
    lines = [
        "| directory | regime | deletion's drop | seeds | already there | none 5x | priority 5x "
        "| priority stepped | replay / whole correction where it stepped, s | the same, Mbit |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for directory in directories:
        df = rows(directory)
        df["small"] = df["drop"] < POINT
        for (regime, small), g in df.groupby(["regime", "small"], sort=True):
            stepped = g[g["stepped"]]
            lines.append(
                f"| {directory} | {regime} | {'under a point' if small else 'a point or more'} | {len(g)} "
                f"| {int(g['already'].sum())} | {int(g['none_meets'].sum())} "
                f"| {int(g['priority_meets'].sum())} "
                f"| {len(stepped)} | {saving(stepped['replay_s'].mean(), stepped['priority_s'].mean())} "
                f"| {saving(stepped['replay_bits'].mean(), stepped['priority_bits'].mean())} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directories", nargs="+", type=Path, help="cosim experiments directories")
    args = parser.parse_args()
    print(table(args.directories))


if __name__ == "__main__":
    main()
