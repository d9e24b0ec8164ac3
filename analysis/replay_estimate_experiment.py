"""How close the replay estimate behind ``budget.replay_share`` comes to retrain's replay.

For every leave run of the directories (one per regime and seed; ``none`` where there is
one, any other non-retrain policy otherwise: the rounds before the leave are the same
under every policy) this script rebuilds the rounds before the leave from its trace
(each round's gossip from ``transfers``, the leaver's slot's bits in each message from
``allocations``, when each device had computed from ``rounds``) and replays them without
the leaver with :func:`cosim.engine.replay.replay_cost`, the engine's own estimate.  It
sets that beside the same seed's ``retrain`` run (its ``correction_end``: what the
replay cost) and beside the rounds as they ran (the seconds up to the leave and every
bit delivered before it: what ``replay_share``'s limits were taken from before the
estimate).  One row per directory, regime and event round: the seeds, and per ratio to
the replay its mean and range.

    .venv/bin/python analysis/replay_estimate_experiment.py runs/r14 runs/half-whole-r56 \
        runs/floor-whole-consensus runs/floor-whole-learning runs/floor-whole-drift01
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cosim.analysis import experiment_report
from cosim.engine.replay import ReplayCost, RoundRecord, Sent, replay_cost
from cosim.scenario import parse_scenario


def _table(run: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(run / f"{name}.parquet")


def trace_estimate(run: Path) -> tuple[int, ReplayCost, float, float]:
    """A leave run's event round, replay estimate, and the seconds and bits of the rounds before the leave.

    ValueError unless the run holds exactly one leave.
    """
    events = _table(run, "events")
    leaves = events[events["kind"] == "leave"]
    if len(leaves) != 1:
        raise ValueError(f"{run}: the estimate is rebuilt for runs with one leave, found {len(leaves)}")
    leave = leaves.iloc[0]
    event_round, leaver = int(leave["round"]), int(leave["device"])
    network = parse_scenario(json.loads((run / "manifest.json").read_text())["scenario"]).network
    rounds = _table(run, "rounds")
    transfers = _table(run, "transfers")
    before = transfers[transfers["round"] < event_round]
    gossip = before[before["purpose"] == "gossip"]
    allocations = _table(run, "allocations")
    allocations = allocations[(allocations["round"] < event_round) & (allocations["purpose"] == "gossip")]
    # Every device took the slot of its number at the start, and none joined before the leave.
    if (events["kind"].isin(["join", "leave", "leave_silent"]) & (events["round"] < event_round)).any():
        raise ValueError(
            f"{run}: the estimate is rebuilt for runs whose membership is unchanged before the leave"
        )
    carried = allocations.groupby(["round", "src", "dst", "slot"])["bits"].sum()
    slot_bits: dict[tuple[int, int, int], dict[int, int]] = {}
    for (r, src, dst, owner), bits in carried.items():
        slot_bits.setdefault((int(r), int(src), int(dst)), {})[int(owner)] = int(bits)
    by_round = dict(iter(gossip.groupby("round", sort=True)))
    records = []
    for r, devices in rounds[rounds["round"] < event_round].groupby("round", sort=True):
        messages = by_round.get(r, gossip.iloc[:0])
        ready = messages.groupby("src")["start_s"].min()  # a sender's messages all wait for its radio
        sent = []
        for m in messages.itertuples(index=False):
            sent.append(
                Sent(
                    src=int(m.src),
                    dst=int(m.dst),
                    bits=int(m.bits),
                    ready_s=float(ready[m.src]),
                    start_s=float(m.start_s),
                    finish_s=float(m.finish_s),
                    linked=bool(m.rate_bps > 0),
                    slot_bits=slot_bits.get((int(r), int(m.src), int(m.dst)), {}),
                )
            )
        computed = dict(zip(devices["device"].astype(int), devices["tx_start_s"].astype(float), strict=True))
        records.append(RoundRecord(float(devices["time_s"].iloc[0]), computed, tuple(sent)))
    cost = replay_cost(
        records,
        {leaver},
        slot_s=network.slot_s,
        access_delay_s=network.access_delay_s,
        packet_bits=network.packet_bits,
    )
    return event_round, cost, float(leave["time_s"]), float(before["delivered_bits"].sum())


def _replay(run: Path) -> tuple[float, float]:
    events = _table(run, "events")
    end = json.loads(events[events["kind"] == "correction_end"]["detail"].iloc[0])
    return float(end["seconds"]), float(end["bits"])


def load(directories: list[Path]) -> pd.DataFrame:
    """Per directory, regime and seed with a leave run and its retrain run: the ratios to the replay."""
    rows = []
    for directory in directories:
        results = pd.read_parquet(directory / "results.parquet")
        leaves = results[results["event"] == "leave"]
        for (regime, seed), runs in leaves.groupby(["regime", "seed"], sort=True):
            policies = set(runs["policy"])
            if "retrain" not in policies or policies == {"retrain"}:
                continue
            policy = "none" if "none" in policies else sorted(policies - {"retrain"})[0]
            run = directory / f"{regime}-leave-{policy}-s{seed}"
            event_round, cost, ran_s, ran_bits = trace_estimate(run)
            replay_s, replay_bits = _replay(directory / f"{regime}-leave-retrain-s{seed}")
            rows.append(
                {
                    "directory": str(directory),
                    "regime": regime,
                    "event_round": event_round,
                    "seed": int(seed),
                    "estimate_s": cost.seconds / replay_s,
                    "estimate_bits": cost.bits / replay_bits,
                    "as_ran_s": ran_s / replay_s,
                    "as_ran_bits": ran_bits / replay_bits,
                }
            )
    if not rows:
        raise ValueError("no leave run with a retrain run of the same regime and seed")
    return pd.DataFrame(rows)


def ratios(df: pd.DataFrame) -> str:
    columns = ("estimate_s", "estimate_bits", "as_ran_s", "as_ran_bits")
    lines = [
        "| directory | regime | event round | seeds | estimate / replay s | estimate / replay bits "
        "| as they ran / replay s | as they ran / replay bits |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for (directory, regime, event_round), rows in df.groupby(
        ["directory", "regime", "event_round"], sort=False
    ):
        cells = [f"{rows[c].mean():.2f} ({rows[c].min():.2f}–{rows[c].max():.2f})" for c in columns]
        lines.append(f"| {directory} | {regime} | {event_round} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    experiment_report(__doc__.splitlines()[0], load, ratios)
