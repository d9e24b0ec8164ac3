"""How far the devices' copies disagree, as a share of their size, around each event.

The consensus term ``R_cons_g`` (method.md section 6) is in squared parameter
distance; ``tolerances.consensus_share`` compares it with ``M_g``, the squared size of
the devices' mean copy (``magnitude`` in each ``correction`` event).  This prints, per
regime and event, ``R_cons / M`` just before the event (the first decision's
``baseline``) and at the first decision after it, summed over layer groups (mean over
seeds and range), and in how many runs the first decision scheduled extra exchanges.

    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes --policy priority --jobs 2
    .venv/bin/python analysis/consensus_share_experiment.py runs/regimes runs/regimes-more
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cosim.analysis import experiment_arguments
from cosim.experiments import correction_decisions


def _share(terms: dict) -> float:
    """``sum_g R_cons_g / sum_g M_g`` of one record (NaN without a recorded size)."""
    size = float(np.sum(terms.get("magnitude") or [0.0]))
    return float(np.sum(terms["consensus"])) / size if size > 0 else float("nan")


def shares(directories: list[Path], policy: str = "priority") -> pd.DataFrame:
    """One row per run that records the size: ``R_cons / M`` before and after the event, the first syncs."""
    rows = []
    for directory in directories:
        for regime, event, run, decisions in correction_decisions(directory, policy):
            if not decisions or "magnitude" not in decisions[0].get("residuals", {}):
                continue
            first = decisions[0]
            rows.append(
                {
                    "regime": regime,
                    "event": event,
                    "run": f"{directory}/{run}",
                    "before": _share(first["baseline"]) if first.get("baseline") else float("nan"),
                    "after": _share(first["residuals"]),
                    "syncs": int(first.get("syncs", 0)),
                }
            )
    return pd.DataFrame(rows)


def _cell(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    return f"{values.mean():.2g} ({values.min():.2g} … {values.max():.2g})"


def table(df: pd.DataFrame) -> str:
    lines = [
        "| regime | event | runs | R_cons / M before the event | R_cons / M after | first decision syncs |",
        "|---|---|---:|---|---|---:|",
    ]
    for (regime, event), runs in df.groupby(["regime", "event"], sort=True):
        n = len(runs)
        synced = int((runs["syncs"] > 0).sum())
        lines.append(
            f"| {regime} | {event} | {n} | {_cell(runs['before'])} | {_cell(runs['after'])} | {synced}/{n} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser, directories = experiment_arguments(__doc__.splitlines()[0])
    df = shares(directories)
    if df.empty:
        parser.exit(2, "error: no priority runs that record the copies' size (magnitude)\n")
    print(table(df))


if __name__ == "__main__":
    main()
