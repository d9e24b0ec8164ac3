"""The forget split's membership signal through the leave's round: deleting alone against ``priority``.

Reads ``cosim experiments`` directories of leaves (``none``, ``priority`` and ``retrain``
per regime and seed) and prints, per directory and regime, the network-wide
loss-threshold MIA AUC on the forget split (the ``evaluations`` table's ``mia_auc``):

* *deleted*: right after the leave, before any training (the same model under both
  policies: the check fails loudly if it is not);
* *leave's round*: at the end of the leave's round, where ``priority``'s first
  correction round has run (its extra local steps, if it took any, among them);
* *end*: at the end of the run, beside retrain's at the end of its replay.

*rise* is the change from *deleted* to *leave's round*; the paired t test compares
``priority``'s rise with ``none``'s seed by seed. *steps* counts the seeds whose first
correction decision that does not wait took extra local steps. With
``correction.wait_rounds`` the leave's round is a waiting round: its figure is then a
regular round's, and the steps come in a later round.

``--pair A B`` (repeatable) instead compares ``priority`` in directory A with
``priority`` in directory B (the same leaves and seeds under other correction options),
paired by seed: the difference A − B at the end of the leave's round and at the end,
with paired t tests, and each side's extra local steps in its first decision that does
not wait and over its whole correction (``correction_end``).

    .venv/bin/python analysis/membership_rise_experiment.py runs/fresh-drift runs/fresh-learning
    .venv/bin/python analysis/membership_rise_experiment.py --pair runs/fresh-drift runs/answers-whole-drift
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

NAME = re.compile(r"^(?P<regime>.+)-leave-(?P<policy>none|priority|retrain)-s(?P<seed>\d+)$")


def forget_auc(run_dir: Path) -> tuple[float, float, float]:
    """The forget split's network-wide MIA AUC: right after the leave, at the end of its
    round and at the end of the run (``nan`` for the first two without a leave)."""
    evals = pd.read_parquet(run_dir / "evaluations.parquet")
    rows = evals[evals["device"].isna() & (evals["split"] == "forget")]
    after = rows[rows["stage"] == "after_event"]
    end = float(rows[rows["stage"] == "round"]["mia_auc"].iloc[-1])
    if after.empty:
        return float("nan"), float("nan"), end
    r = int(after["round"].iloc[0])
    in_round = rows[(rows["stage"] == "round") & (rows["round"] == r)]
    return float(after["mia_auc"].iloc[0]), float(in_round["mia_auc"].iloc[0]), end


def steps(run_dir: Path) -> tuple[int, int]:
    """The extra local steps of the first correction decision that does not wait (per
    device; a decision made while ``correction.wait_rounds`` holds the correction back is
    marked ``waiting`` and takes none) and of the whole correction (``correction_end``); 0
    where there is none."""
    events = pd.read_parquet(run_dir / "events.parquet")
    decisions = [json.loads(d) for d in events.loc[events["kind"] == "correction", "detail"]]
    first = [d for d in decisions if not d.get("waiting", False)]
    end = events[events["kind"] == "correction_end"]
    return (
        int(first[0].get("local_steps", 0)) if first else 0,
        int(json.loads(end["detail"].iloc[0]).get("extra_local_steps", 0)) if len(end) else 0,
    )


def paired(a: Path, b: Path) -> str:
    """``priority`` in ``a`` against ``priority`` in ``b``, paired by regime and seed."""
    runs = {}
    for directory in (a, b):
        for path in sorted(directory.iterdir()):
            m = NAME.match(path.name)
            if m and m["policy"] == "priority" and (path / "evaluations.parquet").exists():
                runs[(directory, m["regime"], int(m["seed"]))] = path
    keys = sorted({(r, s) for d, r, s in runs if d == a} & {(r, s) for d, r, s in runs if d == b})
    if not keys:
        raise SystemExit(f"{a} and {b}: no priority leave of the same regime and seed in both")
    rows = []
    for regime, seed in keys:
        pa, pb = runs[(a, regime, seed)], runs[(b, regime, seed)]
        (da, ra, ea), (db, rb, eb) = forget_auc(pa), forget_auc(pb)
        if not np.isclose(da, db):
            raise ValueError(f"{regime} seed {seed}: the deleted models differ ({da} against {db})")
        (first_a, total_a), (first_b, total_b) = steps(pa), steps(pb)
        rows.append((ra - rb, ea - eb, first_a, first_b, total_a, total_b))
    d = pd.DataFrame(rows, columns=["round", "end", "first_a", "first_b", "total_a", "total_b"])
    p_round, p_end = (
        stats.ttest_1samp(d["round"], 0.0).pvalue,
        stats.ttest_1samp(d["end"], 0.0).pvalue,
    )
    return (
        f"| {a} − {b} | {len(d)} | {d['round'].mean():+.3f} ({p_round:.3f}) "
        f"| {d['end'].mean():+.3f} ({p_end:.3f}) "
        f"| {d['first_a'].min()}–{d['first_a'].max()} / {d['first_b'].min()}–{d['first_b'].max()} "
        f"| {d['total_a'].min()}–{d['total_a'].max()} / {d['total_b'].min()}–{d['total_b'].max()} |"
    )


def table(directory: Path) -> pd.DataFrame:
    """One row per regime and seed that has all three policies."""
    runs: dict[tuple[str, int], dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        m = NAME.match(path.name)
        if m and (path / "evaluations.parquet").exists():
            runs.setdefault((m["regime"], int(m["seed"])), {})[m["policy"]] = path
    rows = []
    for (regime, seed), by_policy in sorted(runs.items()):
        if set(by_policy) != {"none", "priority", "retrain"}:
            continue
        n_del, n_round, n_end = forget_auc(by_policy["none"])
        p_del, p_round, p_end = forget_auc(by_policy["priority"])
        if not np.isclose(n_del, p_del):
            raise ValueError(
                f"{directory}: {regime} seed {seed}: the deleted models differ ({n_del} against {p_del})"
            )
        rows.append(
            {
                "regime": regime,
                "seed": seed,
                "deleted": p_del,
                "none_round": n_round,
                "priority_round": p_round,
                "none_end": n_end,
                "priority_end": p_end,
                "retrain_end": forget_auc(by_policy["retrain"])[2],
                "steps": steps(by_policy["priority"])[0],
            }
        )
    if not rows:
        raise SystemExit(f"{directory}: no regime and seed with none, priority and retrain leaves")
    return pd.DataFrame(rows)


def summary(directory: Path, df: pd.DataFrame) -> list[str]:
    lines = []
    for regime, g in df.groupby("regime"):
        rise_p, rise_n = g["priority_round"] - g["deleted"], g["none_round"] - g["deleted"]
        diff = rise_p - rise_n
        p = stats.ttest_rel(rise_p, rise_n).pvalue if len(g) > 1 and diff.std() > 0 else float("nan")
        lines.append(
            f"| {directory} | {regime} | {len(g)} | {g['deleted'].mean():.3f} | {g['none_round'].mean():.3f} "
            f"| {g['priority_round'].mean():.3f} | {diff.mean():+.3f} | {p:.3f} | {int((diff > 0).sum())} "
            f"| {int((g['steps'] > 0).sum())} | {g['none_end'].mean():.3f} | {g['priority_end'].mean():.3f} "
            f"| {g['retrain_end'].mean():.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="*", type=Path)
    parser.add_argument("--pair", nargs=2, type=Path, action="append", default=[], metavar=("A", "B"))
    args = parser.parse_args()
    if args.pair:
        print(
            "| priority: A − B | seeds | leave's round (p) | end (p) "
            "| first decision's steps per device: A / B | correction's extra steps: A / B |"
        )
        print("|---|---:|---|---|---|---|")
        for a, b in args.pair:
            print(paired(a, b))
    if not args.directories:
        return
    print(
        "| directory | regime | seeds | deleted | leave's round: none | leave's round: priority "
        "| rise: priority − none | p | seeds priority rose more | seeds with steps | end: none "
        "| end: priority | end: retrain |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for directory in args.directories:
        for line in summary(directory, table(directory)):
            print(line)


if __name__ == "__main__":
    main()
