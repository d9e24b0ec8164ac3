"""The event's residual first: priority with and without ``tolerances.event_first``, over many seeds.

Reads the ``results.parquet`` of ``cosim experiments`` directories holding every single
action and ``priority`` made both ways (the value of ``correction.tolerances.event_first``
is read from each ``priority`` run's manifest; a run of one kind found twice is an
error) and prints one table, one row per regime, event and time (two rounds after the
event, and at the end), for the event's target split (retained accuracy after a leave,
the newcomer's after a join):

* the seeds where both kinds of ``priority`` ran, and in how many of them the two
  made different decisions (the ``actions`` of their ``correction`` events differ);
* the best single action by mean over those seeds (as ``policy_seeds_experiment.py``);
* each kind's mean, its difference to the best single action paired by seed, and the
  difference between the two kinds (on minus off) paired by seed, each with its 95 % t
  interval and the paired t test's p value.

    S="--seed 1 --seed 2 --seed 3 --seed 4 --seed 5 --seed 6 --seed 7 --seed 8 --seed 9 --seed 10"
    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes-share-first --jobs 2 \\
        --policy priority --set correction.tolerances.event_first=false $S
    .venv/bin/python analysis/event_first_experiment.py runs/regimes runs/regimes-ten \\
        runs/regimes-share-first
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cosim.analysis import difference_cells, experiment_report, one_run_each, paired_difference
from cosim.experiments import target_accuracy

SINGLE = ("local", "proximal", "sync", "topology")
ON, OFF = "priority", "priority (event_first off)"
WHEN = {"+2 rounds": "_early", "end": ""}  # column suffix of the target split's accuracy


def _run_dir(directory: Path, row: pd.Series) -> Path:
    return directory / f"{row['regime']}-{row['event']}-priority-s{row['seed']}"


def _event_first(run_dir: Path) -> bool:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    tolerances = manifest["scenario"]["correction"]["tolerances"]
    if "event_first" not in tolerances:
        raise ValueError(f"{run_dir}: its scenario does not state tolerances.event_first")
    return bool(tolerances["event_first"])


def _actions(run_dir: Path) -> list[list[str]]:
    """The actions of every ``correction`` decision of a run, in order."""
    events = pd.read_parquet(run_dir / "events.parquet")
    return [json.loads(d)["actions"] for d in events.loc[events["kind"] == "correction", "detail"]]


def load(directories: list[Path]) -> pd.DataFrame:
    """Every single action and both kinds of priority, one row per regime, event, policy and seed;
    ``run_dir`` holds each priority run's directory."""
    frames = []
    for directory in directories:
        df = pd.read_parquet(directory / "results.parquet")
        df = df[df["policy"].isin(("priority", *SINGLE))].copy()
        df["run_dir"] = None
        for i, row in df[df["policy"] == "priority"].iterrows():
            run_dir = _run_dir(directory, row)
            df.at[i, "run_dir"] = str(run_dir)
            df.at[i, "policy"] = ON if _event_first(run_dir) else OFF
        frames.append(df)
    return one_run_each(pd.concat(frames, ignore_index=True), ["regime", "event", "policy", "seed"])


def table(df: pd.DataFrame) -> str:
    lines = [
        "| regime | event | when | seeds | decisions differ | best single action | its mean | off | on | "
        "off − best [95 % CI] | p | on − best [95 % CI] | p | on − off [95 % CI] | p |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---|---:|---|---:|---|---:|",
    ]
    for (regime, event), rows in df.groupby(["regime", "event"], sort=True):
        ev = str(event)
        kinds = {p: rows[rows["policy"] == p].set_index("seed") for p in (ON, OFF)}
        seeds = kinds[ON].index.intersection(kinds[OFF].index)
        for p in SINGLE:
            seeds = seeds.intersection(rows.loc[rows["policy"] == p, "seed"])
        if seeds.empty:
            continue
        differ = sum(
            _actions(Path(kinds[ON].at[s, "run_dir"])) != _actions(Path(kinds[OFF].at[s, "run_dir"]))
            for s in seeds
        )
        for when, suffix in WHEN.items():
            of = {
                p: target_accuracy(rows[rows["policy"] == p], ev, suffix).loc[seeds]
                for p in (ON, OFF, *SINGLE)
            }
            means = {p: float(of[p].mean()) for p in SINGLE}
            best = max(SINGLE, key=lambda p: means[p])  # ties: the first in SINGLE's order
            cells = [
                when,
                str(len(seeds)),
                str(differ),
                best,
                f"{means[best]:.2f}",
                f"{of[OFF].mean():.2f}",
                f"{of[ON].mean():.2f}",
                *difference_cells(paired_difference(of[OFF] - of[best])),
                *difference_cells(paired_difference(of[ON] - of[best])),
                *difference_cells(paired_difference(of[ON] - of[OFF])),
            ]
            lines.append(f"| {regime} | {event} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    experiment_report(__doc__.splitlines()[0], load, table)


if __name__ == "__main__":
    main()
