"""The engine: a SimPy clock that plays a scenario and writes its trace.

The engine is the only owner of simulated time and of the trace writer.  It asks
the network for link states and transfer times, the learner for training,
mixing, deletion and evaluation, and records what they return.

A round (synchronous):

1. membership events due at this round are applied (evaluated just before and
   just after); silent devices whose silence exceeded the timeout are detected;
2. every live device computes ``local_steps`` steps (one batched pass for all of
   them); its simulated compute time is FLOPs / its speed;
3. each device sends its dirty slots to every neighbour, starting when it has
   finished computing; the round ends when every needed transfer has arrived,
   or at the deadline (the slowest device's compute end + ``network.slot_s``);
4. devices mix what arrived with Metropolis-Hastings weights.

Events given by ``time_s`` are applied at the first round boundary at or after
their time; a silent leave stops the device from that time on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from cosim.graph import hop_distances, metropolis_hastings, spectral_gap
from cosim.learning.learner import SlotLearner
from cosim.network import Message, NetworkBackend, create_network
from cosim.scenario import Event, JoinEvent, LeaveEvent, Scenario, SilentLeaveEvent, scenario_hash
from cosim.trace.writer import TraceWriter

__all__ = ["RoundInfo", "Simulation", "run_scenario"]

HEADER_BITS = 8 * 64  # per message: ids, round, slot list
TOMBSTONE_BITS = 8 * 32


@dataclass(frozen=True)
class RoundInfo:
    """What the engine reports after each round (for progress displays)."""

    round: int
    rounds: int
    time_s: float
    live: int
    loss: float
    accuracy: dict[str, float]


@dataclass
class _Membership:
    live: list[int] = field(default_factory=list)  # members as the network sees them
    silent_since: dict[int, float] = field(default_factory=dict)  # stopped, not yet detected
    last_heard: dict[int, float] = field(default_factory=dict)
    free_slots: list[int] = field(default_factory=list)
    pending_tombstones: dict[int, set[int]] = field(default_factory=dict)  # slot -> devices still to apply
    tombstone_origin: dict[int, list[int]] = field(default_factory=dict)  # slot -> devices that first know

    @property
    def active(self) -> list[int]:
        return [d for d in self.live if d not in self.silent_since]


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        out_dir: Path,
        on_round: Callable[[RoundInfo], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.out_dir = out_dir
        self.on_round = on_round
        self.env = simpy.Environment()
        events = scenario.resolved_events()
        self.events = events
        self.network: NetworkBackend = create_network(scenario.network, scenario.device_ids, scenario.seed)
        self.learner = SlotLearner(
            model=scenario.model,
            data=scenario.data,
            training=scenario.training,
            device_ids=scenario.device_ids,
            leavers=scenario.leavers,
            newcomers=scenario.newcomers,
        )
        rng = np.random.default_rng(np.random.SeedSequence([scenario.seed, 0xC0DE]))
        spread = scenario.devices.heterogeneity
        speeds = rng.lognormal(mean=-0.5 * spread**2, sigma=spread, size=len(scenario.device_ids))
        self.flops_per_s = {
            d: scenario.devices.flops_per_s * float(s)
            for d, s in zip(scenario.device_ids, speeds, strict=True)
        }
        self.rngs = {
            d: np.random.default_rng(np.random.SeedSequence([scenario.seed, 0x7EA1, d]))
            for d in scenario.device_ids
        }
        self.members = _Membership(free_slots=list(range(scenario.model.slot_capacity)))
        self.trace = TraceWriter(
            out_dir,
            {
                "name": scenario.name,
                "scenario_hash": scenario_hash(scenario),
                "seed": scenario.seed,
                "backend": scenario.network.backend,
                "scenario": scenario.model_dump(mode="json"),
            },
        )
        self._queued: list[Event] = []
        self._ready_at: dict[int, float] = {}  # a newcomer computes once its pull has arrived
        self._round = 0
        self._slot_bits = sum(self.learner.slot_bits().values())

    # ------------------------------------------------------------------ running

    def run(self) -> dict[str, Any]:
        """Play the scenario to the end; returns the summary also stored in the manifest."""
        self.trace.start()
        wall = time.perf_counter()
        try:
            for d in range(self.scenario.devices.count):
                self._take_slot(d)
                self.members.last_heard[d] = 0.0
            for event in self.events:
                if event.time_s is not None:
                    self.env.process(self._timed_event(event))
            self._evaluate("initial")
            main = self.env.process(self._rounds())
            self.env.run(until=main)
        except BaseException:
            self.trace.finish(
                "interrupted", summary=self._summary(), wall_clock_run_s=time.perf_counter() - wall
            )
            raise
        summary = self._summary()
        self.trace.finish("complete", summary=summary, wall_clock_run_s=round(time.perf_counter() - wall, 3))
        return summary

    def _timed_event(self, event: Event) -> Generator[simpy.Event, None, None]:
        assert event.time_s is not None
        yield self.env.timeout(event.time_s)
        self._queued.append(event)

    def _rounds(self) -> Generator[simpy.Event, Any, None]:
        rounds = self.scenario.training.rounds
        for r in range(rounds):
            self._round = r
            self._membership_changes(r)
            losses = yield from self._train_and_exchange(r)
            if r % self.scenario.training.eval_every == 0 or r == rounds - 1:
                acc = self._evaluate("round")
            else:
                acc = {}
            if self.on_round is not None:
                mean_loss = float(np.mean(list(losses.values()))) if losses else float("nan")
                self.on_round(RoundInfo(r, rounds, self.env.now, len(self.members.active), mean_loss, acc))

    # ------------------------------------------------------------------ membership

    def _membership_changes(self, r: int) -> None:
        due = [e for e in self.events if e.round == r] + self._queued
        self._queued = []
        now = self.env.now
        timeout = self.scenario.training.silence_timeout_s
        # Neighbours can only observe silence: it counts from the last message heard.
        detected = [
            d for d in self.members.silent_since if now - self.members.last_heard.get(d, 0.0) >= timeout
        ]
        if not due and not detected and not self.members.pending_tombstones:
            return
        if due or detected:
            self._evaluate("before_event")
        for event in due:
            if isinstance(event, JoinEvent):
                assert event.device is not None
                self._join(event.device)
            elif isinstance(event, SilentLeaveEvent):
                if event.device in self.members.live and event.device not in self.members.silent_since:
                    self.members.silent_since[event.device] = now
                    detail = {} if event.time_s is None else {"scheduled_s": event.time_s}
                    self._event(
                        "leave_silent", event.device, self.learner.slot_of.get(event.device, -1), detail
                    )
            elif isinstance(event, LeaveEvent) and event.device in self.members.live:
                self._leave(event.device, kind="leave")
        for d in sorted(detected):
            self.members.silent_since.pop(d)
            self._leave(d, kind="leave_detected")
        self._flood_tombstones()
        if due or detected:
            self._evaluate("after_event")

    def _take_slot(self, device: int) -> int:
        slot = self.members.free_slots.pop(0)
        self.learner.add_device(device, slot)
        self.members.live.append(device)
        self.members.live.sort()
        return slot

    def _join(self, device: int) -> None:
        slot = self._take_slot(device)
        now = self.env.now
        self.members.last_heard[device] = now
        links = self.network.links(now, self.members.live)
        i = links.index(device)
        rates = np.where(links.adjacency()[i], links.goodput_bps[i], 0.0)
        self._event("join", device, slot)
        if rates.max() <= 0:
            self._event("isolated", device, slot, {"reason": "no neighbour to pull copies from"})
            return
        source = self.members.live[int(np.argmax(rates))]
        live_slots = len(self.learner.slot_of) - 1
        message = Message(source, device, live_slots * self._slot_bits + HEADER_BITS, now)
        (result,) = self.network.transfer(now, [message], now + self.scenario.network.slot_s)
        self._transfer_row("pull", result, links, live_slots)
        if result.delivered:
            self.learner.pull(device, source)
            self._ready_at[device] = result.finish_s
        detail = {
            "from": source,
            "bits": result.bits,
            "finish_s": result.finish_s,
            "delivered": result.delivered,
        }
        self._event("pull", device, slot, detail)

    def _leave(self, device: int, kind: str) -> None:
        """Remove ``device``; its neighbours originate the tombstone of its slot.

        After an announced leave they heard it from the leaver; after a silent one
        they detected the silence.
        """
        links = self.network.links(self.env.now, self.members.live)
        neighbours = [self.members.live[j] for j in np.flatnonzero(links.adjacency()[links.index(device)])]
        slot = self.learner.remove_device(device)
        self.members.live.remove(device)
        self._event(kind, device, slot, {"tombstone_from": neighbours})
        self.members.pending_tombstones[slot] = set(self.members.live)
        self.members.tombstone_origin[slot] = neighbours

    def _flood_tombstones(self) -> None:
        """Flood each pending tombstone over the current graph; apply it where it arrives."""
        if not self.members.pending_tombstones:
            return
        now = self.env.now
        live = self.members.active
        links = self.network.links(now, live)
        adjacency = links.adjacency()
        hop_s = self.scenario.network.access_delay_s + TOMBSTONE_BITS / max(
            float(links.goodput_bps[adjacency].min()) if adjacency.any() else 1.0, 1.0
        )
        for slot in sorted(self.members.pending_tombstones):
            waiting = self.members.pending_tombstones[slot]
            knowing = [d for d in live if d not in waiting] + self.members.tombstone_origin[slot]
            sources = sorted({live.index(d) for d in knowing if d in live})
            dist = hop_distances(adjacency, sources) if sources else np.full(len(live), -1)
            last_s = now
            for j, d in enumerate(live):
                if d in waiting and dist[j] >= 0:
                    self.learner.apply_tombstone(d, slot)
                    waiting.discard(d)
                    last_s = max(last_s, now + dist[j] * hop_s)
                    self._event("tombstone", d, slot, {"hops": int(dist[j])}, time_s=now + dist[j] * hop_s)
            waiting &= set(self.members.live)
            if not waiting:
                del self.members.pending_tombstones[slot]
                del self.members.tombstone_origin[slot]
                self.learner.release_slot(slot)
                self.members.free_slots.append(slot)
                self.members.free_slots.sort()
                self._event("slot_released", -1, slot, time_s=last_s)

    # ------------------------------------------------------------------ a round

    def _train_and_exchange(self, r: int) -> Generator[simpy.Event, Any, dict[int, float]]:
        env = self.env
        t0 = env.now
        tau = self.scenario.training.local_steps
        members = self.members.live
        active = self.members.active
        losses = self.learner.train(active, tau, self.rngs)
        flops = self.learner.flops_per_step() * tau
        compute_s = {d: flops / self.flops_per_s[d] for d in active}
        ready = {d: max(self._ready_at.pop(d, t0), t0) for d in active}
        tx_start = {d: ready[d] + compute_s[d] for d in active}
        deadline = (max(tx_start.values()) if tx_start else t0) + self.scenario.network.slot_s

        links = self.network.links(t0, members)
        adjacency = links.adjacency()
        weights = metropolis_hastings(adjacency)
        messages, dirty = [], {}
        for d in active:
            slots = self.learner.dirty_slots(d)
            dirty[d] = len(slots)
            self.learner.mark_sent(d)
            i = links.index(d)
            for j in np.flatnonzero(adjacency[i]):
                bits = len(slots) * self._slot_bits + HEADER_BITS
                messages.append(Message(d, members[j], bits, tx_start[d]))
        results = self.network.transfer(t0, messages, deadline)

        delivered = np.zeros((len(members), len(members)), dtype=bool)
        needed: list[simpy.Event] = []
        # A silent device receives nothing (its neighbours do not know yet and still send).
        arrived = [res.delivered and res.dst not in self.members.silent_since for res in results]
        for msg, res, ok in zip(messages, results, arrived, strict=True):
            if ok:
                delivered[links.index(res.dst), links.index(res.src)] = True
                self.members.last_heard[res.src] = res.finish_s
                needed.append(env.timeout(max(res.finish_s - t0, 0.0)))
            self._transfer_row("gossip", res, links, dirty[msg.src], delivered=ok)
        # A neighbour of a silent device waits for its message until the deadline.
        for d in self.members.silent_since:
            if d in members and adjacency[links.index(d)].any():
                needed.append(env.event())
        if needed:
            yield env.any_of([env.all_of(needed), env.timeout(deadline - t0)])
        else:
            yield env.timeout(max(deadline - self.scenario.network.slot_s - t0, 0.0))
        round_end = env.now

        index = [links.index(d) for d in active]
        self.learner.mix(
            active,
            weights[np.ix_(index, index)],
            delivered[np.ix_(index, index)],
            adopt_owner=self.scenario.training.adopt_owner_copy,
        )

        sent = {d: [0, 0, 0, tx_start[d]] for d in active}  # bits, messages, delivered, tx end
        received = dict.fromkeys(active, 0)
        for res, ok in zip(results, arrived, strict=True):
            if res.src in sent:
                s = sent[res.src]
                s[0] += res.bits
                s[1] += 1
                s[2] += int(ok)
                s[3] = max(s[3], min(res.finish_s, deadline))
                if ok and res.dst in received:
                    received[res.dst] += res.bits
        for d in active:
            self.trace.add(
                "rounds",
                round=r,
                time_s=t0,
                device=d,
                slot=self.learner.slot_of[d],
                loss=losses[d],
                steps=tau,
                flops=flops,
                compute_s=compute_s[d],
                tx_start_s=tx_start[d],
                tx_end_s=sent[d][3],
                bits_sent=sent[d][0],
                bits_received=received[d],
                messages_sent=sent[d][1],
                messages_delivered=sent[d][2],
                round_end_s=round_end,
            )
        self._gap = spectral_gap(weights) if len(members) > 1 else 0.0
        return losses

    # ------------------------------------------------------------------ records

    def _evaluate(self, stage: str) -> dict[str, float]:
        active = self.members.active
        rows = self.learner.evaluate(active)
        now = self.env.now
        means: dict[str, float] = {}
        for split in self.learner.task.splits:
            split_rows = [row for row in rows if row.split == split]
            for row in split_rows:
                self.trace.add(
                    "evaluations",
                    round=self._round,
                    time_s=now,
                    stage=stage,
                    split=split,
                    device=row.device,
                    accuracy=row.accuracy,
                    loss=row.loss,
                    n=row.n,
                    consensus_distance=None,
                )
            if split_rows:
                means[split] = float(np.mean([row.accuracy for row in split_rows]))
                self.trace.add(
                    "evaluations",
                    round=self._round,
                    time_s=now,
                    stage=stage,
                    split=split,
                    device=None,
                    accuracy=means[split],
                    loss=float(np.mean([row.loss for row in split_rows])),
                    n=split_rows[0].n,
                    consensus_distance=self.learner.consensus_distance(active),
                )
        return means

    def _event(
        self,
        kind: str,
        device: int,
        slot: int,
        detail: dict[str, Any] | None = None,
        time_s: float | None = None,
    ) -> None:
        self.trace.add(
            "events",
            round=self._round,
            time_s=self.env.now if time_s is None else float(time_s),
            kind=kind,
            device=device,
            slot=slot,
            detail=json.dumps(detail or {}, sort_keys=True),
        )

    def _transfer_row(
        self, purpose: str, res: Any, links: Any, slots: int, delivered: bool | None = None
    ) -> None:
        i, j = links.index(res.src), links.index(res.dst)
        self.trace.add(
            "transfers",
            round=self._round,
            time_s=links.time_s,
            purpose=purpose,
            src=res.src,
            dst=res.dst,
            slots=slots,
            bits=res.bits,
            rate_bps=res.rate_bps,
            goodput_bps=float(links.goodput_bps[i, j]),
            loss=res.loss,
            distance_m=float(links.distance_m[i, j]),
            snr_db=float(links.snr_db[i, j]),
            mcs=int(links.mcs[i, j]),
            start_s=res.start_s,
            finish_s=res.finish_s,
            delivered=res.delivered if delivered is None else delivered,
            delivered_bits=res.delivered_bits,
        )

    def _summary(self) -> dict[str, Any]:
        final = {}
        for row in reversed(self.trace.rows["evaluations"]):
            if row["device"] is None and row["split"] not in final:
                final[row["split"]] = row["accuracy"]
        transfers = self.trace.rows["transfers"]
        return {
            "around_events": self._around_events(),
            "rounds": self._round + 1,
            "simulated_s": float(self.env.now),
            "final_accuracy": final,
            "bits_sent": int(sum(t["bits"] for t in transfers)),
            "live_devices": len(self.members.active),
            "copy_bytes_per_device": self.learner.copy_bytes(),
        }

    def _around_events(self) -> list[dict[str, Any]]:
        """Network-wide accuracy per split just before and just after each membership change."""
        means = [row for row in self.trace.rows["evaluations"] if row["device"] is None]
        out = []
        for r in sorted({row["round"] for row in means if row["stage"] == "after_event"}):
            kinds = sorted(
                {e["kind"] for e in self.trace.rows["events"] if e["round"] == r}
                & {"join", "leave", "leave_silent", "leave_detected"}
            )
            entry: dict[str, Any] = {"round": r, "events": kinds}
            for stage in ("before_event", "after_event"):
                entry[stage] = {
                    row["split"]: row["accuracy"]
                    for row in means
                    if row["round"] == r and row["stage"] == stage
                }
            out.append(entry)
        return out

    # ------------------------------------------------------------------ state

    def save_state(self) -> None:
        """Write the final slot copies so ``cosim export`` can rebuild any device's adapter."""
        from safetensors.torch import save_file

        tensors = {name: c.contiguous() for name, c in self.learner.copies.items()}
        save_file(tensors, str(self.out_dir / "state.safetensors"))
        meta = {
            "slot_of": {str(d): s for d, s in self.learner.slot_of.items()},
            "tombstoned": {str(d): sorted(s) for d, s in self.learner.tombstoned.items()},
            "live": self.members.active,
        }
        (self.out_dir / "state.json").write_text(json.dumps(meta, indent=2) + "\n")


def run_scenario(
    scenario: Scenario, out_dir: Path, on_round: Callable[[RoundInfo], None] | None = None
) -> dict[str, Any]:
    """Run ``scenario`` and write its trace, state and manifest into ``out_dir``."""
    sim = Simulation(scenario, out_dir, on_round=on_round)
    summary = sim.run()
    sim.save_state()
    return summary
