"""Wall time of the quickstart scenario, and where it goes.

Runs ``scenarios/quickstart.yaml`` end to end (in-process, as ``cosim run`` does)
several times and reports the median wall seconds per run and per round, the
simulated seconds, and the share of wall time spent in the learner (training,
mixing, evaluation, the records of which copies each link holds), in the network
backend (links, transfers) and elsewhere (engine, trace writing, model building).  The
quickstart's network is ns-3's: the one ``from ns import ns`` of the process is timed
first, on its own, and is not part of the per-run figures (``cosim run`` pays it once
per run, in its child process).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quickstart.py --repeats 3

The Markdown table is printed and written into ``benchmarks/RESULTS.md`` under
the heading ``SECTION`` (that section alone is replaced).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from results_md import measured_line, publish

from cosim.engine.simulation import Simulation
from cosim.learning.learner import SlotLearner
from cosim.network.builtin import BuiltinBackend
from cosim.network.ns3._loader import load_ns
from cosim.network.ns3.backend import Ns3Backend
from cosim.scenario import load_scenario

SECTION = "## Quickstart end to end"
ROOT = Path(__file__).resolve().parent.parent
# What counts as the learner's time: training, mixing, evaluating and the bookkeeping of
# which copies each link holds; and as the network's.
LEARNER_METHODS = ("train", "mix", "evaluate", "versions", "owed", "mark_delivered")
NETWORK_METHODS = ("links", "transfer", "positions")


def _timed(cls: type, names: list[str], bucket: str, spent: dict[str, float]) -> None:
    for name in names:
        original: Callable[..., Any] = getattr(cls, name)

        def wrapper(*args: Any, __f: Callable[..., Any] = original, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return __f(*args, **kwargs)
            finally:
                spent[bucket] += time.perf_counter() - start

        setattr(cls, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scenario = load_scenario(ROOT / "scenarios" / "quickstart.yaml")
    spent: dict[str, float] = defaultdict(float)
    _timed(SlotLearner, list(LEARNER_METHODS), "learner", spent)
    backend = Ns3Backend if scenario.network.backend == "ns3" else BuiltinBackend
    _timed(backend, list(NETWORK_METHODS), "network", spent)
    import_s = 0.0
    if scenario.network.backend == "ns3":
        start = time.perf_counter()
        load_ns()
        import_s = time.perf_counter() - start

    load_before = os.getloadavg()
    walls, shares, simulated = [], [], 0.0
    for _ in range(args.repeats):
        spent.clear()
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            sim = Simulation(scenario, Path(tmp) / "run")
            summary = sim.run()
            wall = time.perf_counter() - start
        walls.append(wall)
        shares.append({k: v / wall for k, v in spent.items()})
        simulated = summary["simulated_s"]
    load_after = os.getloadavg()
    wall = statistics.median(walls)
    learner = statistics.median(s.get("learner", 0.0) for s in shares)
    network = statistics.median(s.get("network", 0.0) for s in shares)
    rounds = scenario.training.rounds
    fidelity = getattr(scenario.network, "fidelity", "builtin")
    lines = [
        SECTION,
        "",
        measured_line(),
        "",
        "```",
        "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quickstart.py --repeats " + str(args.repeats),
        "```",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}; load average "
        f"(1/5/15 min) {' / '.join(f'{x:.2f}' for x in load_before)} before and "
        f"{' / '.join(f'{x:.2f}' for x in load_after)} after the runs (the machine is shared).",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| wall s per run (median of {args.repeats}) | {wall:.1f} |",
        f"| runs (s) | {', '.join(f'{w:.1f}' for w in walls)} |",
        f"| wall s per round ({rounds} rounds) | {wall / rounds:.2f} |",
        f"| simulated s | {simulated:.1f} |",
        f"| learner share of wall time (train, mix, evaluate, delivery records) | {learner:.0%} |",
        f"| {scenario.network.backend} network share ({fidelity}) | {network:.1%} |",
        f"| rest (model build, engine, trace) | {1 - learner - network:.0%} |",
        f"| `from ns import ns`, once per process, not in the runs (s) | {import_s:.1f} |",
        "",
        f"Network: {scenario.network.backend} ({fidelity}), "
        f"{scenario.network.area.width_m:g} m x {scenario.network.area.height_m:g} m, "
        f"{scenario.devices.count} devices. `cosim run scenarios/quickstart.yaml` adds to one run "
        "the start of its child process and the ns-3 import.",
        "",
    ]
    publish(lines)


if __name__ == "__main__":
    sys.exit(main())
