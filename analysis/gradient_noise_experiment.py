"""How much of the estimated gradient energy ``E`` is sampling noise, at each event's first decision.

``E_g`` (method.md section 6) is the squared norm of each affected device's mean
gradient over a few samples, summed over the devices.  That squared mean is the squared
true mean gradient plus the sampling noise ``tr(Cov) / n``; each ``correction`` event
also records ``energy_unbiased``, the same sum from the pairwise inner products of the
per-sample gradients, which has no noise term.  This prints, per regime and event, the
noise-free share ``energy_unbiased / energy`` at the first decision (per layer group,
mean over seeds, and its range over seeds and groups).

    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes --policy priority --jobs 2
    .venv/bin/python analysis/gradient_noise_experiment.py runs/regimes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cosim.experiments import correction_decisions


def shares(directory: Path, policy: str = "priority") -> pd.DataFrame:
    """One row per run and layer group: the noise-free share of E at the run's first decision."""
    rows = []
    for regime, event, run, decisions in correction_decisions(directory, policy):
        decisions = [d for d in decisions if "energy_unbiased" in d.get("residuals", {})]
        if not decisions:
            continue
        first = decisions[0]["residuals"]
        energy, unbiased = np.asarray(first["energy"]), np.asarray(first["energy_unbiased"])
        for g, (e, u) in enumerate(zip(energy, unbiased, strict=True)):
            rows.append({"regime": regime, "event": event, "run": run, "group": g, "share": u / e})
    return pd.DataFrame(rows)


def table(df: pd.DataFrame) -> str:
    lines = [
        "| regime | event | runs | noise-free share of E, per group (mean over seeds) | range |",
        "|---|---|---:|---|---|",
    ]
    for (regime, event), runs in df.groupby(["regime", "event"], sort=True):
        per_group = runs.groupby("group")["share"].mean()
        means = ", ".join(f"{v:+.3f}" for v in per_group)
        low, high = runs["share"].min(), runs["share"].max()
        lines.append(f"| {regime} | {event} | {runs['run'].nunique()} | {means} | {low:+.3f} … {high:+.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a cosim experiments --out directory")
    parser.add_argument("--policy", default="priority", help="the runs to read (default: priority)")
    args = parser.parse_args()
    df = shares(args.directory, args.policy)
    if df.empty:
        parser.exit(2, f"error: no {args.policy} runs with energy_unbiased in {args.directory}\n")
    print(table(df))


if __name__ == "__main__":
    main()
