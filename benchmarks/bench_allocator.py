"""Wall time of the layer-group allocator: its share of a run, side by side with ``full``.

Runs the builtin quickstart (shortened) once per allocation method with a binding
budget and reports, per method, the run's wall seconds, the seconds spent choosing
precisions (``manifest.json``'s ``wall_clock_allocator_s``: building the options and
solving the knapsack of every message; for ``priority`` also measuring how far each
receiver's copies lag and the quantization error of each sender's) and their share,
plus the simulated seconds and bits the run took.  Quantizing what is sent happens in
the learner's mix and is counted in the run time, not in the allocator's.

Run from the repository root::

    .venv/bin/python benchmarks/bench_allocator.py --budget-fraction 0.05

The Markdown table is printed and written into ``benchmarks/RESULTS.md`` under the
heading ``SECTION`` (that section alone is replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from results_md import measured_line, publish

from cosim.engine.simulation import Simulation
from cosim.scenario import load_scenario

SECTION = "## Layer-group allocator"
ROOT = Path(__file__).resolve().parent.parent
METHODS = ("full", "priority", "uniform", "proportional", "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="scenarios/quickstart_builtin.yaml")
    parser.add_argument("--budget-fraction", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    overrides = [
        f"training.rounds={args.rounds}",
        f"events.0.round={args.rounds // 2}",
        f"events.1.round={3 * args.rounds // 4}",
        f"allocation.budget_fraction={args.budget_fraction}",
    ]
    rows = []
    for method in METHODS:
        scenario = load_scenario(ROOT / args.scenario, [*overrides, f"allocation.method={method}"])
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            summary = Simulation(scenario, Path(tmp) / "run").run()
            wall = time.perf_counter() - start
            manifest = json.loads((Path(tmp) / "run" / "manifest.json").read_text())
        allocator = manifest["wall_clock_allocator_s"]
        rows.append((method, wall, allocator, summary["simulated_s"], summary["bits_sent"]))
    full_wall = rows[0][1]
    lines = [
        SECTION,
        "",
        measured_line(),
        "",
        "```",
        f".venv/bin/python benchmarks/bench_allocator.py --scenario {args.scenario} "
        f"--budget-fraction {args.budget_fraction} --rounds {args.rounds}",
        "```",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}. "
        f"{args.scenario}, {args.rounds} rounds, budget = goodput x slot x {args.budget_fraction}.",
        "",
        "| method | wall s | vs full | allocator s | allocator share | simulated s | Mbit sent |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, wall, allocator, simulated, bits in rows:
        lines.append(
            f"| {method} | {wall:.1f} | {wall / full_wall:.2f} | {allocator:.3f} | "
            f"{allocator / wall:.2%} | {simulated:.1f} | {bits / 1e6:.1f} |"
        )
    lines += [
        "",
        "`full` sends every group at 32 bits without consulting the allocator. `priority` chooses "
        "per slot and layer group: its time includes measuring, once per exchange, how far every "
        "receiver's copies lag the sender's and each sender's expected quantization error, and a "
        "knapsack of one item per slot and group per message (the others: one per group). This "
        "tiny model trains in milliseconds per step, so the share is likely an upper end (not "
        "measured here): the allocator's work grows with the adapters' size, a training step's "
        "with the whole model's.",
        "",
    ]
    publish(lines)


if __name__ == "__main__":
    sys.exit(main())
