"""Unlearning with shared (non-orthogonal) adapters against orthogonal slots, after a leave.

Reads the ``results.parquet`` of two ``cosim experiments`` directories: the orthogonal
one (which holds the ``federaser`` runs) and one run with ``--adapters shared`` (``none``
and ``retrain`` on shared adapters).  Prints, per regime, the final retained, test and
forget accuracy and MIA AUC, the correction's simulated seconds and bits and the
memory of the stored updates (mean ± standard deviation over seeds) of:

* orthogonal ``none`` (deletion only) and ``retrain``;
* shared ``none`` (no unlearning at all), ``retrain`` (retraining the shared adapter
  without the leaver: the reference for what FedEraser approximates) and ``federaser``.

    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes --event leave --jobs 2
    .venv/bin/cosim experiments scenarios/regimes --out runs/regimes-shared --adapters shared \\
        --policy none --policy retrain --event leave --jobs 2
    .venv/bin/python analysis/federaser_experiment.py runs/regimes runs/regimes-shared
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cosim.analysis import mean_spread

ROWS = [
    ("orthogonal", "none", "orthogonal, deletion only"),
    ("orthogonal", "retrain", "orthogonal, retrain"),
    ("shared", "none", "shared, no unlearning"),
    ("shared", "retrain", "shared, retrain"),
    ("orthogonal", "federaser", "shared, FedEraser"),  # federaser runs live in the orthogonal directory
]
COLUMNS = [
    ("retain_acc", "retain", 1.0, 2),
    ("test_acc", "test", 1.0, 2),
    ("forget_acc", "forget", 1.0, 2),
    ("mia_auc", "MIA AUC", 1.0, 2),
    ("correction_seconds", "correction s", 1.0, 1),
    ("correction_bits", "correction Mbit", 1e-6, 0),
    ("history_bytes_per_device", "history KiB per device", 1 / 1024, 0),
]


def table(orthogonal: Path, shared: Path) -> str:
    frames = {
        "orthogonal": pd.read_parquet(orthogonal / "results.parquet"),
        "shared": pd.read_parquet(shared / "results.parquet"),
    }
    header = "| regime | adapters, policy | " + " | ".join(label for _, label, _, _ in COLUMNS) + " |"
    lines = [header, "|---|---|" + "---:|" * len(COLUMNS)]
    regimes = sorted(frames["orthogonal"]["regime"].unique())
    for regime in regimes:
        for source, policy, label in ROWS:
            df = frames[source]
            runs = df[(df["regime"] == regime) & (df["event"] == "leave") & (df["policy"] == policy)]
            if runs.empty:
                continue
            cells = [mean_spread(runs[key], digits, scale) for key, _, scale, digits in COLUMNS]
            lines.append(f"| {regime} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("orthogonal", type=Path, help="cosim experiments --out of the orthogonal runs")
    parser.add_argument("shared", type=Path, help="cosim experiments --out of the --adapters shared runs")
    args = parser.parse_args()
    print(table(args.orthogonal, args.shared))


if __name__ == "__main__":
    main()
