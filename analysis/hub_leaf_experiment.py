"""A hub's leave and a leaf's leave (method.md section 8), one ``cosim experiments`` directory each.

Each directory holds the leaves of one device (the same regime, policies and seeds, the
leaver set with ``--set events.0.device=...``).  Per directory, regime and policy other
than the references it prints:

* *seeds*; *links added*: the seeds whose correction added links (``links_added`` of its
  ``correction`` events, summed), and the links per seed on the mean over the seeds;
* *topology reason first*: the seeds whose first decision gave a reason to refine the
  topology (``topology_reason``: a split graph, a gap below ``gamma_min`` or a slow
  consensus; ``priority`` refines only then, ``topology`` alone refines in every decision
  and records no reason), and that reason in the first such seed;
* *end − none*: retained accuracy at the end of the run, the policy's minus ``none``'s,
  paired by seed (95 % t interval, paired t test p).

    .venv/bin/python analysis/hub_leaf_experiment.py runs/topology-hub-r14 runs/topology-leaf-r14
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cosim.analysis import difference_cells, experiment_report, one_run_each, paired_difference
from cosim.experiments import REFERENCES, correction_decisions


def link_rows(directory: Path, policy: str) -> pd.DataFrame:
    """One row per leave of ``policy`` in ``directory``: the seed, the links its correction
    added and whether (and why) its first decision refined the topology."""
    rows = []
    for regime, event, run, decisions in correction_decisions(directory, policy):
        if event != "leave":
            continue
        first = decisions[0] if decisions else {}
        rows.append(
            {
                "regime": regime,
                "policy": policy,
                "seed": int(run.rsplit("-s", 1)[1]),
                "links_added": sum(int(d.get("links_added") or 0) for d in decisions),
                "topology_first": bool(first.get("topology_reason")),
                "topology_reason": first.get("topology_reason") or "",
            }
        )
    return pd.DataFrame(
        rows, columns=["regime", "policy", "seed", "links_added", "topology_first", "topology_reason"]
    )


def load(directories: list[Path]) -> pd.DataFrame:
    """The leaves of every directory's results table, each with its directory and links."""
    frames = []
    for directory in directories:
        df = pd.read_parquet(directory / "results.parquet")
        df = one_run_each(df[df["event"] == "leave"], ["regime", "policy", "seed"])
        policies = sorted(set(df["policy"]) - set(REFERENCES))
        links = pd.concat([link_rows(directory, p) for p in policies], ignore_index=True)
        df = df.merge(links, on=["regime", "policy", "seed"], how="left")
        frames.append(df.assign(directory=str(directory)))
    return pd.concat(frames, ignore_index=True)


def hub_and_leaf(df: pd.DataFrame) -> str:
    lines = [
        "| directory | regime | policy | seeds | links added | links per seed | topology reason first "
        "| first reason | end − none [95 % CI] | p |",
        "|---|---|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for (directory, regime), part in df.groupby(["directory", "regime"], sort=False):
        none = part[part["policy"] == "none"].set_index("seed")["retain_acc"]
        for policy in sorted(set(part["policy"]) - set(REFERENCES)):
            rows = part[part["policy"] == policy].set_index("seed")
            n = len(rows)
            added = int((rows["links_added"] > 0).sum())
            first = int(rows["topology_first"].sum())
            reasons = rows.loc[rows["topology_first"], "topology_reason"]
            reason = str(reasons.iloc[0]) if len(reasons) else "–"
            end = paired_difference(rows["retain_acc"] - none.reindex(rows.index))
            cells = difference_cells(end) if policy != "none" else ["–", "–"]
            lines.append(
                f"| {directory} | {regime} | {policy} | {n} | {added}/{n} | {rows['links_added'].mean():.1f} "
                f"| {first}/{n} | {reason} | {' | '.join(cells)} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    experiment_report(__doc__.splitlines()[0], load, hub_and_leaf)
