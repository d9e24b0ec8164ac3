"""What the learning residual's two parts predict, against the loss measured on the same samples.

``R_learn_g = E_g / (2 kappa_g) + S_g`` (method.md section 6) is a predicted loss gap:
``E / (2 kappa)`` the gap of a PL function with the gradient energy ``E``, and the
deletion shock ``S`` the jump of the retained devices' loss that removing the leaver's
slot should cause.  At an event's first decision every ``correction`` event records each
affected device's mean cross-entropy on its samples (``loss_devices``), and the same
before the event (``baseline``), on the same samples of each device.  Per regime and
event this prints, at the first decision (sums over layer groups and affected devices,
mean and spread over seeds):

* ``E / (2 kappa)`` and ``S``, and ``S``'s share of ``R_learn``;
* after a leave, the measured jump of the retained devices' summed loss (the quantity
  ``S`` predicts) and its ratio to the loss before;
* after a join, the newcomer's loss over the mean loss of the devices before it joined;
* the runs in which the policy acted.

    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes --policy priority --jobs 2
    .venv/bin/python analysis/learning_residual_experiment.py runs/regimes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cosim.experiments import correction_decisions


def first_decisions(directory: Path, policy: str = "priority") -> pd.DataFrame:
    """One row per run: the learning residual's parts and the measured loss at its first decision.

    The first decision of the run's first event (the regime runs have one event); the
    event's kind is the decision's own, the newcomer the affected device that was not
    measured before it.
    """
    rows = []
    for regime, _, run, decisions in correction_decisions(directory, policy):
        decisions = [d for d in decisions if d.get("baseline")]
        if not decisions:
            continue
        first = decisions[0]
        res, base = first["residuals"], first["baseline"]
        affected = first["affected"]
        shock = np.asarray(res["shock"], dtype=float)
        pl = np.asarray(res["learn"], dtype=float) - shock
        loss = dict(zip(affected, res["loss_devices"], strict=True))
        before = dict(zip(base["devices"], base["loss_devices"], strict=True))
        row = {
            "regime": regime,
            "event": first["event"],
            "run": run,
            "pl": float(pl.sum()),
            "shock": float(shock.sum()),
            "shock_share": float(shock.sum() / (pl.sum() + shock.sum())),
            "acted": any(a != "none" for a in first["actions"]) or bool(first.get("links_added")),
        }
        retained = [d for d in affected if d in before]
        newcomers = [d for d in affected if d not in before]
        level_before = sum(before[d] for d in retained)
        if first["event"] == "leave" and retained:
            row["loss_jump"] = float(sum(loss[d] - before[d] for d in retained))
            row["loss_ratio"] = (
                float(sum(loss[d] for d in retained) / level_before) if level_before > 0 else np.nan
            )
        mean_before = float(np.mean(list(before.values()))) if before else 0.0
        if first["event"] == "join" and newcomers and mean_before > 0:
            row["newcomer_ratio"] = max(loss[d] for d in newcomers) / mean_before
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(values: pd.Series, fmt: str) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    spread = values.std(ddof=0) if len(values) > 1 else 0.0
    return f"{values.mean():{fmt}} ± {spread:{fmt}}"


def table(df: pd.DataFrame) -> str:
    lines = [
        "| regime | event | runs | E / (2 kappa) | S | S / R_learn | measured loss jump "
        "| loss after / before | newcomer loss / devices' | acted |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for column in ("loss_jump", "loss_ratio", "newcomer_ratio"):
        if column not in df:
            df = df.assign(**{column: np.nan})
    for (regime, event), runs in df.groupby(["regime", "event"], sort=True):
        lines.append(
            f"| {regime} | {event} | {len(runs)} | {_cell(runs['pl'], '.0f')} "
            f"| {_cell(runs['shock'], '.3f')} "
            f"| {_cell(runs['shock_share'], '.1e')} | {_cell(runs['loss_jump'], '.3f')} "
            f"| {_cell(runs['loss_ratio'], '.2f')} | {_cell(runs['newcomer_ratio'], '.2f')} "
            f"| {int(runs['acted'].sum())}/{len(runs)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a cosim experiments --out directory")
    parser.add_argument("--policy", default="priority", help="the runs to read (default: priority)")
    args = parser.parse_args()
    df = first_decisions(args.directory, args.policy)
    if df.empty:
        parser.exit(
            2, f"error: no {args.policy} runs with a recorded pre-event baseline in {args.directory}\n"
        )
    print(table(df))


if __name__ == "__main__":
    main()
