"""Where retained accuracy stood before a leave, beside where retrain and each policy end.

A correction is asked to reach the level of retrain's network, which never held the
leaver. Where the network that held it already stood below that level before the leave,
the correction has more to do than undo the deletion. Reads the ``results.parquet`` of
``cosim experiments`` directories of leaves and each run's ``evaluations.parquet``.
Retained accuracy is averaged over ``ROUNDS`` evaluated rounds, to smooth the round to
round swing:

* *before the leave*: the last ``ROUNDS`` rounds before it, the retained devices' models
  on the retained devices' samples (the leaver's model left out), from the ``none`` run
  (every policy is the same run until the leave);
* *the replay's level*: the same seed's ``retrain`` run over the last ``ROUNDS`` rounds of
  its replay (to its ``correction_end_round``), a network as long trained as the one
  before the leave, which never held the leaver: what the catch-up is measured against
  (there at one round, here smoothed);
* *end*: the last ``ROUNDS`` rounds of a run (network-wide, the leaver gone), for each
  policy and for ``retrain``.

One row per directory, regime and policy: the seeds with a ``none`` and a ``retrain``
run; *before − the replay's level*, *end − retrain's end* and *end − before*, each the
mean of per-seed differences with its 95 % t interval and the paired t test's p.

    .venv/bin/python analysis/leave_levels_experiment.py runs/drift01-r112 runs/gate-0
    .venv/bin/python analysis/leave_levels_experiment.py runs/gate-0 --policy none
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cosim.analysis import difference_cells, one_run_each, paired_difference
from cosim.experiments import REFERENCES

ROUNDS = 5  # evaluated rounds averaged at each end


def _retained_by_round(evals: pd.DataFrame, devices: list[int] | None = None) -> pd.Series:
    """Mean retained accuracy per evaluated round (stage ``round``) of a run's evaluations:
    over ``devices``' rows, or the network-wide row where ``devices`` is None."""
    rows = evals[(evals["split"] == "retain") & (evals["stage"] == "round")]
    rows = rows[rows["device"].isna()] if devices is None else rows[rows["device"].isin(devices)]
    return rows.groupby("round")["accuracy"].mean().sort_index()


def _mean_of_last(series: pd.Series, rounds: int, what: str) -> float:
    if len(series) < rounds:
        raise ValueError(f"{what}: {len(series)} evaluated rounds, {rounds} asked (--rounds)")
    return float(series.iloc[-rounds:].mean())


def before_leave(evals: pd.DataFrame, event_round: int, rounds: int = ROUNDS, name: str = "run") -> float:
    """The retained devices' accuracy over the last ``rounds`` evaluated rounds before the
    leave at ``event_round``: the devices evaluated just after it (the leaver gone)."""
    after = evals[
        (evals["stage"] == "after_event") & (evals["round"] == event_round) & evals["device"].notna()
    ]
    if after.empty:
        raise ValueError(f"{name}: no evaluation just after a leave at round {event_round}")
    retained = sorted(int(d) for d in after["device"].unique())
    series = _retained_by_round(evals, retained)
    return _mean_of_last(series[series.index < event_round], rounds, f"{name}, before the leave")


def after_leave(
    evals: pd.DataFrame, event_round: int, rounds: int = ROUNDS, upto: int | None = None, name: str = "run"
) -> float:
    """Network-wide retained accuracy over the last ``rounds`` evaluated rounds from the leave
    at ``event_round`` on, to the end of the run or, with ``upto``, to the first evaluated
    round at or after it (where ``cosim experiments`` reads the replay's level)."""
    series = _retained_by_round(evals)
    series = series[series.index >= event_round]
    if upto is not None:
        if upto < 0:
            raise ValueError(f"{name}: the replay never finished (correction_end_round {upto})")
        reached = series.index[series.index >= upto]
        if reached.empty:
            raise ValueError(f"{name}: no evaluated round at or after the replay's end, round {upto}")
        series = series[series.index <= reached[0]]
    return _mean_of_last(series, rounds, f"{name}, after the leave")


def _evaluations(directory: Path, regime: str, policy: str, seed: int) -> tuple[pd.DataFrame, str]:
    """A leave run's evaluations table, and the run's directory to name in errors (each run
    is read once: ``none``'s serves before the leave and as a policy)."""
    run = directory / f"{regime}-leave-{policy}-s{seed}"
    return pd.read_parquet(run / "evaluations.parquet"), str(run)


def levels(directory: Path, rounds: int = ROUNDS) -> pd.DataFrame:
    """One row per regime, policy and seed that has a ``none`` and a ``retrain`` leave:
    ``before`` and ``replay_level`` (the same for every policy of a seed), ``end`` and
    ``retrain_end``."""
    df = pd.read_parquet(directory / "results.parquet")
    df = one_run_each(df[df["event"] == "leave"], ["regime", "policy", "seed"])
    out = []
    for (regime, seed), runs in df.groupby(["regime", "seed"], sort=True):
        policies = set(runs["policy"])
        if not {"none", "retrain"} <= policies:
            continue
        event_round = int(runs.loc[runs["policy"] == "none", "event_round"].iloc[0])
        corrections = sorted(policies - set(REFERENCES))
        read = {p: _evaluations(directory, regime, p, seed) for p in [*corrections, "retrain"]}
        none, name = read["none"]
        before = before_leave(none, event_round, rounds, name=name)
        retrain, name = read["retrain"]
        replay_end = int(runs.loc[runs["policy"] == "retrain", "correction_end_round"].iloc[0])
        replay_level = after_leave(retrain, event_round, rounds, upto=replay_end, name=name)
        retrain_end = after_leave(retrain, event_round, rounds, name=name)
        for policy in corrections:
            evals, name = read[policy]
            out.append(
                {
                    "directory": str(directory),
                    "regime": regime,
                    "policy": policy,
                    "seed": int(seed),
                    "before": before,
                    "replay_level": replay_level,
                    "end": after_leave(evals, event_round, rounds, name=name),
                    "retrain_end": retrain_end,
                }
            )
    return pd.DataFrame(out)


def table(df: pd.DataFrame, rounds: int = ROUNDS) -> str:
    lines = [
        f"Retained accuracy, each a mean over {rounds} evaluated rounds; differences paired by seed.",
        "",
        "| directory | regime | policy | seeds | before − the replay's level [95 % CI] | p "
        "| end − retrain's end [95 % CI] | p | end − before [95 % CI] | p |",
        "|---|---|---|---:|---|---:|---|---:|---|---:|",
    ]
    for (directory, regime, policy), rows in df.groupby(["directory", "regime", "policy"], sort=False):
        cells = [
            str(len(rows)),
            *difference_cells(paired_difference(rows["before"] - rows["replay_level"])),
            *difference_cells(paired_difference(rows["end"] - rows["retrain_end"])),
            *difference_cells(paired_difference(rows["end"] - rows["before"])),
        ]
        lines.append(f"| {directory} | {regime} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directories", nargs="+", type=Path, help="cosim experiments directories of leaves")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"rounds averaged at each end (default {ROUNDS})"
    )
    parser.add_argument(
        "--policy", action="append", help="print only this policy's rows (repeatable; default all)"
    )
    args = parser.parse_args()
    missing = [d for d in args.directories if not (d / "results.parquet").is_file()]
    if missing:
        names = ", ".join(map(str, missing))
        parser.exit(2, f"error: no results.parquet in {names}; run cosim experiments first\n")
    references = sorted(set(args.policy or ()) & set(REFERENCES))
    if references:
        parser.exit(
            2, f"error: --policy {', '.join(references)}: a reference, not a correction; it has no row\n"
        )
    if args.rounds < 1:
        parser.exit(2, f"error: --rounds {args.rounds}: at least 1\n")
    try:
        df = pd.concat([levels(d, args.rounds) for d in args.directories], ignore_index=True)
    except (OSError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    if df.empty:
        parser.exit(2, "error: no seed with a none and a retrain leave in these directories\n")
    if args.policy:
        absent = sorted(set(args.policy) - set(df["policy"]))
        if absent:
            parser.exit(2, f"error: --policy {', '.join(absent)}: not in these directories\n")
        df = df[df["policy"].isin(args.policy)]
    print(table(df, args.rounds))


if __name__ == "__main__":
    main()
