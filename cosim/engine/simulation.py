"""The engine: a SimPy clock that plays a scenario and writes its trace.

The engine is the only owner of simulated time and of the trace writer.  It asks
the network for link states and transfer times, the learner for training,
mixing, deletion and evaluation, and records what they return.

A round (synchronous):

1. membership events due at this round are applied (evaluated just before and
   just after); silent devices whose silence exceeded the timeout are detected;
2. every live device computes ``local_steps`` steps (one batched pass for all of
   them); its simulated compute time is FLOPs / its speed;
3. each device sends its slots to every neighbour, starting when it has
   finished computing; the round ends when every needed transfer has arrived,
   or at the deadline (the slowest device's compute end + ``network.slot_s``);
4. devices mix what arrived with Metropolis-Hastings weights.

Events given by ``time_s`` are applied at the first round boundary at or after
their time; a silent leave stops the device from that time on.

The gossip graph is every feasible link (rate above ``min_rate_bps``), or with
``training.gossip_degree`` each device's fastest few, plus any link topology
refinement added.  What a message carries is the allocator's choice for that link
(``allocation``): ``full`` sends, at 32 bits with no budget, every slot and layer group
whose copy has not reached that receiver yet (tracked per link); ``uniform``,
``proportional`` and ``random`` one precision per layer group for every live slot;
``priority`` a precision (or none) per slot and layer group.  No message carries its
receiver's own slot: the owner's copy is authoritative.

Correction (``correction.policy``, see :mod:`cosim.engine.correction`): after a join
or a leave the residuals are estimated (for a leave before the tombstone zeroes the
copies) and the policy's actions shape the next rounds: extra local steps before the
regular ones, a proximal term, extra exchanges of some layer groups at the start of
the round (``sync_s``), or links added to the graph.  It runs until no term exceeds
its tolerance or the budget (rounds, simulated seconds, bits) is spent; every decision
and the correction's cost go to ``events``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import simpy
import torch

from cosim.allocator.knapsack import GroupOptions, allocate, quantized_value, slot_options
from cosim.engine.correction import (
    CorrectionState,
    Plan,
    RoundCost,
    accuracy_drop,
    allocation_weights,
    decide_for,
    fit_plan,
    loss_ratio,
    normalised_terms,
    parallel_step_scale,
    plan_round,
    settling_terms,
    waiting_rate,
)
from cosim.engine.replay import RoundRecord, Sent, replay_cost
from cosim.graph import hop_distances, metropolis_hastings
from cosim.learning.history import UpdateHistory, calibrate, difference
from cosim.learning.learner import FULL_PRECISION_BITS, SlotLearner
from cosim.learning.privacy import mia_auc
from cosim.learning.residuals import (
    Residuals,
    compute_residuals,
    disagreement,
    draw_samples,
    drift_residual,
    learning_residual,
    sample_indices,
)
from cosim.network import LinkState, Message, NetworkBackend, TransferResult, create_network
from cosim.policy.priority import Action, refine_topology
from cosim.scenario import (
    RESIDUAL_POLICIES,
    Event,
    JoinEvent,
    LeaveEvent,
    Scenario,
    SilentLeaveEvent,
    scenario_hash,
)
from cosim.trace.writer import TraceWriter, same_mode_as

__all__ = ["RoundInfo", "Simulation", "run_scenario"]

HEADER_BITS = 8 * 64  # per message: ids, round, slot list
TOMBSTONE_BITS = 8 * 32
SCALE_BITS = 32  # a quantized module slice carries its float32 scale
ALLOCATORS = {"priority": "hull_greedy"}  # allocation.method -> solver (others by their own name)


@dataclass(frozen=True)
class Lag:
    """The copies as the priority allocation reads them at one exchange, indexed like its links.

    ``distance[i, j][s, g]``: how far receiver ``j``'s copy of slot ``s``, layer group
    ``g`` is from sender ``i``'s (:meth:`SlotLearner.pair_disagreement`), for every link
    ``i -> j`` of the exchange; ``errors[q][i, s, g]``: the quantization error of
    sender ``i``'s copy at ``q`` bits.  Live slots only (zero elsewhere).
    """

    distance: dict[tuple[int, int], np.ndarray]
    errors: dict[int, np.ndarray]


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
    tombstone_since: dict[int, float] = field(default_factory=dict)  # slot -> its owner last heard

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
        self._not_reached = list(events)  # scheduled events the run has not reached yet
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
        self._just_left: list[int] = []  # slots deleted at this round boundary
        self._teacher_flops: dict[int, float] = {}  # a leave's teacher pass, still to be computed
        self._just_joined: list[int] = []
        self._ready_at: dict[int, float] = {}  # a newcomer computes once its pull has arrived
        # Transmissions that outlast their call (a newcomer's pull): a radio sends one message
        # at a time, so a pull holds up its server's messages, and on a shared medium the
        # air around it.
        self._on_air: list[TransferResult] = []
        self._round = 0
        self._rounds_done = 0  # rounds played to their end (an interrupted run's summary counts these)
        self._slot_bits = sum(self.learner.slot_bits().values())
        self._allocation_rng = np.random.default_rng(np.random.SeedSequence([scenario.seed, 0xA110C]))
        n_groups = scenario.model.layer_groups
        elements = self.learner.slot_bits(1)
        self._group_elements = [elements.get(g, 0) for g in range(n_groups)]
        self._group_tensors = [
            sum(1 for name in self.learner.layers if self.learner.group_of[name] == g)
            for g in range(n_groups)
        ]
        self._extra_links: set[tuple[int, int]] = set()  # added by topology refinement
        self._last_arrival: dict[tuple[int, int, int, int], int] = {}  # (src, dst, slot, group) -> round
        self._bits_total = 0
        self._bits_before_events = 0
        self._extra_rounds = 0  # rounds a retrain adds (it replays the rounds before the event)
        self._last_reset = 0  # the round training last started from scratch
        # Each round's gossip since then, as it went: what retrain's replay would cost
        # (replay_cost) without the devices that have left.  Kept only where a correction
        # budget takes its limits or a round's cost from it.
        budget = scenario.correction.budget
        self._keep_replay = scenario.correction.policy in RESIDUAL_POLICIES and any(
            v is not None for v in (budget.seconds, budget.bits, budget.replay_share)
        )
        self._replay_records: list[RoundRecord] = []
        self._correction: CorrectionState | None = None
        # The residuals just before the last event, and the devices they were measured on; a
        # correction keeps the one of the event that started it.
        self._baseline: tuple[Residuals, list[int]] | None = None
        self._wall_allocator_s = 0.0
        self._wall_correction_s = 0.0
        # federaser: every device's stored updates, and the rounds trained outside a calibration
        self._history = UpdateHistory() if scenario.correction.policy == "federaser" else None
        self._trained_rounds = 0
        self._history_peak: tuple[int, int] = (0, 0)  # bytes of all devices, of the largest device

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
                if event.time_s == 0:  # due with round 0, before the round's process starts
                    self._queued.append(event)
                elif event.time_s is not None:
                    self.env.process(self._timed_event(event))
            self._evaluate("initial")
            main = self.env.process(self._rounds())
            self.env.run(until=main)
            if self._correction is not None:
                self._end_correction("the run ended")
            # Before the manifest says complete: a run stopped while saving is not complete.
            self.save_state()
        except BaseException:
            self.trace.finish(
                "interrupted", summary=self._summary(), wall_clock_run_s=time.perf_counter() - wall
            )
            raise
        summary = self._summary()
        self.trace.finish(
            "complete",
            summary=summary,
            wall_clock_run_s=round(time.perf_counter() - wall, 3),
            wall_clock_allocator_s=round(self._wall_allocator_s, 3),
            wall_clock_correction_s=round(self._wall_correction_s, 3),
        )
        return summary

    def _timed_event(self, event: Event) -> Generator[simpy.Event, None, None]:
        assert event.time_s is not None
        yield self.env.timeout(event.time_s)
        self._queued.append(event)

    def _rounds(self) -> Generator[simpy.Event, Any, None]:
        r = 0
        while r < self.scenario.training.rounds + self._extra_rounds:
            self._round = r
            self._membership_changes(r)
            plan = self._correction_plan(r)
            losses = yield from self._train_and_exchange(r, plan)
            self._correction_spent(r, plan)
            rounds = self.scenario.training.rounds + self._extra_rounds
            if r % self.scenario.training.eval_every == 0 or r == rounds - 1:
                acc = self._evaluate("round")
            else:
                acc = {}
            self._rounds_done = r + 1
            if self.on_round is not None:
                mean_loss = float(np.mean(list(losses.values()))) if losses else float("nan")
                self.on_round(RoundInfo(r, rounds, self.env.now, len(self.members.active), mean_loss, acc))
            r += 1

    # ------------------------------------------------------------------ membership

    def _membership_changes(self, r: int) -> None:
        due = [e for e in self.events if e.round == r] + self._queued
        self._queued = []
        self._bits_before_events = self._bits_total  # a correction these events supersede ends here
        self._not_reached = [e for e in self._not_reached if all(e is not d for d in due)]
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
            self._baseline = self._pre_event_residuals()
        # Leaves before joins: a device leaving at this boundary serves no newcomer's pull.
        for event in sorted(due, key=lambda e: isinstance(e, JoinEvent)):
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
        if due or detected:
            self._start_correction(r, due, detected)
        self._flood_tombstones()
        if due or detected:
            self._evaluate("after_event")

    def _still_on_air(self, now: float) -> list[TransferResult]:
        """The transmissions of earlier calls still under way at ``now``."""
        self._on_air = [r for r in self._on_air if r.finish_s > now]
        return list(self._on_air)

    @staticmethod
    def _radio_free(device: int, on_air: list[TransferResult], not_before: float) -> float:
        """When ``device``'s radio is through with its transmissions ``on_air``, not before ``not_before``."""
        return max([not_before] + [r.finish_s for r in on_air if r.src == device])

    def _take_slot(self, device: int) -> int:
        slot = 0 if self.learner.shared else self.members.free_slots.pop(0)
        self.learner.add_device(device, slot)
        self.members.live.append(device)
        self.members.live.sort()
        return slot

    def _join(self, device: int) -> None:
        slot = self._take_slot(device)
        self._just_joined.append(device)
        # It may pull a copy of a deleted slot from a device the tombstone has not reached yet.
        for waiting in self.members.pending_tombstones.values():
            waiting.add(device)
        now = self.env.now
        self.members.last_heard[device] = now
        links = self.network.links(now, self.members.live)
        i = links.index(device)
        # A device that has gone silent sends nothing, though its neighbours do not know yet.
        silent = np.array([d in self.members.silent_since for d in links.devices])
        rates = np.where(links.adjacency()[i] & ~silent, links.goodput_bps[i], 0.0)
        self._event("join", device, slot)
        if rates.max() <= 0:
            self._event("isolated", device, slot, {"reason": "no neighbour to pull copies from"})
            return
        source = self.members.live[int(np.argmax(rates))]
        live_slots = 1 if self.learner.shared else len(self.learner.slot_of) - 1
        # A newcomer of this same boundary serves copies only once its own have arrived.
        on_air = self._still_on_air(now)
        start = max(self._radio_free(source, on_air, now), self._ready_at.get(source, now))
        message = Message(source, device, live_slots * self._slot_bits + HEADER_BITS, start)
        deadline = start + self.scenario.network.slot_s
        (result,) = self.network.transfer(now, [message], deadline, on_air)
        # A pull past its deadline is given up then.
        self._on_air.append(replace(result, finish_s=min(result.finish_s, deadline)))
        self._transfer_row("pull", result, links, live_slots)
        if result.delivered:
            self.learner.pull(device, source)
            self._ready_at[device] = result.finish_s
        else:
            # The newcomer cannot tell that the pull failed before its deadline: it waits until
            # then, and starts from its own zero copies.
            self._ready_at[device] = deadline
        detail = {
            "from": source,
            "bits": result.bits,
            "finish_s": result.finish_s,
            "delivered": result.delivered,
            "deadline_s": deadline,  # until when the newcomer waits for it
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
        self._just_left.append(slot)
        self.members.live.remove(device)
        if self.learner.shared:
            # Shared adapters: the leaver's updates are mixed into everyone's adapter and
            # cannot be deleted; only a correction (federaser, retrain) removes them.
            self._event(kind, device, slot, {"tombstone_from": []})
            return
        self._event(kind, device, slot, {"tombstone_from": neighbours})
        self.members.pending_tombstones[slot] = set(self.members.live)
        self.members.tombstone_origin[slot] = neighbours
        # Silence counts from the last message anyone heard from it, not from its leave.
        self.members.tombstone_since[slot] = self.members.last_heard.get(device, self.env.now)

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
            if not any(d in live for d in self.members.tombstone_origin[slot]) and (
                now - self.members.tombstone_since[slot] >= self.scenario.training.silence_timeout_s
            ):
                # The owner left out of everyone's range: nobody heard it go, but every device
                # has now gone a whole silence timeout without hearing from the slot's owner.
                self.members.tombstone_origin[slot] = list(live)
                heard_s = self.members.tombstone_since[slot]
                self._event("tombstone_by_silence", -1, slot, {"owner_last_heard_s": heard_s})
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
                del self.members.tombstone_since[slot]
                self.learner.release_slot(slot)
                self.members.free_slots.append(slot)
                self.members.free_slots.sort()
                self._event("slot_released", -1, slot, time_s=last_s)

    # ------------------------------------------------------------------ correction

    def _start_correction(self, r: int, due: list[Event], detected: list[int]) -> None:
        """After a join or a leave: estimate the residuals and decide (before tombstones zero the copies)."""
        left, joined = self._just_left, self._just_joined
        self._just_left, self._just_joined = [], []
        spec = self.scenario.correction
        if spec.policy == "none" or not (left or joined):
            return
        now, active = self.env.now, self.members.active
        kind = "leave" if left else "join"
        if spec.policy == "federaser":
            # A join needs no unlearning (a calibration under way goes on); a leave during a
            # calibration starts it over, without the rounds it had still to replay.
            if left:
                if self._correction is not None:
                    state = self._correction
                    self._extra_rounds -= (state.replay_rounds or 0) - state.rounds
                    self._end_correction("superseded by a new event", self._bits_before_events)
                self._start_calibration(r, kind, now, active)
            return
        if self._correction is not None:
            self._end_correction("superseded by a new event", self._bits_before_events)
        if spec.policy == "retrain":
            self.learner.reset()
            self._replay_records = []
            self._extra_rounds += r - self._last_reset
            replay = r - self._last_reset
            self._last_reset = r
            self._correction = CorrectionState(
                kind=kind, event_round=r, start_s=now, start_bits=self._bits_total, affected=list(active)
            )
            self._correction.replay_rounds = replay
            self._event("correction", -1, -1, {"policy": "retrain", "event": kind, "replay_rounds": replay})
            if replay == 0:
                self._end_correction("nothing to replay")
            return
        if left:
            affected = list(active)
        else:
            links = self.network.links(now, active)
            graph = self._graph(links)
            neighbours = set()
            for d in joined:
                if d in active:
                    neighbours |= {active[j] for j in np.flatnonzero(graph[active.index(d)])}
            affected = sorted(set(joined) | neighbours)
        # Local correction trains on the retained data after a leave and on the newcomer's
        # after a join (method.md section 6): the newcomer's neighbours enter the residual
        # estimate, but extra steps on their own data would not teach anyone its facts.
        trains = affected if left else sorted(d for d in joined if d in active)
        self._correction = CorrectionState(
            kind=kind,
            event_round=r,
            start_s=now,
            start_bits=self._bits_total,
            affected=affected,
            trains=trains,
            baseline=self._baseline,
        )
        self._budget_limits(self._correction, r, now)
        if left:
            # The deletion shock needs the departed slot's copies: measure it before the
            # tombstones zero them.  Everything else is measured at the round's start, on
            # the model the devices will go on training (the slot deleted where the
            # tombstone arrived).
            shock = np.zeros((len(affected), self.scenario.model.layer_groups))
            for slot in left:
                shock += self._residuals(affected, deleted_slot=slot, event_round=r).shock_devices
            self._correction.shock = dict(zip(affected, shock, strict=True))
            if spec.local_target == "teacher" and spec.policy in ("priority", "local"):
                # Local correction's target, taken with the leaver's slot still in every model;
                # the forward pass counts in the devices' compute of this round.
                teacher = self.learner.teacher_logits(trains)
                self._correction.teacher = teacher
                self._teacher_flops = {d: self.learner.forward_flops(len(t)) for d, t in teacher.items()}

    def _budget_limits(self, state: CorrectionState, r: int, now: float) -> None:
        """Set what ``state`` may spend in all and what a round costs it (:func:`fit_plan`).

        The rounds before the event are what retrain would replay (a residual policy never
        starts training over).  Their gossip replayed without the devices no longer active
        (:func:`~cosim.engine.replay.replay_cost`) gives ``replay_share``'s limits, and its
        mean a round's cost.
        """
        budget = self.scenario.correction.budget
        net = self.scenario.network
        replay = replay_cost(
            self._replay_records,
            self._gone(),
            slot_s=net.slot_s,
            access_delay_s=net.access_delay_s,
            packet_bits=net.packet_bits,
        )
        state.replay = replay
        history_s, history_bits = replay.seconds, replay.bits
        share = budget.replay_share

        def limit(cap: float | None, history: float) -> float | None:
            shares = () if share is None else (share * history,)
            return min((v for v in (cap, *shares) if v is not None), default=None)

        state.limit_s = limit(budget.seconds, history_s)
        state.limit_bits = limit(budget.bits, history_bits)
        if replay.rounds > 0:
            step_flops = self.learner.flops_per_step()
            trainees = state.trainees(self.members.active) or self.members.active
            step_s = max(step_flops / self.flops_per_s[d] for d in trainees)
            state.round_cost = RoundCost(history_s / replay.rounds, history_bits / replay.rounds, step_s)

    def _gone(self) -> set[int]:
        """The slot owners of the replay records that are not active now (-1: an ownerless slot)."""
        active = set(self.members.active)
        seen = {-1}
        for record in self._replay_records:
            seen.update(record.computed_s)
            seen.update(d for m in record.messages for d in (m.src, m.dst, *m.slot_bits))
        return seen - active

    def _fit_to_budget(self, state: CorrectionState, plan: Plan) -> Plan:
        """``plan`` cut to what is left of the correction's seconds and bits (:func:`fit_plan`)."""
        if state.round_cost is None or (state.limit_s is None and state.limit_bits is None):
            return plan
        left_s = math.inf if state.limit_s is None else state.limit_s - (self.env.now - state.start_s)
        left_bits = (
            math.inf if state.limit_bits is None else state.limit_bits - (self._bits_total - state.start_bits)
        )
        # A leave's teacher pass (local_target teacher) is computed in this round whatever the plan.
        active = self.members.active
        left_s -= max(
            (f / self.flops_per_s[d] for d, f in self._teacher_flops.items() if d in active), default=0.0
        )
        return fit_plan(plan, left_s, left_bits, state.round_cost)

    def _start_calibration(self, r: int, kind: str, now: float, active: list[int]) -> None:
        """FedEraser: back to the initial adapter, then replay the stored rounds without the leavers."""
        assert self._history is not None
        stored_bytes = self._history.nbytes()
        self._history.forget(self._history.devices() - set(active))
        replay = len(self._history.entries)
        self.learner.reset()
        self._extra_rounds += replay
        self._correction = CorrectionState(
            kind=kind, event_round=r, start_s=now, start_bits=self._bits_total, affected=list(active)
        )
        self._correction.replay_rounds = replay
        detail = {
            "policy": "federaser",
            "event": kind,
            "replay_rounds": replay,
            "history_bytes": stored_bytes,
            "calibration_steps": self._calibration_steps(),
        }
        self._event("correction", -1, -1, detail)
        if replay == 0:
            self._end_correction("nothing stored to replay")

    def _calibration_steps(self) -> int:
        fraction = self.scenario.correction.federaser.calibration_fraction
        return max(1, round(fraction * self.scenario.training.local_steps))

    def _local_training(
        self, r: int, active: list[int], tau: int, mu: Any
    ) -> tuple[dict[int, float], dict[int, int]]:
        """This round's local steps: losses and steps per device.

        Under federaser, every ``interval_rounds``-th ordinary round stores each device's
        update, and a calibration round trains the devices stored in the replayed round
        for the calibration steps and rescales their updates to the stored norms.
        """
        state, history = self._correction, self._history
        if history is None:
            return self.learner.train(active, tau, self.rngs, mu=mu), dict.fromkeys(active, tau)
        if state is not None:  # under federaser every correction is a calibration
            entry = history.entries[state.rounds]  # the rounds replayed so far
            devices = [d for d in active if d in entry.updates]
            steps = self._calibration_steps()
            before = self.learner.own_state(devices)
            losses = self.learner.train(devices, steps, self.rngs)
            calibrated = difference(self.learner.own_state(devices), before)
            calibrated = {d: calibrate(calibrated[d], entry.updates[d]) for d in devices}
            self.learner.set_updates(before, calibrated)
            entry.updates = calibrated  # fresh tensors: set_updates copied them into the adapters
            state.local_steps += steps * len(devices)
            return losses, {d: steps if d in calibrated else 0 for d in active}
        store = self._trained_rounds % self.scenario.correction.federaser.interval_rounds == 0
        self._trained_rounds += 1
        before = self.learner.own_state(active) if store else {}
        losses = self.learner.train(active, tau, self.rngs, mu=mu)
        if store:
            history.record(r, difference(self.learner.own_state(active), before))
            per_device = history.nbytes_per_device()
            total, largest = self._history_peak
            self._history_peak = (
                max(total, sum(per_device.values())),
                max(largest, max(per_device.values(), default=0)),
            )
        return losses, dict.fromkeys(active, tau)

    def _pre_event_residuals(self) -> tuple[Residuals, list[int]] | None:
        """The residual terms just before the event, on every active device (relative tolerances)."""
        spec = self.scenario.correction
        if spec.policy not in RESIDUAL_POLICIES or spec.tolerances.mode != "relative":
            return None
        active = list(self.members.active)
        return self._residuals(active), active

    @staticmethod
    def _baseline_detail(state: CorrectionState) -> dict[str, Any]:
        """The pre-event terms the relative tolerances divide by, for the trace."""
        if state.baseline is None:
            return {}
        residuals, devices = state.baseline
        return {
            "devices": devices,
            "learn": residuals.learn.tolist(),
            "learn_devices": residuals.learn_devices.tolist(),
            "loss_devices": residuals.loss_devices.tolist(),
            "accuracy_devices": residuals.accuracy_devices.tolist(),
            "energy": residuals.energy.tolist(),
            "kappa": residuals.kappa.tolist(),
            "drift": residuals.drift.tolist(),
            "consensus": residuals.consensus.tolist(),
            "magnitude": residuals.magnitude.tolist(),
        }

    def _residuals(
        self, affected: list[int], deleted_slot: int | None = None, event_round: int | None = None
    ) -> Residuals:
        """The residual terms on ``affected``, each device's samples drawn by the event's round
        (default: this round), so that the baseline and every decision after one event see
        the same samples of a device."""
        wall = time.perf_counter()
        live = self.members.active
        links = self.network.links(self.env.now, live)
        key = self._sample_key(self._round if event_round is None else event_round)
        samples = draw_samples(self.learner, affected, self.scenario.correction.samples_per_device, key)
        residuals = compute_residuals(
            self.learner,
            devices=live,
            samples=samples,
            adjacency=self._graph(links),
            affected=affected,
            deleted_slot=deleted_slot,
            populations={d: len(self.learner.task.train[d]) for d in affected},
        )
        self._wall_correction_s += time.perf_counter() - wall
        return residuals

    def _sample_key(self, event_round: int) -> tuple[int, int, int]:
        """The seed of every device's residual samples after the event of ``event_round``."""
        return (self.scenario.seed, 0x5E51D, event_round)

    def _teacher_distance(self, state: CorrectionState) -> dict[int, float]:
        """Per trainee still active, the mean squared distance of its model's centred answer
        logits from the teacher's, on the samples its residuals are measured on."""
        assert state.teacher is not None
        wall = time.perf_counter()
        n = self.scenario.correction.samples_per_device
        key = self._sample_key(state.event_round)
        trainees = state.trainees(self.members.active)  # the teacher was taken for every one
        rows = {d: sample_indices(len(self.learner.task.train[d]), n, key, d) for d in trainees}
        now = self.learner.teacher_logits(trainees, rows)
        distance = {
            d: float((now[d] - state.teacher[d][torch.as_tensor(rows[d])]).pow(2).mean()) for d in trainees
        }
        self._wall_correction_s += time.perf_counter() - wall
        return distance

    def _decide(self, state: CorrectionState) -> Any:
        spec = self.scenario.correction
        live = self.members.active
        affected = [d for d in state.affected if d in live and d in self.learner.slot_of]
        state.affected = affected
        residuals = self._residuals(affected, event_round=state.event_round)
        baseline, n_before = (
            (None, 1) if state.baseline is None else (state.baseline[0], len(state.baseline[1]))
        )
        if state.shock is None:
            shock_devices = residuals.shock_devices
        else:
            zero = np.zeros(self.scenario.model.layer_groups)
            shock_devices = np.array([state.shock.get(d, zero) for d in affected]).reshape(
                residuals.shock_devices.shape
            )
        # The empirical Fisher grows with the gradients it is estimated from, so E / (2 kappa)
        # measured after the event does not change when every gradient doubles (and the drift
        # term grows with their fourth power).  Against a pre-event baseline the curvature is
        # the steady state's: the terms follow the gradient energy and spread the event added.
        if baseline is not None:
            kappa = baseline.kappa
            residuals = replace(
                residuals,
                drift=drift_residual(residuals.eta, residuals.tau, baseline.kappa_max, residuals.zeta_sq),
            )
        else:
            kappa = residuals.kappa
        residuals = replace(
            residuals,
            shock_devices=shock_devices,
            learn=learning_residual(residuals.energy, kappa, shock_devices.sum(axis=0)),
            learn_devices=learning_residual(residuals.energy_devices, kappa, shock_devices),
        )
        measured, dropped = None, None
        if state.baseline is not None:
            pre_event, devices = state.baseline
            before = dict(zip(devices, pre_event.loss_devices.tolist(), strict=True))
            measured = loss_ratio(dict(zip(affected, residuals.loss_devices.tolist(), strict=True)), before)
            if state.kind != "join" and all(d in devices for d in affected):
                # After a leave alone: a newcomer (a join at the same boundary) has no
                # accuracy before to fall from, and its learning is no retained device's.
                dropped = accuracy_drop(
                    dict(zip(affected, residuals.accuracy_devices.tolist(), strict=True)),
                    dict(zip(devices, pre_event.accuracy_devices.tolist(), strict=True)),
                )
        teacher: dict[str, Any] = {}
        decided, counted = residuals, measured
        if state.teacher is not None:
            distance = self._teacher_distance(state)
            now = float(np.mean(list(distance.values()))) if distance else 0.0
            teacher = {"teacher_distance": now, "teacher_distance_devices": list(distance.values())}
            share = spec.tolerances.teacher_progress
            if share is not None and state.teacher_before is not None and not state.teacher_done:
                # What the last round of extra steps (and its regular steps) cut off the distance.
                progress = 1.0 - now / state.teacher_before if state.teacher_before > 0 else 0.0
                teacher["teacher_progress"] = progress
                state.teacher_done = progress < share
            teacher["teacher_done"] = state.teacher_done
            if state.teacher_done:
                # The steps towards the teacher no longer fit what is left: the learning term,
                # which they change but do not fit, counts as within tolerance.
                decided = replace(
                    residuals,
                    learn=np.zeros_like(residuals.learn),
                    learn_devices=np.zeros_like(residuals.learn_devices),
                )
                counted = None
        args = (decided, spec, spec.budget.rounds - state.rounds, baseline, n_before, len(affected), counted)
        decision = decide_for(*args)
        settling: list[list[bool]] | None = None
        if state.first_terms is not None and state.rounds >= spec.wait_rounds:
            # After waiting: a term the rounds left bring within tolerance at the rate it fell
            # while the correction waited (regular rounds alone) is left to them.
            terms_now = normalised_terms(decision)
            if state.wait_rate is None:
                state.wait_rate = waiting_rate(state.first_terms, terms_now, state.rounds)
            mask = settling_terms(state.wait_rate, terms_now, spec.budget.rounds - state.rounds)
            settling = mask.tolist()
            if mask.any():
                decision = decide_for(*args, settling=mask)
        if state.rounds == 0 and spec.wait_rounds:
            state.first_terms = normalised_terms(decision)
        state.history.append(
            {
                **teacher,
                "learn": residuals.learn.tolist(),
                "learn_devices": residuals.learn_devices.tolist(),
                "loss_devices": residuals.loss_devices.tolist(),
                "loss_ratio": measured,
                "accuracy_devices": residuals.accuracy_devices.tolist(),
                **({} if dropped is None else {"accuracy_drop": dropped}),
                "drift": residuals.drift.tolist(),
                "consensus": residuals.consensus.tolist(),
                "energy": residuals.energy.tolist(),
                "energy_unbiased": residuals.energy_unbiased.tolist(),
                "kappa": residuals.kappa.tolist(),
                "shock": residuals.shock.tolist(),
                "shock_devices": residuals.shock_devices.tolist(),
                "disagreement": residuals.disagreement.tolist(),
                "magnitude": residuals.magnitude.tolist(),
                "gamma": residuals.gamma,
                "components": residuals.n_components,
                **({} if settling is None else {"settling": settling}),
            }
        )
        return decision

    def _decision_detail(
        self, state: CorrectionState, decision: Any, plan: Plan, topology_reason: str, added: int
    ) -> dict[str, Any]:
        """A decision and the plan it became, as the ``correction`` event's detail."""
        spec = self.scenario.correction
        detail = {
            "policy": spec.policy,
            "event": state.kind,
            "correction_round": state.rounds,
            "affected": state.affected,
            "actions": [str(a) for a in plan.actions],
            "reasons": list(decision.reasons),
            # Per layer group, the term priority acts on and its normalised value (the
            # dominant term, unless event_first defers a consensus term only the share holds).
            "acted": list(decision.acted),
            "acted_value": list(decision.acted_value),
            "topology_reason": topology_reason,
            "normalised": {
                "learn": list(decision.normalised_learn),
                "drift": list(decision.normalised_drift),
                "consensus": list(decision.normalised_consensus),
            },
            "residuals": state.history[-1],
            # The pre-event terms, with the event's first decision (relative tolerances only).
            "baseline": self._baseline_detail(state) if state.rounds == 0 else {},
            "local_steps": plan.extra_steps,
            "local_group_steps": list(plan.extra_group_steps),
            "local_devices": state.trainees(self.members.active) if plan.extra_steps else [],
            "mu": list(plan.mu),
            "syncs": plan.syncs,
            "sync_groups": list(plan.sync_groups),
            "links_added": added,
        }
        if state.rounds == 0 and (state.limit_s is not None or state.limit_bits is not None):
            detail["budget_limits"] = {"seconds": state.limit_s, "bits": state.limit_bits}
            if state.replay is not None:
                detail["replay_estimate"] = {
                    "seconds": state.replay.seconds,
                    "bits": state.replay.bits,
                    "rounds": state.replay.rounds,
                }
        return detail

    def _correction_plan(self, r: int) -> Plan:
        state = self._correction
        if state is None or state.replay_rounds is not None:
            return Plan()
        spec = self.scenario.correction
        decision = self._decide(state)
        eta, tau = self.scenario.training.learning_rate, self.scenario.training.local_steps
        plan = plan_round(spec.policy, decision, spec, eta, tau)
        topology_reason = decision.topology_reason
        added = 0
        gate, dropped = spec.tolerances.accuracy_drop, state.history[-1].get("accuracy_drop")
        if gate is not None and dropped is not None and dropped < gate:
            # The retained devices have (nearly) the accuracy they had before the leave on
            # their own samples: nothing for a correction to make up, whatever the terms say.
            reason = (
                f"accuracy on the retained devices' samples {0.0 - dropped:+.3f} since before the "
                f"event (a fall of less than accuracy_drop {gate:g})"
            )
            self._log_idle(state, decision, topology_reason, reason, "accuracy_gate")
            self._end_correction(reason)
            return Plan()
        if state.rounds < spec.wait_rounds and not plan.idle:
            # A regular round first, as under none (the allocator weighs the groups by their
            # disagreement): what it recovers needs no correction.
            wait = f"waiting: regular round {state.rounds + 1} of {spec.wait_rounds} before acting"
            self._log_idle(state, decision, topology_reason, wait, "waiting")
            return Plan()
        if plan.links:
            wall = time.perf_counter()
            added = self._refine(plan.links)
            self._wall_correction_s += time.perf_counter() - wall
            state.links_added += added
            if spec.policy == "priority" and added:
                # The graph changed: size this round's other actions on the new graph.
                decision = self._decide(state)
                plan = replace(plan_round(spec.policy, decision, spec, eta, tau), links=0)
        if plan.extra_steps and not state.trainees(self.members.active):
            # The newcomer the extra steps were for is gone: nothing to train on.
            plan = replace(plan, extra_steps=0, extra_group_steps=())
        planned = plan
        plan = self._fit_to_budget(state, plan)
        if state.teacher is not None:
            # tolerances.teacher_progress compares the next decision's distance with this one's.
            state.teacher_before = state.history[-1]["teacher_distance"] if plan.extra_steps else None
        state.weights = allocation_weights(decision)
        detail = self._decision_detail(state, decision, plan, topology_reason, added)
        if plan != planned:
            # Cut to what is left of the budget: what the decision asked for.
            detail["budget_cut"] = {"local_steps": planned.extra_steps, "syncs": planned.syncs}
        self._event("correction", -1, -1, detail)
        plan = replace(plan, links=0)  # spent
        acting = not plan.idle or added > 0
        state.acting_rounds += acting
        if not acting:
            if topology_reason:
                reason = f"{topology_reason}, and no feasible link to add"
            elif all(a == Action.NONE for a in plan.actions):
                settles = bool(np.any(state.history[-1].get("settling", False)))
                reason = "every residual within tolerance" + (" or settling" if settles else "")
            elif not planned.idle:
                reason = "the budget left does not fit the chosen action"
            else:
                reason = "the chosen action can do nothing more"
            self._end_correction(reason)
            return Plan()
        return plan

    def _log_idle(
        self, state: CorrectionState, decision: Any, topology_reason: str, why: str, flag: str
    ) -> None:
        """Trace a decision that does nothing this round: its reasons after ``why``, marked ``flag``."""
        idle = Plan(actions=(Action.NONE,) * decision.n_groups)
        detail = self._decision_detail(state, decision, idle, topology_reason, 0)
        detail["reasons"] = [f"{why}; {reason}" for reason in decision.reasons]
        detail[flag] = True
        self._event("correction", -1, -1, detail)
        state.weights = None

    def _correction_spent(self, r: int, plan: Plan) -> None:
        state = self._correction
        if state is None:
            return
        state.rounds += 1
        # The deletion shock counts in the decisions of the event's round only (the one after a
        # topology refinement included), not in later rounds.
        state.shock = None
        budget = self.scenario.correction.budget
        if state.replay_rounds is not None:
            if state.rounds >= state.replay_rounds:
                replayed = "stored round" if self._history is not None else "round before the event"
                self._end_correction(f"replayed every {replayed}")
            return
        spent_s = self.env.now - state.start_s
        spent_bits = self._bits_total - state.start_bits
        if state.rounds >= budget.rounds:
            self._end_correction("round budget spent")
        elif state.limit_s is not None and spent_s >= state.limit_s:
            self._end_correction("time budget spent")
        elif state.limit_bits is not None and spent_bits >= state.limit_bits:
            self._end_correction("bit budget spent")

    def _end_correction(self, reason: str, bits_total: int | None = None) -> None:
        """Log the correction's cost: bits up to ``bits_total`` (default: all sent so far; when
        new events supersede it, the total before their pulls, which belong to them)."""
        state = self._correction
        assert state is not None
        self._correction = None
        self._event(
            "correction_end",
            -1,
            -1,
            {
                "policy": self.scenario.correction.policy,
                "event": state.kind,
                "reason": reason,
                "rounds": state.rounds,
                "seconds": self.env.now - state.start_s,
                "bits": (self._bits_total if bits_total is None else bits_total) - state.start_bits,
                "extra_local_steps": state.local_steps,
                "teacher_rows": state.teacher_rows,
                "syncs": state.syncs,
                "links_added": state.links_added,
                # A replay (retrain, federaser) works in every round it lasts.
                "acting_rounds": state.rounds if state.replay_rounds is not None else state.acting_rounds,
            },
        )

    # ------------------------------------------------------------------ graph

    def _graph(self, links: LinkState) -> np.ndarray:
        """The gossip graph over ``links.devices``: feasible links, thinned and refined."""
        feasible = links.adjacency()
        k = self.scenario.training.gossip_degree
        if k is None:
            graph = feasible.copy()
        else:
            graph = np.zeros_like(feasible)
            rates = np.where(feasible, links.goodput_bps, -np.inf)
            for i in range(len(graph)):
                best = np.argsort(-rates[i], kind="stable")[:k]
                graph[i, best[feasible[i, best]]] = True
            graph |= graph.T
        index = {d: i for i, d in enumerate(links.devices)}
        for a, b in self._extra_links:
            if a in index and b in index and feasible[index[a], index[b]]:
                graph[index[a], index[b]] = graph[index[b], index[a]] = True
        return graph

    def _gossip_graph(self, time_s: float, members: list[int]) -> tuple[LinkState, np.ndarray, np.ndarray]:
        """The links among ``members`` at ``time_s``, the gossip graph on them and its mixing weights."""
        links = self.network.links(time_s, members)
        adjacency = self._graph(links)
        return links, adjacency, metropolis_hastings(adjacency)

    def _refine(self, k: int) -> int:
        """Topology refinement: add up to ``k`` feasible links that most raise the spectral gap."""
        live = self.members.active
        links = self.network.links(self.env.now, live)
        graph = self._graph(links)
        refined = refine_topology(graph, links.adjacency(), k)
        added = np.argwhere(np.triu(refined & ~graph, k=1))
        for i, j in added:
            self._extra_links.add((live[int(i)], live[int(j)]))
        return len(added)

    def _group_weights(self, active: list[int]) -> np.ndarray:
        """Allocation weight per layer group: the correction's residual terms, else the disagreement."""
        n_groups = self.scenario.model.layer_groups
        if self._correction is not None and self._correction.weights is not None:
            weights = np.asarray(self._correction.weights, dtype=float)
        else:
            index = torch.as_tensor(active, dtype=torch.long)
            copies = {n: c[index] for n, c in self.learner.copies.items()}
            weights = disagreement(copies, self.learner.group_of, n_groups)
            weights = weights / self.scenario.correction.tolerances.consensus
        weights = np.nan_to_num(np.maximum(weights, 0.0))
        if weights.max() <= 0:
            return np.ones(n_groups)
        return np.maximum(weights, 1e-6 * weights.max())

    # ------------------------------------------------------------------ a round

    def _train_and_exchange(self, r: int, plan: Plan) -> Generator[simpy.Event, Any, dict[int, float]]:
        env = self.env
        t0 = env.now
        tau = self.scenario.training.local_steps
        members = self.members.live
        active = self.members.active
        links, adjacency, weights = self._gossip_graph(t0, members)
        n_groups = self.scenario.model.layer_groups
        group_weights = (
            self._group_weights(active)
            if self.scenario.allocation.method == "priority"
            else np.ones(n_groups)
        )
        # An exchange goes over the channel at its own start: after a correction's extra
        # exchanges or steps the round's later exchanges see the links of their time, and
        # gossip on the graph those links give (fading may have dropped or added a link).
        # A newcomer acts (sends, computes) only once its pull has arrived.
        pulled = {d: self._ready_at.pop(d, t0) for d in active}
        for _ in range(plan.syncs):
            now = env.now
            if links.time_s != now:
                links, adjacency, weights = self._gossip_graph(now, members)
            start = {d: max(now, pulled[d]) for d in active}
            yield from self._exchange(
                r, links, adjacency, weights, start, plan.sync_groups, "sync", group_weights
            )
        sync_end = env.now
        # When each device's regular steps can start: after the syncs, its pull and its extra steps.
        free = {d: max(sync_end, pulled[d]) for d in active}

        mu: float | tuple[float, ...] = plan.mu or 0.0
        flops_per_step = self.learner.flops_per_step()
        extra: list[int] = []
        extra_s: dict[int, float] = {}
        # A leave's teacher pass (local_target teacher), computed before this round's steps.
        teacher_flops = {d: f for d, f in self._teacher_flops.items() if d in active}
        self._teacher_flops = {}
        teacher_s = {d: f / self.flops_per_s[d] for d, f in teacher_flops.items()}
        state = self._correction
        if state is not None:
            state.syncs += plan.syncs
            extra = state.trainees(active) if plan.extra_steps else []
            if extra:
                # Only local correction's groups train here; a damped group has no extra steps.
                # The trainees correct together, each against copies that lack the others'
                # corrections: each keeps 1/m of its displacement (block-parallel step).
                self.learner.train(
                    extra,
                    plan.extra_steps,
                    self.rngs,
                    group_steps=plan.extra_group_steps,
                    step_scale=parallel_step_scale(
                        len(extra), state.kind, self.scenario.correction.step_share
                    ),
                    teacher=state.teacher if state.kind != "join" else None,
                    lr=self.scenario.correction.learning_rate,
                )
                state.local_steps += plan.extra_steps * len(extra)
                extra_s = {
                    d: flops_per_step * plan.extra_steps / self.flops_per_s[d] + teacher_s.get(d, 0.0)
                    for d in extra
                }
                # The corrected slots travel before the round's regular steps: trained on
                # against copies that lack the correction, the devices would undo it.
                free = {d: free[d] + extra_s.get(d, 0.0) for d in active}
                if links.time_s != env.now:
                    links, adjacency, weights = self._gossip_graph(env.now, members)
                yield from self._exchange(
                    r, links, adjacency, weights, free, tuple(range(n_groups)), "sync", group_weights
                )
                state.syncs += 1
                sync_end = env.now
                free = {d: max(sync_end, free[d]) for d in active}
        losses, trained = self._local_training(r, active, tau, mu)
        steps = {d: trained[d] + (plan.extra_steps if d in extra else 0) for d in active}
        compute_s = {
            d: flops_per_step * steps[d] / self.flops_per_s[d] + teacher_s.get(d, 0.0) for d in active
        }
        # The extra steps were computed before the correction's exchange, within sync_s.
        tx_start = {d: free[d] + compute_s[d] - extra_s.get(d, 0.0) for d in active}
        if links.time_s != env.now:
            links, adjacency, weights = self._gossip_graph(env.now, members)
        sent, received = yield from self._exchange(
            r, links, adjacency, weights, tx_start, tuple(range(n_groups)), "gossip", group_weights
        )
        round_end = env.now
        for d in active:
            self.trace.add(
                "rounds",
                round=r,
                time_s=t0,
                device=d,
                slot=self.learner.slot_of[d],
                loss=losses.get(d, float("nan")),
                steps=steps[d],
                flops=flops_per_step * steps[d] + teacher_flops.get(d, 0.0),
                compute_s=compute_s[d],
                tx_start_s=sent[d][4],
                tx_end_s=sent[d][3],
                bits_sent=sent[d][0],
                bits_received=received[d],
                messages_sent=sent[d][1],
                messages_delivered=sent[d][2],
                round_end_s=round_end,
                sync_s=sync_end - t0,
            )
        return losses

    def _exchange(
        self,
        r: int,
        links: LinkState,
        adjacency: np.ndarray,
        weights: np.ndarray,
        tx_start: dict[int, float],
        groups: tuple[int, ...],
        purpose: str,
        group_weights: np.ndarray,
    ) -> Generator[simpy.Event, Any, tuple[dict[int, list[Any]], dict[int, int]]]:
        """Every device in ``tx_start`` sends ``groups`` of its slots to its neighbours; all mix.

        A device starts sending when it has finished computing (``tx_start``); the exchange's
        deadline is the slowest device's start plus ``network.slot_s``.
        """
        env = self.env
        now = env.now
        computed = max(tx_start.values(), default=now)  # every device has finished computing
        deadline = computed + self.scenario.network.slot_s
        members = list(links.devices)
        active = list(tx_start)
        n_groups = self.scenario.model.layer_groups
        method = self.scenario.allocation.method
        by_slot = method == "priority"
        # [dst, src, slot, group]: the precision at which each slot's layer group travelled
        # (0: not in the message, and not mixed)
        precision = np.zeros((len(members), len(members), self.learner.capacity, n_groups), dtype=np.int64)
        messages, carries, allocations = [], {}, []
        versions: dict[int, np.ndarray] = {}  # under ``full``: each sender's copies as sent
        offered: dict[tuple[int, int], list[int]] = {}  # (src, dst): the slots its message may carry
        lag = self._lag(links, adjacency, active) if by_slot else None
        slots = self.learner.live_slots()
        # When each device's radio starts: once it has computed, and is through with any pull it serves.
        on_air = self._still_on_air(now)
        radio = {d: self._radio_free(d, on_air, tx_start[d]) for d in active}
        for d in active:
            if method == "full":
                versions[d] = self.learner.versions(d)
            i = links.index(d)
            for j in np.flatnonzero(adjacency[i]):
                # Receivers mix every live slot of the sender's view but their own (an owner's
                # copy of its slot is authoritative), so no message carries the receiver's own
                # slot.  Under ``full`` a message carries the slots whose current copy has not
                # reached its receiver yet (the receiver holds the rest as they are); under a
                # budget, what a receiver holds depends on what got through, so every other
                # live slot is offered.
                own = None if self.learner.shared else self.learner.slot_of.get(members[j])
                offer = offered[(d, members[j])] = [s for s in slots if s != own]
                owed = (
                    self.learner.owed(d, members[j], versions[d], offer, groups) if method == "full" else None
                )
                chosen, bits, rows = self._allocate(
                    links, i, int(j), offer, groups, group_weights, float(weights[j, i]), lag, owed
                )
                if by_slot and purpose == "sync" and not chosen.any():
                    # Nothing worth its bits: a correction's extra exchange sends no empty
                    # message (the round's own exchange still carries every device's header).
                    continue
                if by_slot:
                    precision[j, i] = chosen
                else:
                    precision[j, i][offer] = chosen
                messages.append(Message(d, members[j], bits, radio[d]))
                allocations.append(rows)
                carried = chosen[:, list(groups)] if by_slot else chosen[None, list(groups)]
                if by_slot:
                    n_slots = int((chosen > 0).any(axis=1).sum())
                else:
                    n_slots = len(offer if owed is None else set().union(*owed.values()))
                # slots in the message, layer groups sent
                carries[(d, members[j])] = (n_slots, int((carried > 0).any(axis=0).sum()))
        results = self.network.transfer(now, messages, deadline, on_air)
        if purpose == "gossip" and self._keep_replay:
            self._replay_records.append(self._round_record(now, tx_start, messages, results, allocations))

        delivered = np.zeros((len(members), len(members)), dtype=bool)
        needed: list[simpy.Event] = []
        # A silent device receives nothing (its neighbours do not know yet and still send).
        arrived = [res.delivered and res.dst not in self.members.silent_since for res in results]
        for msg, res, ok, rows in zip(messages, results, arrived, allocations, strict=True):
            if ok:
                delivered[links.index(res.dst), links.index(res.src)] = True
                self.members.last_heard[res.src] = res.finish_s
                if res.src in versions:
                    self.learner.mark_delivered(
                        res.src, res.dst, versions[res.src], offered[(res.src, res.dst)], groups
                    )
                needed.append(env.timeout(max(res.finish_s - now, 0.0)))
            else:
                # Its receiver cannot tell that it will not arrive (one cut off by the deadline
                # is still on the air until then): it waits until the deadline.
                needed.append(env.event())
            n_slots, sent_groups = carries[(msg.src, msg.dst)]
            self._transfer_row(
                purpose, res, links, n_slots, delivered=ok,
                budget_bits=rows[0]["budget_bits"] if rows else None, groups_sent=sent_groups,
            )  # fmt: skip
            for row in rows:
                key = (res.src, res.dst, row["slot"], row["group"])
                if ok and row["precision_bits"] > 0:
                    self._last_arrival[key] = r
                last = self._last_arrival.get(key)
                self.trace.add(
                    "allocations",
                    round=r,
                    time_s=now,
                    purpose=purpose,
                    src=res.src,
                    dst=res.dst,
                    delivered=ok,
                    staleness_rounds=None if last is None else r - last,
                    **row,
                )
        # A neighbour of a silent device waits for its message until the deadline.
        for d in self.members.silent_since:
            if d in members and adjacency[links.index(d)].any():
                needed.append(env.event())
        # And until every device has finished computing: one without a link sends nothing,
        # but the round does not end while it is still busy.
        needed.append(env.timeout(max(computed - now, 0.0)))
        yield env.any_of([env.all_of(needed), env.timeout(deadline - now)])

        index = [links.index(d) for d in active]
        self.learner.mix(
            active,
            weights[np.ix_(index, index)],
            delivered[np.ix_(index, index)],
            adopt_owner=self.scenario.training.adopt_owner_copy,
            precision=precision[np.ix_(index, index)],
        )

        # bits, messages, delivered, end, start (a pull it serves may hold its radio past tx_start)
        sent: dict[int, list[Any]] = {d: [0, 0, 0, radio[d], radio[d]] for d in active}
        received = dict.fromkeys(active, 0)
        for res, ok in zip(results, arrived, strict=True):
            if res.src in sent:
                s = sent[res.src]
                s[0] += res.delivered_bits
                s[1] += 1
                s[2] += int(ok)
                s[3] = max(s[3], min(res.finish_s, deadline))
                if ok and res.dst in received:
                    received[res.dst] += res.bits
        return sent, received

    def _round_record(
        self,
        now: float,
        tx_start: dict[int, float],
        messages: list[Message],
        results: list[TransferResult],
        allocations: list[list[dict[str, Any]]],
    ) -> RoundRecord:
        """A gossip exchange as it went, each message's payload bits per slot owner (:class:`RoundRecord`)."""
        owner = {} if self.learner.shared else {s: d for d, s in self.learner.slot_of.items()}
        sent = []
        for msg, res, rows in zip(messages, results, allocations, strict=True):
            slot_bits: dict[int, int] = {}
            if not self.learner.shared:
                for row in rows:
                    d = owner.get(row["slot"], -1)
                    slot_bits[d] = slot_bits.get(d, 0) + row["bits"]
            sent.append(
                Sent(
                    src=msg.src,
                    dst=msg.dst,
                    bits=msg.bits,
                    ready_s=msg.start_s,
                    start_s=res.start_s,
                    finish_s=res.finish_s,
                    linked=res.rate_bps > 0,
                    slot_bits=slot_bits,
                )
            )
        return RoundRecord(start_s=now, computed_s=dict(tx_start), messages=tuple(sent))

    def _lag(self, links: LinkState, adjacency: np.ndarray, senders: list[int]) -> Lag:
        """What the priority allocation reads of the copies, once per exchange (:class:`Lag`)."""
        wall = time.perf_counter()
        slots = self.learner.live_slots()
        index = [links.index(d) for d in senders]
        pairs = [(i, int(j)) for i in index for j in np.flatnonzero(adjacency[i])]
        distance = self.learner.pair_disagreement(
            [links.devices[i] for i, _ in pairs], [links.devices[j] for _, j in pairs], slots
        )
        errors = {}
        for q, per_device in self.learner.quantization_error(
            senders, slots, self.scenario.allocation.precisions_bits
        ).items():
            errors[q] = np.zeros((len(links.devices), *per_device.shape[1:]))
            errors[q][index] = per_device
        lag = Lag(distance=dict(zip(pairs, distance, strict=True)), errors=errors)
        self._wall_allocator_s += time.perf_counter() - wall
        return lag

    def _allocate(
        self,
        links: LinkState,
        i: int,
        j: int,
        slots: list[int],
        groups: tuple[int, ...],
        group_weights: np.ndarray,
        mixing_weight: float,
        lag: Lag | None,
        owed: dict[int, list[int]] | None = None,
    ) -> tuple[np.ndarray, int, list[dict[str, Any]]]:
        """The precisions of one message, its bits, and its ``allocations`` rows (one per slot and group).

        ``priority`` chooses per slot and layer group (``precisions[slot, group]``, 0: not
        sent; :meth:`_slot_options`); the other methods per layer group for all of
        ``slots`` at once (``precisions[group]``).  Under ``full``, ``owed[group]`` lists the
        slots whose copies of that group the message carries (the receiver holds the others).
        """
        spec = self.scenario.allocation
        n_groups = self.scenario.model.layer_groups
        budget = None
        if spec.method != "full":
            budget = float(links.goodput_bps[i, j]) * self.scenario.network.slot_s * spec.budget_fraction
        wall = time.perf_counter()
        if spec.method == "priority":
            assert lag is not None
            items = [(s, g) for s in slots for g in groups]
            options = self._slot_options(links, i, j, items, group_weights, mixing_weight, lag)
        else:
            items = [(-1, g) for g in groups]  # one item per group, for all of its slots
            carried = owed if owed is not None else dict.fromkeys(groups, slots)
            precisions = (FULL_PRECISION_BITS,) if spec.method == "full" else spec.precisions_bits
            options = [
                GroupOptions(
                    precisions_bits=precisions,
                    costs_bits=tuple(len(carried[g]) * self._slot_group_bits(g, q) for q in precisions),
                    values=tuple(quantized_value(float(group_weights[g]), q) for q in precisions),
                )
                for g in groups
            ]
        chosen_bits: tuple[int, ...] = tuple(FULL_PRECISION_BITS for _ in options)
        if budget is not None:
            result = allocate(
                ALLOCATORS.get(spec.method, spec.method),
                options,
                max(budget - HEADER_BITS, 0.0),
                self._allocation_rng,
            )
            chosen_bits = result.precisions_bits
            self._wall_allocator_s += time.perf_counter() - wall
        by_slot = spec.method == "priority"
        chosen = np.zeros((self.learner.capacity, n_groups) if by_slot else n_groups, dtype=np.int64)
        rows: list[dict[str, Any]] = []
        total = 0
        for (s, g), opt, q in zip(items, options, chosen_bits, strict=True):
            total += opt.cost_of(q)
            if by_slot:
                chosen[s, g] = q
                rows.append(
                    self._allocation_row(s, g, q, opt.cost_of(q), opt.value_of(q), group_weights, budget)
                )
                continue
            chosen[g] = q
            # The group's bits and value are shared equally among the slots it carries.
            for t in carried[g]:
                cost, value = opt.cost_of(q) // len(carried[g]), opt.value_of(q) / len(carried[g])
                rows.append(self._allocation_row(t, g, q, cost, value, group_weights, budget))
        return chosen, total + HEADER_BITS, rows

    def _slot_group_bits(self, g: int, q: int) -> int:
        """Bits of one slot's layer group ``g`` at ``q`` bits: values, and a scale per module below 32."""
        return q * self._group_elements[g] + (
            SCALE_BITS * self._group_tensors[g] if q < FULL_PRECISION_BITS else 0
        )

    def _slot_options(
        self,
        links: LinkState,
        i: int,
        j: int,
        items: list[tuple[int, int]],
        group_weights: np.ndarray,
        mixing_weight: float,
        lag: Lag,
    ) -> list[GroupOptions]:
        """The priority allocation's knapsack items, one per slot and layer group (:func:`slot_options`).

        The receiver mixes what arrives with the mixing weight, takes it whole for the
        sender's own slot when receivers adopt the owner's copy, and ignores it for its
        own slot (an owner's copy is its own trained adapter); its distance to the
        sender's copy is :meth:`SlotLearner.pair_disagreement` (the simulator's copies),
        the quantization error :meth:`SlotLearner.quantization_error` of the sender's.
        """
        src, dst = links.devices[i], links.devices[j]
        distance = lag.distance[i, j]  # (slots, groups)
        shared = self.learner.shared
        adopted = (
            self.learner.slot_of.get(src) if self.scenario.training.adopt_owner_copy and not shared else None
        )
        kept = None if shared else self.learner.slot_of.get(dst)  # the receiver's own slot never mixes

        def mixing(s: int) -> float:
            return 0.0 if s == kept else 1.0 if s == adopted else mixing_weight

        precisions = self.scenario.allocation.precisions_bits
        by_item: dict[tuple[int, int], GroupOptions] = {}
        for g in sorted({g for _, g in items}):
            slots = [s for s, h in items if h == g]
            costs = {int(q): self._slot_group_bits(g, q) for q in precisions}
            options = slot_options(
                weight=float(group_weights[g]),
                distance=[distance[s, g] for s in slots],
                errors={int(q): [lag.errors[q][i, s, g] for s in slots] for q in precisions},
                mixing=[mixing(s) for s in slots],
                costs_bits=costs,
            )
            by_item.update(zip(((s, g) for s in slots), options, strict=True))
        return [by_item[item] for item in items]

    @staticmethod
    def _allocation_row(
        slot: int,
        group: int,
        q: int,
        cost: int,
        value: float,
        group_weights: np.ndarray,
        budget: float | None,
    ) -> dict[str, Any]:
        return {
            "slot": slot,
            "group": group,
            "precision_bits": int(q),
            "bits": int(cost),
            "value": float(value),
            "weight": float(group_weights[group]),
            "budget_bits": budget,
        }

    # ------------------------------------------------------------------ records

    def _evaluate(self, stage: str) -> dict[str, float]:
        active = self.members.active
        rows = self.learner.evaluate(active)
        now = self.env.now
        means: dict[str, float] = {}
        mia: dict[int | None, float] = {}
        # Non-members: facts about unseen entities; with a data file, its test rows (no
        # device trains on them).
        splits = set(self.learner.task.splits)
        nonmembers = "heldout" if "heldout" in splits else "test"
        if {"forget", nonmembers} <= splits and active:
            members = self.learner.split_losses(active, "forget")
            others = self.learner.split_losses(active, nonmembers)
            mia = {d: mia_auc(members[i], others[i]) for i, d in enumerate(active)}
            mia[None] = mia_auc(members.mean(axis=0), others.mean(axis=0))
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
                    mia_auc=mia.get(row.device) if split == "forget" else None,
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
                    mia_auc=mia.get(None) if split == "forget" else None,
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
        self,
        purpose: str,
        res: Any,
        links: Any,
        slots: int,
        delivered: bool | None = None,
        budget_bits: float | None = None,
        groups_sent: int | None = None,
    ) -> None:
        i, j = links.index(res.src), links.index(res.dst)
        self._bits_total += res.delivered_bits  # what went through: what the message cost
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
            budget_bits=budget_bits,
            groups_sent=groups_sent,
        )

    def _summary(self) -> dict[str, Any]:
        final = {}
        for row in reversed(self.trace.rows["evaluations"]):
            if row["device"] is None and row["split"] not in final:
                final[row["split"]] = row["accuracy"]
        transfers = self.trace.rows["transfers"]
        return {
            "around_events": self._around_events(),
            "rounds": self._rounds_done,
            "simulated_s": float(self.env.now),
            "final_accuracy": final,
            "bits_sent": int(sum(t["delivered_bits"] for t in transfers)),
            "gossip_messages": self._gossip_messages(transfers),
            "live_devices": len(self.members.active),
            "copy_bytes_per_device": self.learner.copy_bytes(),
            **(
                {"history_bytes": self._history_peak[0], "history_bytes_per_device": self._history_peak[1]}
                if self._history is not None
                else {}
            ),
            **({"events_not_reached": self._events_not_reached()} if self._not_reached else {}),
        }

    @staticmethod
    def _gossip_messages(transfers: list[dict[str, Any]]) -> list[dict[str, int]]:
        """Per sender, its slot-exchange messages (round and correction exchanges): how many
        it sent and how many got through whole by their exchange's deadline."""
        counts: dict[int, list[int]] = {}
        for t in transfers:
            if t["purpose"] != "pull":
                c = counts.setdefault(int(t["src"]), [0, 0])
                c[0] += 1
                c[1] += int(bool(t["delivered"]))
        return [{"device": d, "sent": c[0], "delivered": c[1]} for d, c in sorted(counts.items())]

    def _events_not_reached(self) -> list[dict[str, Any]]:
        """The scheduled events the run ended before: in a complete run those given by a
        ``time_s`` after its last round began; in an interrupted one also those of later rounds."""
        return [
            {"index": i, **event.model_dump(mode="json", exclude_none=True)}
            for i, event in enumerate(self.events)
            if any(event is e for e in self._not_reached)
        ]

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
        """Write the slot copies so ``cosim export`` can rebuild any device's adapter.

        :meth:`run` calls it at the end, before the manifest says complete.  Each file is
        written under a temporary name and then renamed, so a run stopped while saving
        leaves no partial file under the final name.
        """
        from safetensors.torch import save_file

        tensors = {name: c.contiguous() for name, c in self.learner.copies.items()}
        partial = self.out_dir / "state.safetensors.partial"
        save_file(tensors, str(partial))
        meta = {
            "slot_of": {str(d): s for d, s in self.learner.slot_of.items()},
            "tombstoned": {str(d): sorted(s) for d, s in self.learner.tombstoned.items()},
            "live": self.members.active,
        }
        partial_meta = self.out_dir / "state.json.partial"
        partial_meta.write_text(json.dumps(meta, indent=2) + "\n")
        same_mode_as(partial, partial_meta)
        os.replace(partial, self.out_dir / "state.safetensors")
        os.replace(partial_meta, self.out_dir / "state.json")


def run_scenario(
    scenario: Scenario, out_dir: Path, on_round: Callable[[RoundInfo], None] | None = None
) -> dict[str, Any]:
    """Run ``scenario`` and write its trace, state and manifest into ``out_dir``."""
    return Simulation(scenario, out_dir, on_round=on_round).run()
