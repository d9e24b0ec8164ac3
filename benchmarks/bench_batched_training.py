"""Batched training step vs one-by-one peft training, 16 devices.

One round of local training (``training.local_steps`` steps) of 16 devices, timed
two ways on the same starting state and the same minibatches:

* batched: one :meth:`SlotLearner.train` call, all devices folded into the batch;
* one by one: :func:`cosim.learning.reference.train_one_by_one_peft` for each
  device (a fresh plain base wrapped as a PEFT LoRA model, own columns trained).

The model is ``cosim.scenario.Model()``, the data ``cosim.scenario.Data()``, the
training ``Training(slot_dropout=0)`` (batch 16, 5 local steps, Adam; the
reference needs slot dropout off).  Before timing, one batched round and one
mixing step give every device a non-zero view of every slot and an Adam state.
Repeats alternate which path runs first.  Reported: median wall seconds per
round of each path, their ratio, the share of the one-by-one time spent building
the PEFT models, and the largest absolute difference between the trained own
slots of the two paths.

Run from the repository root::

    .venv/bin/python benchmarks/bench_batched_training.py --repeats 7

The Markdown table is printed and written into ``benchmarks/RESULTS.md`` under
the heading ``SECTION`` (that section alone is replaced).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from results_md import measured_line, write_section

from cosim.graph import metropolis_hastings
from cosim.learning.learner import SlotLearner
from cosim.learning.reference import reference_peft_model, train_one_by_one_peft
from cosim.scenario import Data, Model, Training

SECTION = "Batched training step vs one-by-one peft (16 devices)"
DEVICES = 16


def prepared_learner(devices: int, seed: int) -> tuple[SlotLearner, dict[int, np.random.Generator]]:
    """A learner after one batched round and one mixing step, and the generators for the timed round."""
    ids = tuple(range(devices))
    learner = SlotLearner(
        model=Model(),
        data=Data(),
        training=Training(slot_dropout=0.0),
        device_ids=ids,
        leavers=set(),
        newcomers=set(),
    )
    for d in ids:
        learner.add_device(d, d)
    warm = {d: np.random.default_rng([seed, 0, d]) for d in ids}
    learner.train(list(ids), learner.training.local_steps, warm)
    everyone = ~np.eye(devices, dtype=bool)
    learner.mix(list(ids), metropolis_hastings(everyone), np.ones((devices, devices), dtype=bool))
    return learner, {d: np.random.default_rng([seed, 1, d]) for d in ids}


def time_batched(template: SlotLearner, rngs: dict[int, np.random.Generator]):
    learner = copy.deepcopy(template)
    rngs = copy.deepcopy(rngs)
    devices = sorted(learner.slot_of)
    start = time.perf_counter()
    learner.train(devices, learner.training.local_steps, rngs)
    seconds = time.perf_counter() - start
    return seconds, {d: {n: p.detach().clone() for n, p in learner.own[d].items()} for d in devices}


def time_one_by_one(template: SlotLearner, rngs: dict[int, np.random.Generator]):
    rngs = copy.deepcopy(rngs)
    steps = template.training.local_steps
    start = time.perf_counter()
    trained = {d: train_one_by_one_peft(template, d, steps, rngs[d]) for d in sorted(template.slot_of)}
    return time.perf_counter() - start, trained


def time_construction(template: SlotLearner) -> float:
    start = time.perf_counter()
    for d in sorted(template.slot_of):
        reference_peft_model(template, d)
    return time.perf_counter() - start


def max_abs_difference(a: dict[int, dict[str, torch.Tensor]], b: dict[int, dict[str, torch.Tensor]]) -> float:
    return max(float((a[d][n] - b[d][n]).abs().max()) for d in a for n in a[d])


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
    }


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds of each path")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    command = shlex.join([python, sys.argv[0], *sys.argv[1:]])

    template, rngs = prepared_learner(DEVICES, args.seed)
    time_batched(template, rngs)  # warm-up of both paths (allocator, lazy imports)
    time_one_by_one(template, rngs)
    load_before = load_average()
    batched_s, one_by_one_s, build_s, diffs = [], [], [], []
    for repeat in range(args.repeats):
        if repeat % 2 == 0:
            t_b, own_b = time_batched(template, rngs)
            t_r, own_r = time_one_by_one(template, rngs)
        else:
            t_r, own_r = time_one_by_one(template, rngs)
            t_b, own_b = time_batched(template, rngs)
        batched_s.append(t_b)
        one_by_one_s.append(t_r)
        build_s.append(time_construction(template))
        diffs.append(max_abs_difference(own_b, own_r))
        print(f"repeat {repeat}: batched {t_b:.3f} s, one by one {t_r:.3f} s", flush=True)
    load_after = load_average()

    med_b, med_r, med_build = (statistics.median(x) for x in (batched_s, one_by_one_s, build_s))
    spec, training = template.model_spec, template.training
    info = machine()
    table = "\n".join(
        [
            "| path | wall s / round (median) | min | max | max abs param diff vs batched |",
            "|---|---:|---:|---:|---:|",
            f"| batched `SlotLearner.train` (16 devices, one pass) | {med_b:.3f} | {min(batched_s):.3f} "
            f"| {max(batched_s):.3f} | 0 |",
            f"| one by one `train_one_by_one_peft` x 16 | {med_r:.3f} | {min(one_by_one_s):.3f} "
            f"| {max(one_by_one_s):.3f} | {max(diffs):.2e} |",
            f"| of which building the 16 PEFT models | {med_build:.3f} | {min(build_s):.3f} "
            f"| {max(build_s):.3f} | |",
            f"| **ratio** one by one / batched | **{med_r / med_b:.2f}x** | | | |",
        ]
    )
    body = "\n".join(
        [
            measured_line(),
            "",
            "```",
            command,
            "```",
            "",
            f"Setup: {DEVICES} devices, `Model()` (hidden {spec.tiny.hidden_size}, intermediate "
            f"{spec.tiny.intermediate_size}, {spec.tiny.num_layers} layers, rank {spec.rank}, "
            f"slot capacity {spec.slot_capacity}, modules {', '.join(spec.target_modules)}), `Data()`, "
            f"batch {training.batch_size}, {training.local_steps} local steps, {training.optimizer} "
            f"lr {training.learning_rate}, slot dropout {training.slot_dropout}; {args.repeats} repeats "
            "alternating which path runs first, after one untimed warm-up round of each. Both paths start "
            "from the same state (one batched round and one mixing step already taken, so every view "
            "is non-zero and Adam has state) and draw the same minibatches.",
            "",
            f"Machine: {info['cpu']}; `nproc` = {info['nproc']}; torch {info['torch']} with "
            f"`torch.get_num_threads()` = {info['torch threads']}; Python {info['python']}; load average "
            f"(1/5/15 min) {load_before} before and {load_after} after the timed repeats.",
            "",
            table,
            "",
            "Per repeat (s), batched: "
            + ", ".join(f"{x:.3f}" for x in batched_s)
            + "; one by one: "
            + ", ".join(f"{x:.3f}" for x in one_by_one_s)
            + ".",
        ]
    )
    print()
    print(table)
    write_section(f"## {SECTION}\n\n{body}", args.out)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
