"""The allocator experiment: recovery after the leave and the join, per allocation method and budget.

Reads the runs of ``cosim sweep scenarios/sweeps/allocation.yaml`` and prints (and, with
``--out``, writes) a Markdown table: per allocation method, budget fraction and event,
the mean and standard deviation over seeds of the simulated seconds and the bits from
the event until recovery (:func:`cosim.analysis.event_recovery`: retained accuracy back
within 2 points of its level before the leave; the newcomer's facts at 0.9 network-wide
after the join), how many seeds recovered within the run, and the final accuracies.

Each method's own recovery measures it against its own level, and a method that
learned little has little to recover.  So the budgeted methods are also compared on a
common target per budget, seed and event: the lowest final accuracy (retained after
the leave, the newcomer's after the join) among them, a level every one of them
reaches by the end; ``common_s`` and ``common_Mbit`` are the seconds and bits from
the event until each first reaches it.  A second table pairs the runs by seed: in how
many seeds ``priority`` got to the common target sooner and with fewer bits than each
other budgeted method, and by how much on average.

The common target is only as high as the weakest method ends, so where one method
fails it is that failure's level.  The reference target (method.md section 8: 95 % of
the reference) does not depend on the methods compared: per seed and event, 0.95 x
the final accuracy of ``full`` (no budget: the ideal) of the same seed, on the same
split; ``ref_s`` and ``ref_Mbit`` are the seconds and bits from the event until a run
first reaches it.  A third table pairs the runs by seed on it: a seed counts for
``priority`` where it reached the target and the other method did not, or both did and
``priority`` took fewer seconds (bits).  It needs the ``full`` runs of the same seeds.

    .venv/bin/cosim sweep scenarios/sweeps/allocation.yaml --jobs 2
    .venv/bin/python analysis/allocation_experiment.py runs/allocation
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cosim.analysis import event_recovery, load_run, mean_spread

SPLIT = {"leave": "retain", "join": "newcomer"}
REFERENCE_SHARE = 0.95  # method.md section 8: rounds / bits to reach 95 % of the reference


def table(sweep_dir: Path) -> pd.DataFrame:
    runs = []
    for manifest in sorted(sweep_dir.glob("*/manifest.json")):
        run = load_run(manifest.parent)
        if run.manifest.get("status") != "complete":
            continue  # an unfinished run would lower the common target of the others
        final = run.evaluations[run.evaluations["device"].isna()]
        final = final[final["round"] == final["round"].max()].groupby("split")["accuracy"].last()
        runs.append((run, final))
    # The common target: the lowest final accuracy among the budgeted methods of a budget and seed.
    common: dict[tuple[float, int], dict[str, float]] = {}
    for run, final in runs:
        allocation = run.manifest["scenario"]["allocation"]
        if allocation["method"] != "full":
            key = (allocation["budget_fraction"], run.seed)
            for event, split in SPLIT.items():
                level = common.setdefault(key, {}).get(event, float("inf"))
                common[key][event] = min(level, float(final.get(split, float("nan"))))
    # The reference target: 95 % of full's final accuracy, per seed.
    reference: dict[int, dict[str, float]] = {}
    for run, final in runs:
        if run.manifest["scenario"]["allocation"]["method"] == "full":
            reference[run.seed] = {
                event: REFERENCE_SHARE * float(final.get(split, float("nan")))
                for event, split in SPLIT.items()
            }
    rows = []
    for run, final in runs:
        scenario = run.manifest["scenario"]
        allocation = scenario["allocation"]
        targets = common.get((allocation["budget_fraction"], run.seed))
        to_common = None
        if allocation["method"] != "full" and targets is not None:
            to_common = event_recovery(run, leave_target=targets["leave"], join_target=targets["join"])
        ref = reference.get(run.seed)
        to_ref = None
        if ref is not None:
            to_ref = event_recovery(run, leave_target=ref["leave"], join_target=ref["join"])
        for i, rec in event_recovery(run).iterrows():
            hit = to_common.loc[i] if to_common is not None else None
            got = to_ref.loc[i] if to_ref is not None else None
            rows.append(
                {
                    "method": scenario["allocation"]["method"],
                    # full ignores the budget: label it apart.
                    "budget_fraction": (
                        float("inf")
                        if scenario["allocation"]["method"] == "full"
                        else scenario["allocation"]["budget_fraction"]
                    ),
                    "event": rec["kind"],
                    "seed": run.seed,
                    "recovered": bool(rec["recovered"]),
                    "recovery_s": rec["recovery_s"],
                    "recovery_Mbit": rec["recovery_bits"] / 1e6,
                    "final_retain": final.get("retain"),
                    "final_newcomer": final.get("newcomer"),
                    "common_target": float("nan") if hit is None else hit["threshold"],
                    "common_reached": hit is not None and bool(hit["recovered"]),
                    "common_s": float("nan") if hit is None else hit["recovery_s"],
                    "common_Mbit": float("nan") if hit is None else hit["recovery_bits"] / 1e6,
                    "ref_target": float("nan") if got is None else got["threshold"],
                    "ref_reached": got is not None and bool(got["recovered"]),
                    "ref_s": float("nan") if got is None else got["recovery_s"],
                    "ref_Mbit": float("nan") if got is None else got["recovery_bits"] / 1e6,
                }
            )
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    lines = [
        "| budget | event | method | recovered | seconds to recover | Mbit to recover "
        "| common target | s to common target | Mbit to common target "
        "| final retain | final newcomer |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {"full": 0, "priority": 1, "uniform": 2, "proportional": 3, "random": 4}
    keys = ["budget_fraction", "event", "method"]
    for (budget, event, method), g in sorted(
        df.groupby(keys), key=lambda kv: (kv[0][1], kv[0][0], order.get(kv[0][2], 9))
    ):
        ok = g[g["recovered"]]
        reached = g[g["common_reached"]]

        def ms(col: str, frame: pd.DataFrame = ok) -> str:
            return "never" if frame.empty else mean_spread(frame[col], 1)

        if g["common_target"].isna().all():  # full: no budget, no common target
            common = "– | – | –"
        else:
            common = (
                f"{g['common_target'].mean():.2f} | {ms('common_s', reached)} | {ms('common_Mbit', reached)}"
            )

        label = "none" if budget == float("inf") else f"{budget:g}"
        lines.append(
            f"| {label} | {event} | {method} | {len(ok)}/{len(g)} | {ms('recovery_s')} "
            f"| {ms('recovery_Mbit')} | {common} "
            f"| {g['final_retain'].mean():.3f} | {g['final_newcomer'].mean():.3f} |"
        )
    return "\n".join(lines)


def paired(df: pd.DataFrame, reference: str = "priority") -> pd.DataFrame:
    """Per budget and event, ``reference`` against each other budgeted method seed by seed.

    Over the seeds where both reached the common target: in how many ``reference`` took
    fewer seconds and fewer bits to it, and the mean and standard deviation of the
    differences (other method minus ``reference``: positive where ``reference`` is cheaper).
    """
    rows = []
    budgeted = df[df["method"] != "full"]
    for (budget, event), g in budgeted.groupby(["budget_fraction", "event"]):
        ours = g[(g["method"] == reference) & g["common_reached"]].set_index("seed")
        for method in sorted(set(g["method"]) - {reference}):
            theirs = g[(g["method"] == method) & g["common_reached"]].set_index("seed")
            seeds = ours.index.intersection(theirs.index)
            ds = theirs.loc[seeds, "common_s"] - ours.loc[seeds, "common_s"]
            dbits = theirs.loc[seeds, "common_Mbit"] - ours.loc[seeds, "common_Mbit"]
            rows.append(
                {
                    "budget_fraction": budget,
                    "event": event,
                    "method": method,
                    "seeds": len(seeds),
                    "fewer_s": int((ds > 0).sum()),
                    "fewer_bits": int((dbits > 0).sum()),
                    "saved_s": ds.mean(),
                    "saved_s_sd": ds.std(),
                    "saved_Mbit": dbits.mean(),
                    "saved_Mbit_sd": dbits.std(),
                }
            )
    return pd.DataFrame(rows)


def paired_markdown(pairs: pd.DataFrame, reference: str = "priority") -> str:
    lines = [
        f"| budget | event | against | seeds | {reference} sooner | {reference} fewer bits "
        "| seconds saved | Mbit saved |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in pairs.sort_values(["event", "budget_fraction", "method"]).iterrows():
        lines.append(
            f"| {r['budget_fraction']:g} | {r['event']} | {r['method']} | {r['seeds']} "
            f"| {r['fewer_s']}/{r['seeds']} | {r['fewer_bits']}/{r['seeds']} "
            f"| {r['saved_s']:.1f} ± {r['saved_s_sd']:.1f} "
            f"| {r['saved_Mbit']:.1f} ± {r['saved_Mbit_sd']:.1f} |"
        )
    return "\n".join(lines)


def reference_markdown(df: pd.DataFrame) -> str:
    """Per budget, event and method: how many seeds reached the reference target, and the mean cost."""
    lines = [
        "| budget | event | method | target | reached | seconds to target | Mbit to target |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    order = {"full": 0, "priority": 1, "uniform": 2, "proportional": 3, "random": 4}
    for (budget, event, method), g in sorted(
        df[df["ref_target"].notna()].groupby(["budget_fraction", "event", "method"]),
        key=lambda kv: (kv[0][1], kv[0][0], order.get(kv[0][2], 9)),
    ):
        reached = g[g["ref_reached"]]
        cost = {
            col: "never" if reached.empty else mean_spread(reached[col], 1) for col in ("ref_s", "ref_Mbit")
        }
        label = "none" if budget == float("inf") else f"{budget:g}"
        lines.append(
            f"| {label} | {event} | {method} | {g['ref_target'].mean():.2f} | {len(reached)}/{len(g)} "
            f"| {cost['ref_s']} | {cost['ref_Mbit']} |"
        )
    return "\n".join(lines)


def paired_reference(df: pd.DataFrame, reference: str = "priority") -> pd.DataFrame:
    """Per budget and event, ``reference`` against each other budgeted method on the reference target.

    Over the seeds where either reached it: ``first_s`` counts those where ``reference``
    reached it and the other did not, or both did and ``reference`` took fewer seconds;
    ``first_bits`` the same with bits.  ``neither``: seeds where neither reached it.
    """
    rows = []
    budgeted = df[(df["method"] != "full") & df["ref_target"].notna()]
    for (budget, event), g in budgeted.groupby(["budget_fraction", "event"]):
        ours = g[g["method"] == reference].set_index("seed")
        for method in sorted(set(g["method"]) - {reference}):
            theirs = g[g["method"] == method].set_index("seed")
            seeds = ours.index.intersection(theirs.index)
            a, b = ours.loc[seeds], theirs.loc[seeds]
            either = a["ref_reached"] | b["ref_reached"]
            only = a["ref_reached"] & ~b["ref_reached"]
            both = a["ref_reached"] & b["ref_reached"]
            rows.append(
                {
                    "budget_fraction": budget,
                    "event": event,
                    "method": method,
                    "seeds": int(either.sum()),
                    "neither": int((~either).sum()),
                    "only": int(only.sum()),
                    "both": int(both.sum()),
                    "first_s": int((only | (both & (a["ref_s"] < b["ref_s"]))).sum()),
                    "first_bits": int((only | (both & (a["ref_Mbit"] < b["ref_Mbit"]))).sum()),
                }
            )
    return pd.DataFrame(rows)


def paired_reference_markdown(pairs: pd.DataFrame, reference: str = "priority") -> str:
    lines = [
        f"| budget | event | against | seeds either reached | only {reference} | both "
        f"| {reference} first or sooner | {reference} first or fewer bits |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in pairs.sort_values(["event", "budget_fraction", "method"]).iterrows():
        lines.append(
            f"| {r['budget_fraction']:g} | {r['event']} | {r['method']} | {r['seeds']} | {r['only']} "
            f"| {r['both']} | {r['first_s']}/{r['seeds']} | {r['first_bits']}/{r['seeds']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="Also write the Markdown table here.")
    args = parser.parse_args()
    df = table(args.sweep_dir)
    text = markdown(df) + "\n\nSeed by seed, to the common target:\n\n" + paired_markdown(paired(df))
    if df["ref_target"].notna().any():
        text += (
            f"\n\nTo the reference target ({REFERENCE_SHARE:.0%} of full's final accuracy, per seed):\n\n"
            + reference_markdown(df)
            + "\n\nSeed by seed, to the reference target:\n\n"
            + paired_reference_markdown(paired_reference(df))
        )
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
