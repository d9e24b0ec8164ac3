"""What a correction after a leave costs against retraining, as the history before the leave grows.

Retrain replays every round before the event, so its cost grows with the event's
round; a correction starts from the model as it is.  Reads the ``results.parquet`` of
several ``cosim experiments`` directories that differ only in the event's round, and
prints per regime, event round, directory and policy (mean ± standard deviation over
seeds; each directory's runs against the retrain runs of the same directory):

* the replay's simulated seconds and bits (retrain's correction cost);
* the seconds and bits until the retained accuracy is within 1 point of what the
  replay buys (retrain's value at the end of its replay: *catch up*), over the seeds
  that got there, and the replay's cost divided by them (ratio of the means);
* how many seeds catch up at least ``FACTOR`` (5) times cheaper than their own replay (the
  retrain run of the same seed) in seconds and in bits both, seed by seed;
* the final retained accuracy, forget accuracy and MIA AUC minus retrain's;

and a second table, one row per regime, event round, directory and policy: the
retained accuracy two rounds after the leave, the final retained accuracy minus
retrain's, and the extra local steps of all devices together (mean over seeds), to set
runs that differ in a correction setting (e.g. ``max_local_steps``) side by side.

    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes --event leave --jobs 2
    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes-late --event leave --jobs 2 \\
        --policy none --policy priority --policy retrain --set events.0.round=28 --set training.rounds=38
    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes-later --event leave --jobs 2 \\
        --policy none --policy priority --policy retrain --set events.0.round=56 --set training.rounds=66
    .venv/bin/python analysis/history_length_experiment.py runs/regimes runs/regimes-late runs/regimes-later
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cosim.analysis import beside_replay, experiment_arguments, mean_spread, saving

POLICIES = ("none", "priority")
FACTOR = 5.0


def table(directories: list[Path]) -> str:
    frames = [pd.read_parquet(d / "results.parquet").assign(directory=str(d)) for d in directories]
    df = pd.concat(frames, ignore_index=True)
    df = df[df["event"] == "leave"]
    header = (
        "| regime | leave at round | directory | policy | replay s | replay Mbit | s to catch up "
        "| Mbit to catch up | caught up | replay s / catch-up s | replay Mbit / catch-up Mbit "
        f"| {FACTOR:.0f}x in s and Mbit (seed by seed) "
        "| retain − retrain | forget − retrain | MIA AUC − retrain |"
    )
    lines = [header, "|---|---:|---|---|" + "---:|" * 11]
    for (regime, event_round, directory), runs in df.groupby(
        ["regime", "event_round", "directory"], sort=True
    ):
        retrain = runs[runs["policy"] == "retrain"]
        if retrain.empty:
            continue
        replay_s = float(retrain["correction_seconds"].mean())
        replay_bits = float(retrain["correction_bits"].mean())
        for policy in POLICIES:
            rows = runs[runs["policy"] == policy]
            if rows.empty:
                continue
            caught = rows[rows["caught_up"] > 0]
            cheaper = int(beside_replay(runs, (policy,), FACTOR, ("seed",))["meets"].sum())
            cells = [
                mean_spread(retrain["correction_seconds"], 1),
                mean_spread(retrain["correction_bits"], 0, 1e-6),
                mean_spread(caught["caught_up_s"], 1),
                mean_spread(caught["caught_up_bits"], 0, 1e-6),
                f"{len(caught)}/{len(rows)}",
                saving(replay_s, float(caught["caught_up_s"].astype(float).mean())),
                saving(replay_bits, float(caught["caught_up_bits"].astype(float).mean())),
                f"{cheaper}/{len(rows)}",
                mean_spread(rows["retain_acc_vs_retrain"], 2),
                mean_spread(rows["forget_acc_vs_retrain"], 2),
                mean_spread(rows["mia_auc_vs_retrain"], 2),
            ]
            lines.append(
                f"| {regime} | {int(event_round)} | {directory} | {policy} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


def early_table(directories: list[Path]) -> str:
    """Per regime, event round, directory and policy: retained +2 rounds, final gap, extra steps."""
    lines = [
        "| regime | leave at round | directory | policy | retained +2 rounds | retain − retrain "
        "| extra local steps (all devices) |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    frames = []
    for d in directories:
        df = pd.read_parquet(d / "results.parquet")
        frames.append(df[(df["event"] == "leave") & df["policy"].isin(POLICIES)].assign(directory=str(d)))
    df = pd.concat(frames, ignore_index=True)
    for (regime, event_round, directory, policy), rows in df.groupby(
        ["regime", "event_round", "directory", "policy"], sort=True
    ):
        cells = [
            mean_spread(rows["retain_acc_early"], 2),
            mean_spread(rows["retain_acc_vs_retrain"], 2),
            f"{rows['correction_extra_local_steps'].mean():.0f}",
        ]
        lines.append(
            f"| {regime} | {int(event_round)} | {directory} | {policy} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    _, directories = experiment_arguments(__doc__.splitlines()[0])
    with np.errstate(all="ignore"):
        print(table(directories), end="\n\n")
        print(early_table(directories))


if __name__ == "__main__":
    main()
