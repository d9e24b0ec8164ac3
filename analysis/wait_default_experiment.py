"""Waiting a regular round by default? Every residual policy with and without ``correction.wait_rounds``.

Reads the ``results.parquet`` of ``cosim experiments`` directories holding ``priority``
and the single actions made with and without a wait (the value of
``correction.wait_rounds`` is read from each run's manifest, 0 where the scenario does
not state it; a run of one kind found twice is an error) and prints one table, one row
per regime, event, time (two rounds after the event, and at the end) and policy, for
the event's target split (retained accuracy after a leave, the newcomer's after a
join): the seeds where the policy ran both ways, the mean without and with the wait,
and the difference (with minus without) paired by seed, with its 95 % t interval and
the paired t test's p value.  ``none`` and ``retrain`` do not wait and are left out;
``analysis/policy_seeds_experiment.py`` compares each directory's ``priority`` with the
best single action and with ``none``.

    S="--seed 1 --seed 2 --seed 3 --seed 4 --seed 5 --seed 6 --seed 7 --seed 8 --seed 9 --seed 10"
    R="--policy priority --policy local --policy proximal --policy sync --policy topology"
    .venv/bin/cosim experiments scenarios/regimes --out runs/wait-every --jobs 2 \\
        --policy none $R --policy retrain $S --set correction.wait_rounds=1
    .venv/bin/cosim experiments scenarios/regimes --out runs/wait-every-0 --jobs 2 $R $S
    .venv/bin/python analysis/wait_default_experiment.py runs/wait-every runs/wait-every-0
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cosim.analysis import difference_cells, experiment_report, one_run_each, paired_difference
from cosim.experiments import target_accuracy

POLICIES = ("priority", "local", "proximal", "sync", "topology")
WHEN = {"+2 rounds": "_early", "end": ""}  # column suffix of the target split's accuracy


def wait_rounds(run_dir: Path) -> int:
    """The ``correction.wait_rounds`` a run was made with (0 where its scenario does not state it)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return int(manifest["scenario"].get("correction", {}).get("wait_rounds", 0))


def load(directories: list[Path]) -> pd.DataFrame:
    """Every residual policy's run from every directory, with its ``wait``; one row per regime,
    event, policy, wait and seed."""
    frames = []
    for directory in directories:
        df = pd.read_parquet(directory / "results.parquet")
        df = df[df["policy"].isin(POLICIES)].copy()
        df["wait"] = [
            wait_rounds(directory / f"{r.regime}-{r.event}-{r.policy}-s{r.seed}") for r in df.itertuples()
        ]
        frames.append(df)
    df = one_run_each(pd.concat(frames, ignore_index=True), ["regime", "event", "policy", "wait", "seed"])
    waits = df[df["wait"] > 0].groupby(["regime", "event", "policy"])["wait"].nunique()
    if (waits > 1).any():
        regime, event, policy = waits[waits > 1].index[0]
        raise ValueError(f"{regime} {event} {policy}: runs with more than one wait_rounds > 0")
    return df


def table(df: pd.DataFrame) -> str:
    lines = [
        "| regime | event | when | policy | seeds | without the wait | with it "
        "| with − without [95 % CI] | p |",
        "|---|---|---|---|---:|---:|---:|---|---:|",
    ]
    for (regime, event), rows in df.groupby(["regime", "event"], sort=True):
        ev = str(event)
        for when, suffix in WHEN.items():
            for policy in POLICIES:
                of = rows[rows["policy"] == policy]
                without = target_accuracy(of[of["wait"] == 0], ev, suffix)
                waited = of[of["wait"] > 0]  # one wait_rounds per policy (load checks it)
                if without.empty or waited.empty:
                    continue
                with_wait = target_accuracy(waited, ev, suffix)
                seeds = without.index.intersection(with_wait.index)
                if seeds.empty:
                    continue
                diff = paired_difference(with_wait.loc[seeds] - without.loc[seeds])
                cells = [
                    when,
                    policy,
                    str(len(seeds)),
                    f"{without.loc[seeds].mean():.2f}",
                    f"{with_wait.loc[seeds].mean():.2f}",
                    *difference_cells(diff),
                ]
                lines.append(f"| {regime} | {event} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    experiment_report(__doc__.splitlines()[0], load, table)


if __name__ == "__main__":
    main()
