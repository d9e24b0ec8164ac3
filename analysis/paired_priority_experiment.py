"""``priority`` in one directory against ``priority`` in another, leave by leave.

Reads the ``results.parquet`` of two ``cosim experiments`` directories made on the same
regimes and seeds with other correction options (A and B) and pairs their ``priority``
leaves by regime and seed. Per regime it prints:

* *seeds*: the pairs; *A gated at the leave* / *later*: A's corrections that
  ``correction.tolerances.accuracy_drop`` ended (``correction_end``'s reason) at the
  leave's decision (no round spent) or at a later one;
* *+2 rounds* and *end*: retained accuracy two rounds after the leave and at the end of
  the run, A − B paired by seed, with its 95 % t interval and the paired t test's p;
* *whole correction*: the mean seconds and Mbit of the correction (to ``correction_end``)
  in A and in B, and the same seed's replay over them (the ``retrain`` run of each
  directory; ratio of the means over the pairs, or over those of them with a ``retrain``
  run, which the cell then counts).

    .venv/bin/python analysis/paired_priority_experiment.py runs/gate runs/gate-0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from cosim.analysis import beside_replay, difference_cells, one_run_each, paired_difference, saving

FACTOR = 5.0  # the cost saving asked of a correction against the replay
GATE = "accuracy on the retained devices' samples"  # how accuracy_drop's correction_end begins


def gated(run_dir: Path) -> str:
    """``"leave"`` or ``"later"`` where ``accuracy_drop`` ended the run's correction, else ``""``
    (its decision's ``accuracy_gate``, or for runs made before that flag its reason)."""
    events = pd.read_parquet(run_dir / "events.parquet")
    decisions = [json.loads(d) for d in events.loc[events["kind"] == "correction", "detail"]]
    ends = [json.loads(d) for d in events.loc[events["kind"] == "correction_end", "detail"]]
    flagged = any(d.get("accuracy_gate", False) for d in decisions)
    for end in ends:
        if flagged or str(end.get("reason", "")).startswith(GATE):
            return "leave" if end.get("rounds", 0) == 0 else "later"
    return ""


def leaves(directory: Path) -> pd.DataFrame:
    """``priority``'s leaves beside the same seed's replay (``retrain``'s cost), one per regime and seed."""
    df = pd.read_parquet(directory / "results.parquet")
    df = one_run_each(df[df["event"] == "leave"], ["regime", "policy", "seed"])
    rows = beside_replay(df, ("priority",), FACTOR)
    rows["gated"] = [gated(directory / f"{r.regime}-leave-priority-s{r.seed}") for r in rows.itertuples()]
    return rows.set_index(["regime", "seed"])


def _replay_over(rows: pd.DataFrame, unit: str) -> str:
    """The replay over the whole correction, a ratio of the means over the seeds with a replay
    (``retrain``) run, and how many those are where some seed has none."""
    paired = rows[rows[f"correction_{unit}_replay"].notna()]
    if paired.empty:
        return "–"
    ratio = saving(paired[f"correction_{unit}_replay"].mean(), paired[f"correction_{unit}"].mean())
    return ratio if len(paired) == len(rows) else f"{ratio} ({len(paired)} of {len(rows)} seeds)"


def table(a: Path, b: Path) -> str:
    left, right = leaves(a), leaves(b)
    keys = left.index.intersection(right.index)
    if keys.empty:
        raise SystemExit(f"{a} and {b}: no priority leave of the same regime and seed in both")
    lines = [
        f"A = {a}, B = {b}",
        "",
        "| regime | seeds | A gated at the leave | later | +2 rounds: A − B [95 % CI] | p "
        "| end: A − B [95 % CI] | p | whole correction s: A / B | Mbit: A / B "
        "| replay / whole correction s: A / B | Mbit: A / B |",
        "|---|---:|---:|---:|---|---:|---|---:|---|---|---|---|",
    ]
    for regime in sorted({r for r, _ in keys}):
        idx = [k for k in keys if k[0] == regime]
        x, y = left.loc[idx], right.loc[idx]
        early = paired_difference(x["retain_acc_early"].to_numpy() - y["retain_acc_early"].to_numpy())
        end = paired_difference(x["retain_acc"].to_numpy() - y["retain_acc"].to_numpy())
        seconds = f"{x['correction_seconds'].mean():.2f} / {y['correction_seconds'].mean():.2f}"
        mbit = f"{x['correction_bits'].mean() / 1e6:.0f} / {y['correction_bits'].mean() / 1e6:.0f}"
        ratio_s = f"{_replay_over(x, 'seconds')} / {_replay_over(y, 'seconds')}"
        ratio_bits = f"{_replay_over(x, 'bits')} / {_replay_over(y, 'bits')}"
        cells = [
            regime,
            str(len(idx)),
            str(int((x["gated"] == "leave").sum())),
            str(int((x["gated"] == "later").sum())),
            *difference_cells(early),
            *difference_cells(end),
            seconds,
            mbit,
            ratio_s,
            ratio_bits,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="cosim experiments directory A")
    parser.add_argument("b", type=Path, help="cosim experiments directory B (the same regimes and seeds)")
    args = parser.parse_args()
    print(table(args.a, args.b))


if __name__ == "__main__":
    main()
