"""Wall time of the ns-3 backend, analytic vs packet fidelity, and its share of a run.

1. One gossip round: every device sends an update of ``--update-bits`` (default 4.7
   Mbit, the quickstart's update) to each neighbour (``links().adjacency()`` at t = 0),
   all starting at the round start, deadline 60 s later, on the network of
   ``scenarios/ns3_analytic.yaml`` (120 m x 120 m, uniform placement, 802.11ax 20 MHz,
   log-distance exponent 3, Nakagami m = 1, Nist error model) with 4, 8 and 16 devices.
   ``--rounds`` rounds back to back on one backend (each starts at the previous round's
   last finish); the median wall time of ``transfer`` per round and per simulated MB
   delivered, and the median simulated round duration (last finish - round start).
2. The ns-3 share of a run: ``scenarios/ns3_analytic.yaml`` cut to ``--scenario-rounds``
   rounds, run end to end in-process (as ``cosim run``), in both fidelities; the share
   of its wall time spent inside the backend (``links``, ``transfer``, ``positions``).
   ns-3 is imported before timing starts (the import, 15-25 s, is reported apart).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ns3.py

The Markdown is printed and written into ``benchmarks/RESULTS.md`` under ``SECTION``
(that section alone is replaced).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from results_md import measured_line, publish

from cosim.engine.simulation import run_scenario
from cosim.network import create_network
from cosim.network.base import Message
from cosim.network.ns3._loader import import_seconds, load_ns
from cosim.network.ns3.backend import Ns3Backend
from cosim.network.ns3.packet import PacketBackend
from cosim.scenario import Ns3Network, load_scenario

SECTION = "## ns-3 backend: analytic vs packet"
ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "ns3_analytic.yaml"


def _gossip(spec: Ns3Network, n: int, update_bits: int, rounds: int) -> dict[str, float]:
    net = create_network(spec, range(n), seed=7)
    devices = list(range(n))
    adjacency = net.links(0.0, devices).adjacency()
    pairs = [(i, int(j)) for i in devices for j in adjacency[i].nonzero()[0]]
    walls, per_mb, durations, delivered_share = [], [], [], []
    t0 = 0.0
    for _ in range(rounds):
        messages = [Message(i, j, update_bits, t0) for i, j in pairs]
        start = time.perf_counter()
        results = net.transfer(t0, messages, t0 + 60.0)
        wall = time.perf_counter() - start
        delivered_mb = sum(r.delivered_bits for r in results) / 8e6
        end = max((r.finish_s for r in results if r.delivered), default=t0)
        walls.append(wall)
        per_mb.append(wall / delivered_mb if delivered_mb else float("nan"))
        durations.append(end - t0)
        delivered_share.append(sum(r.delivered for r in results) / max(len(results), 1))
        t0 = end
    return {
        "messages": len(pairs),
        "wall_s": statistics.median(walls),
        "wall_s_per_mb": statistics.median(per_mb),
        "round_s": statistics.median(durations),
        "delivered": min(delivered_share),
    }


def _timed(spent: list[float]) -> None:
    """Time the backend's seam methods (outermost call only: the packet fidelity nests them)."""
    depth = [0]
    for cls in (Ns3Backend, PacketBackend):
        for name in ("links", "transfer", "positions"):
            if name not in vars(cls):
                continue
            original: Callable[..., Any] = vars(cls)[name]

            def wrapper(*args: Any, __f: Callable[..., Any] = original, **kwargs: Any) -> Any:
                depth[0] += 1
                start = time.perf_counter()
                try:
                    return __f(*args, **kwargs)
                finally:
                    depth[0] -= 1
                    if depth[0] == 0:
                        spent[0] += time.perf_counter() - start

            setattr(cls, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-bits", type=int, default=4_700_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--scenario-rounds", type=int, default=5)
    args = parser.parse_args()
    load_ns()
    scenario = load_scenario(SCENARIO)
    assert isinstance(scenario.network, Ns3Network)

    rows = []
    for n in args.sizes:
        for fidelity in ("analytic", "packet"):
            spec = scenario.network.model_copy(update={"fidelity": fidelity})
            r = _gossip(spec, n, args.update_bits, args.rounds)
            rows.append((n, fidelity, r))
            print(n, fidelity, r, flush=True)

    spent = [0.0]
    _timed(spent)
    shares = []
    for fidelity in ("analytic", "packet"):
        short = scenario.model_copy(
            update={
                "network": scenario.network.model_copy(update={"fidelity": fidelity}),
                "training": scenario.training.model_copy(update={"rounds": args.scenario_rounds}),
                "events": (),
            }
        )
        spent[0] = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run_scenario(short, Path(tmp) / "run")
            wall = time.perf_counter() - start
        shares.append((fidelity, wall, spent[0]))
        print(fidelity, wall, spent[0], flush=True)

    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ns3.py"
    if args.update_bits != 4_700_000 or args.rounds != 3 or args.scenario_rounds != 5:
        command += f" --update-bits {args.update_bits} --rounds {args.rounds}"
        command += f" --scenario-rounds {args.scenario_rounds}"
    lines = [
        SECTION,
        "",
        measured_line(),
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, Python {platform.python_version()}, ns3 3.44 wheel; "
        f"`from ns import ns` took {import_seconds():.1f} s (once per process, not counted below).",
        "",
        f"One gossip round on the network of `scenarios/ns3_analytic.yaml` (uniform in 120 m x 120 m, "
        f"802.11ax 20 MHz, Nakagami m = 1, Nist): every device sends {args.update_bits / 1e6:.1f} Mbit "
        f"to each neighbour, all at the round start; median of {args.rounds} rounds back to back on "
        "one backend. Wall time is `transfer` alone; per MB is per MB delivered; simulated round s is "
        "the last delivered finish minus the round start.",
        "",
        "| devices | messages | fidelity | wall s / round | wall s / MB | simulated round s | delivered |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for n, fidelity, r in rows:
        lines.append(
            f"| {n} | {r['messages']} | {fidelity} | {r['wall_s']:.3f} | {r['wall_s_per_mb']:.4f} "
            f"| {r['round_s']:.2f} | {r['delivered']:.0%} |"
        )
    lines += [
        "",
        f"ns-3 share of a run: `scenarios/ns3_analytic.yaml` with {args.scenario_rounds} rounds and no "
        "events, end to end in-process (`run_scenario`), time inside the backend (`links`, "
        "`transfer`, `positions`) over the whole run:",
        "",
        "| fidelity | run wall s | backend wall s | backend share |",
        "|---|---:|---:|---:|",
    ]
    for fidelity, wall, inside in shares:
        lines.append(f"| {fidelity} | {wall:.1f} | {inside:.2f} | {inside / wall:.1%} |")
    lines += [
        "",
        "Notes: the packet rounds are long in simulated time because this scenario's Nakagami m = 1 "
        "(Rayleigh) fading is redrawn per frame in packet fidelity (once per pair and round in "
        "analytic), which hurts TCP on the weaker links; messages not finished by the 60 s "
        "deadline count as undelivered (the `delivered` column, worst round). Packet wall time "
        "grows with the simulated airtime and the number of contending flows, not with the "
        "number of devices alone.",
        "",
    ]
    publish(lines)


if __name__ == "__main__":
    main()
