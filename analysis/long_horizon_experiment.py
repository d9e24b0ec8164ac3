"""Long horizons: the catch-up target against the network's own level, and whether it holds.

Reads the run directories of one or more ``cosim experiments`` directories (the leaves of
``none`` and ``retrain``, one per regime and seed) and prints, per directory and regime,
one row per seed and a summary row, from the network-wide retained accuracy (and loss):

* *before*: ``none``'s retained accuracy just before the leave (the network as it was);
* *target*: retrain's at the end of its replay, the level a correction must get within
  1 point of (``results.parquet``'s ``caught_up``);
* *none best*: the highest ``none`` reaches in any round after the leave;
* *retrain after*: the lowest and the last retained accuracy of the retrain run in the
  rounds after its replay (``–`` when the run ends with it), and its largest retained
  loss there against its loss at the end of the replay.

The summary counts the seeds whose target is more than 1 point above *before* (a gap the
leave did not open), those where ``none`` never gets within 1 point of it, and those
where retrain falls more than 5 points below its own replay's level after the replay.

``--runs`` instead prints plain run directories (``cosim run``) side by side: retained
accuracy and loss every ``--every`` rounds.

    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes-latest-long --event leave \\
        --jobs 2 --policy none --policy priority --policy retrain --regime regime_consensus \\
        --seed 1 --seed 2 --seed 3 --seed 10 --set events.0.round=112 --set training.rounds=212
    .venv/bin/python analysis/long_horizon_experiment.py runs/regimes-latest-long
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

TOL = 0.01  # within 1 point: the catch-up criterion
FALL = 0.05  # a fall of retrain's level after its replay worth counting
NAME = re.compile(r"^(?P<regime>.+)-leave-(?P<policy>none|retrain)-s(?P<seed>\d+)$")


def retained(run_dir: Path) -> pd.DataFrame:
    """Network-wide retained accuracy and loss of a run, one row per evaluation, in order.

    Columns ``round``, ``stage``, ``accuracy``, ``loss``; the stages are those of the
    trace (``initial``, ``round``, ``before_event``, ``after_event``).
    """
    evals = pd.read_parquet(run_dir / "evaluations.parquet")
    rows = evals[evals["device"].isna() & (evals["split"] == "retain")]
    return rows[["round", "stage", "accuracy", "loss"]].reset_index(drop=True)


def _event_round(run_dir: Path, kind: str) -> int:
    events = pd.read_parquet(run_dir / "events.parquet")
    rows = events[events["kind"] == kind]
    if rows.empty:
        raise ValueError(f"{run_dir}: no {kind!r} event")
    return int(rows["round"].iloc[0])


def seed_row(none_dir: Path, retrain_dir: Path) -> dict[str, float]:
    """The figures of one seed: ``none``'s run and the retrain run of the same leave."""
    none = retained(none_dir)
    leave = _event_round(none_dir, "leave")
    before = none[(none["stage"] == "before_event") & (none["round"] == leave)]
    after_leave = none[(none["stage"] == "round") & (none["round"] >= leave)]
    ref = retained(retrain_dir)
    end = _event_round(retrain_dir, "correction_end")
    rounds = ref[ref["stage"] == "round"]
    at_end = rounds[rounds["round"] == end]
    later = rounds[rounds["round"] > end]
    if before.empty or at_end.empty or after_leave.empty:
        raise ValueError(f"{none_dir} / {retrain_dir}: no evaluation before the leave or at the replay's end")
    return {
        "before": float(before["accuracy"].iloc[0]),
        "target": float(at_end["accuracy"].iloc[0]),
        "none_best": float(after_leave["accuracy"].max()),
        "retrain_low": float(later["accuracy"].min()) if len(later) else math.nan,
        "retrain_last": float(later["accuracy"].iloc[-1]) if len(later) else math.nan,
        "loss_end": float(at_end["loss"].iloc[0]),
        "loss_high": float(later["loss"].max()) if len(later) else math.nan,
    }


def load(directory: Path) -> pd.DataFrame:
    """One row per regime and seed that has both a ``none`` and a ``retrain`` leave in ``directory``."""
    found: dict[tuple[str, int], dict[str, Path]] = {}
    for path in sorted(directory.glob("*/evaluations.parquet")):
        match = NAME.match(path.parent.name)
        if match:
            key = (match["regime"], int(match["seed"]))
            found.setdefault(key, {})[match["policy"]] = path.parent
    rows = [
        {"regime": regime, "seed": seed, **seed_row(runs["none"], runs["retrain"])}
        for (regime, seed), runs in sorted(found.items())
        if {"none", "retrain"} <= runs.keys()
    ]
    if not rows:
        raise ValueError(f"{directory}: no regime with both a none and a retrain leave")
    return pd.DataFrame(rows)


def _num(value: float, digits: int = 3) -> str:
    return "–" if np.isnan(value) else f"{value:.{digits}f}"


def table(df: pd.DataFrame) -> str:
    """Per regime, one row per seed and a summary row (means; counts of seeds)."""
    lines = [
        "| regime | seed | before | target | target − before | none best | retrain after: lowest "
        "| retrain after: last | retrain loss: end of replay → highest after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for regime, rows in df.groupby("regime", sort=True):
        for r in rows.itertuples():
            lines.append(
                f"| {regime} | {r.seed} | {r.before:.3f} | {r.target:.3f} | {r.target - r.before:+.3f} "
                f"| {r.none_best:.3f} | {_num(r.retrain_low)} | {_num(r.retrain_last)} "
                f"| {r.loss_end:.2f} → {_num(r.loss_high, 2)} |"
            )
        gap = int((rows["target"] - rows["before"] > TOL).sum())
        short = int((rows["none_best"] < rows["target"] - TOL).sum())
        fall = int((rows["retrain_low"] < rows["target"] - FALL).sum())
        n = len(rows)
        lines.append(
            f"| {regime} | all {n} | {rows['before'].mean():.3f} | {rows['target'].mean():.3f} "
            f"| {gap}/{n} above by > {TOL:g} | {short}/{n} never within {TOL:g} "
            f"| {fall}/{n} more than {FALL:g} below the target | {_num(rows['retrain_last'].mean())} | |"
        )
    return "\n".join(lines)


def runs_table(run_dirs: list[Path], every: int) -> str:
    """Retained accuracy and loss of plain runs side by side, every ``every`` rounds (and the last)."""
    curves = {}
    for d in run_dirs:
        rows = retained(d)
        curves[d.name] = rows[rows["stage"] == "round"].set_index("round")
    last = max(int(c.index.max()) for c in curves.values())
    shown = sorted({*range(0, last + 1, every), last})
    header = " | ".join(f"{name}: accuracy | {name}: loss" for name in curves)
    lines = [f"| round | {header} |", "|---:|" + "---:|" * (2 * len(curves))]
    for r in shown:
        cells = []
        for c in curves.values():
            cells += [_num(float(c["accuracy"].get(r, np.nan))), _num(float(c["loss"].get(r, np.nan)), 2)]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", type=Path, nargs="+")
    parser.add_argument("--runs", action="store_true", help="the directories are plain run directories")
    parser.add_argument("--every", type=int, default=20, help="with --runs: rounds between rows")
    args = parser.parse_args()
    if args.runs:
        print(runs_table(args.directories, args.every))
        return
    for directory in args.directories:
        print(f"\n{directory}\n")
        print(table(load(directory)))


if __name__ == "__main__":
    main()
