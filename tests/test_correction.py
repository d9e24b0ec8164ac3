"""The correction policies and the layer-group allocator inside the engine, on tiny scenarios."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import replace
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
import torch

from cosim.engine.simulation import HEADER_BITS
from cosim.graph import components

LEAVE = "events=[{kind: leave, device: 1, round: 2}]"
JOIN = "events=[{kind: join, round: 2}]"
# Tolerances so small that every residual term calls for action.
EAGER = ("correction.tolerances={learn: 1.0e-9, drift: 1.0e-12, consensus: 1.0e-12, gamma_min: 0.0}",)
# Five devices 45 m apart on a line, no fading: neighbours and next-but-one neighbours can link
# (range about 100 m), and with gossip_degree 1 the gossip graph is the path 0-1-2-3-4.
LINE = (
    "devices.count=5",
    "training.rounds=4",
    "network.area={width_m: 200, height_m: 10}",
    "network.placement={kind: explicit, positions_m: [[0, 5], [45, 5], [90, 5], [135, 5], [180, 5]]}",
    "network.radio.fading=none",
    "network.radio.shadowing_sigma_db=0",
    "training.gossip_degree=1",
    "events=[{kind: leave, device: 2, round: 2}]",
)
METHODS = ["priority", "uniform", "proportional", "random"]


def corrections(run: Any) -> list[dict[str, Any]]:
    return [
        {"round": e["round"], "kind": e["kind"], **json.loads(e["detail"])}
        for e in run.rows("events")
        if e["kind"] in ("correction", "correction_end")
    ]


def first_decision(run: Any) -> dict[str, Any]:
    return next(c for c in corrections(run) if c["kind"] == "correction")


def pairs(run: Any, r: int, purpose: str = "gossip") -> set[tuple[int, int]]:
    return {
        (t["src"], t["dst"]) for t in run.rows("transfers") if t["round"] == r and t["purpose"] == purpose
    }


# --------------------------------------------------------------------------- allocation


@pytest.mark.parametrize("method", METHODS)
def test_budgeted_allocations_fit_the_link_budget_and_add_up_to_the_message(run_tiny, method: str) -> None:
    run = run_tiny(LEAVE, f"allocation.method={method}", "allocation.budget_fraction=0.001")
    groups: dict[tuple[int, str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in run.rows("allocations"):
        groups[(row["round"], row["purpose"], row["src"], row["dst"])].append(row)
    transfers = [t for t in run.rows("transfers") if t["purpose"] == "gossip"]
    assert transfers
    skipped = 0
    for t in transfers:
        rows = groups[(t["round"], "gossip", t["src"], t["dst"])]
        # Under a budget every live slot but the receiver's own is offered (receivers mix
        # all of them, and keep their own): 3 of the 4 live before the leave at round 2, 2
        # of 3 after; one row per slot and layer group.  Device d owns slot d here.
        live = 3 if t["round"] < 2 else 2
        assert len(rows) == 2 * live and len({(row["slot"], row["group"]) for row in rows}) == 2 * live
        assert all(row["slot"] != t["dst"] for row in rows)
        assert t["bits"] == HEADER_BITS + sum(row["bits"] for row in rows)
        assert t["bits"] - HEADER_BITS <= t["budget_bits"] + 1e-9
        assert t["groups_sent"] == len({row["group"] for row in rows if row["precision_bits"] > 0})
        if method == "priority":  # slot by slot: the message carries the slots with something sent
            assert t["slots"] == len({row["slot"] for row in rows if row["precision_bits"] > 0})
        else:  # group by group: one precision for every slot of a group
            assert t["slots"] == live
            for g in (0, 1):
                assert len({row["precision_bits"] for row in rows if row["group"] == g}) == 1
        skipped += sum(row["precision_bits"] == 0 for row in rows)
        assert all(row["bits"] == 0 for row in rows if row["precision_bits"] == 0)
    # The budget (0.1 % of a slot) binds: at least some group goes below 32 bits or is skipped.
    assert any(row["precision_bits"] < 32 for rows in groups.values() for row in rows)
    if method in ("uniform", "proportional"):
        assert skipped or all(row["precision_bits"] < 32 for rows in groups.values() for row in rows)


def test_staleness_counts_the_rounds_since_a_group_last_arrived_over_the_link(run_tiny) -> None:
    run = run_tiny(LEAVE, "allocation.method=random", "allocation.budget_fraction=0.002")
    last: dict[tuple[int, int, int], int] = {}
    checked = 0
    for row in sorted(
        run.rows("allocations"), key=lambda x: (x["round"], x["src"], x["dst"], x["slot"], x["group"])
    ):
        key = (row["src"], row["dst"], row["slot"], row["group"])
        if row["delivered"] and row["precision_bits"] > 0:
            last[key] = row["round"]
        want = row["round"] - last[key] if key in last else None
        assert row["staleness_rounds"] == want
        checked += want is not None and want > 0
    assert checked > 0  # some group did go stale


def test_priority_allocates_slot_by_slot_where_the_copies_lag(run_tiny) -> None:
    """After a join the newcomer's slot is what its neighbours lack: it travels first."""
    run = run_tiny(JOIN, "allocation.method=priority", "allocation.budget_fraction=0.002")
    slot_of = {r["device"]: r["slot"] for r in run.rows("rounds")}
    newcomer = max(slot_of)  # devices 0-3 start, device 4 joins at round 2
    messages: dict[tuple[int, str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in run.rows("allocations"):
        messages[(row["round"], row["purpose"], row["src"], row["dst"])].append(row)
        if row["slot"] == slot_of[row["dst"]]:  # the receiver's own slot never mixes: never sent to it
            assert row["precision_bits"] == 0 and row["bits"] == 0
    # Some message sends one group of a slot and not the other, or slots at different precisions.
    assert any(
        len({row["precision_bits"] for row in rows if row["group"] == g}) > 1
        for rows in messages.values()
        for g in (0, 1)
    )
    joined = [rows for (r, purpose, src, _), rows in messages.items() if r == 2 and src == newcomer]
    assert joined
    for rows in joined:
        per_slot: dict[int, int] = defaultdict(int)
        for row in rows:
            per_slot[row["slot"]] += row["bits"]
        own = [row for row in rows if row["slot"] == slot_of[newcomer]]
        assert all(row["precision_bits"] > 0 for row in own)
        assert per_slot[slot_of[newcomer]] == max(per_slot.values())


def test_full_sends_every_group_at_32_bits_without_a_budget(run_tiny) -> None:
    run = run_tiny(LEAVE)
    rows = run.rows("allocations")
    assert rows and all(r["precision_bits"] == 32 and r["budget_bits"] is None for r in rows)
    assert all(t["budget_bits"] is None for t in run.rows("transfers"))
    # Every layer group travels, whether or not any slot changed since the last message.
    assert all(t["groups_sent"] == 2 for t in run.rows("transfers") if t["purpose"] == "gossip")


def test_budgeted_runs_are_reproducible(run_tiny) -> None:
    a = run_tiny(LEAVE, "allocation.method=random", "allocation.budget_fraction=0.002", fresh=True)
    b = run_tiny(LEAVE, "allocation.method=random", "allocation.budget_fraction=0.002", fresh=True)
    for table in ("allocations", "transfers", "evaluations"):
        assert a.rows(table) == b.rows(table)


# --------------------------------------------------------------------------- correction


def test_no_policy_makes_no_decision(run_tiny) -> None:
    assert corrections(run_tiny(LEAVE)) == []


def test_local_correction_adds_the_decided_steps_to_the_affected_devices(run_tiny) -> None:
    run = run_tiny(LEAVE, "correction.policy=local", *EAGER)
    decisions = [c for c in corrections(run) if c["kind"] == "correction"]
    first = first_decision(run)
    assert first["round"] == 2 and first["event"] == "leave"
    assert set(first["actions"]) == {"local_correction"}
    extra = first["local_steps"]
    assert extra > 0 and max(first["local_group_steps"]) == extra
    tau = 2
    steps = {row["device"]: row["steps"] for row in run.rows("rounds") if row["round"] == 2}
    # After a leave every retained device trains the extra steps on its data.
    assert first["local_devices"] == first["affected"]
    assert steps == dict.fromkeys(first["affected"], tau + extra)
    end = [c for c in corrections(run) if c["kind"] == "correction_end"][-1]
    assert end["extra_local_steps"] == sum(d["local_steps"] * len(d["local_devices"]) for d in decisions)
    start = min(row["time_s"] for row in run.rows("rounds") if row["round"] == 2)
    bits = sum(t["delivered_bits"] for t in run.rows("transfers") if t["round"] >= 2)
    assert end["bits"] == bits and end["rounds"] == 2  # rounds 2 and 3, to the end of the run
    assert end["seconds"] == pytest.approx(run.summary["simulated_s"] - start)


def test_local_correction_trains_only_the_groups_it_was_chosen_for(run_tiny, monkeypatch) -> None:
    from cosim.engine import simulation
    from cosim.learning.learner import SlotLearner
    from cosim.policy.priority import Action

    real_plan, real_train = simulation.plan_round, SlotLearner.train

    def group_0_only(*args: Any, **kwargs: Any) -> Any:
        plan = real_plan(*args, **kwargs)
        if not plan.extra_steps:
            return plan
        return replace(plan, actions=(plan.actions[0], Action.NONE), extra_group_steps=(plan.extra_steps, 0))

    calls, scales = [], []

    def train(self, devices, steps, rngs, **kwargs):  # type: ignore[no-untyped-def]
        before = {d: {n: p.detach().clone() for n, p in self.own[d].items()} for d in devices}
        result = real_train(self, devices, steps, rngs, **kwargs)
        group_steps = kwargs.get("group_steps")
        moved = {
            g: any(
                not torch.equal(p.detach(), before[d][n])
                for d in devices
                for n, p in self.own[d].items()
                if self.group_of[n] == g
            )
            for g in (0, 1)
        }
        calls.append((group_steps, moved))
        scales.append((group_steps, len(devices), kwargs.get("step_scale", 1.0)))
        return result

    monkeypatch.setattr(simulation, "plan_round", group_0_only)
    monkeypatch.setattr(SlotLearner, "train", train)
    first = first_decision(run_tiny(LEAVE, "correction.policy=local", *EAGER, fresh=True))
    assert first["local_steps"] > 0 and first["local_group_steps"] == [first["local_steps"], 0]
    extra = [moved for group_steps, moved in calls if group_steps is not None]
    regular = [moved for group_steps, moved in calls if group_steps is None]
    assert extra and all(moved == {0: True, 1: False} for moved in extra)  # group 1 left as it was
    assert regular and all(moved == {0: True, 1: True} for moved in regular)
    # The trainees correct together: each keeps 1/m of its extra steps' displacement.
    extra_scales = [(m, scale) for group_steps, m, scale in scales if group_steps is not None]
    assert all(m > 1 and scale == pytest.approx(1.0 / m) for m, scale in extra_scales)
    assert all(scale == 1.0 for group_steps, _, scale in scales if group_steps is None)


def test_local_correction_sends_the_corrected_slots_before_the_regular_steps(run_tiny) -> None:
    run = run_tiny(LEAVE, "correction.policy=local", *EAGER)
    first = first_decision(run)
    extra, tau = first["local_steps"], 2
    assert extra > 0 and first["syncs"] == 0  # no synchronisation scheduled: only local correction's exchange
    sync = [t for t in run.rows("transfers") if t["purpose"] == "sync" and t["round"] == 2]
    assert sync and pairs(run, 2, "sync") == pairs(run, 2)  # every link, as the round's gossip
    groups = {a["group"] for a in run.rows("allocations") if a["purpose"] == "sync" and a["round"] == 2}
    assert groups == {0, 1}  # every layer group
    rounds = {row["device"]: row for row in run.rows("rounds") if row["round"] == 2}
    start = min(row["time_s"] for row in rounds.values())
    sync_end = max(t["finish_s"] for t in sync)
    for t in sync:  # a device sends once its extra steps are computed
        row = rounds[t["src"]]
        assert t["start_s"] >= start + row["compute_s"] * extra / (tau + extra) - 1e-9
    for row in rounds.values():
        regular = row["compute_s"] * tau / (tau + extra)
        assert row["sync_s"] == pytest.approx(sync_end - start)
        assert row["tx_start_s"] == pytest.approx(start + row["sync_s"] + regular)  # regular steps after it
    ends = [c for c in corrections(run) if c["kind"] == "correction_end"]
    local_rounds = sum(1 for c in corrections(run) if c["kind"] == "correction" and c["local_steps"] > 0)
    assert ends[-1]["syncs"] == local_rounds


def test_sync_scheduling_exchanges_the_lagging_groups_before_computing(run_tiny) -> None:
    run = run_tiny(LEAVE, "correction.policy=sync", *EAGER)
    first = first_decision(run)
    assert first["syncs"] >= 1 and first["sync_groups"]
    sync_rows = [a for a in run.rows("allocations") if a["purpose"] == "sync" and a["round"] == 2]
    assert {a["group"] for a in sync_rows} == set(first["sync_groups"])
    rounds = [row for row in run.rows("rounds") if row["round"] == 2]
    sync_end = max(t["finish_s"] for t in run.rows("transfers") if t["purpose"] == "sync" and t["round"] == 2)
    for row in rounds:
        assert row["sync_s"] > 0
        assert row["tx_start_s"] - row["compute_s"] >= sync_end - 1e-9  # compute starts after the syncs
    assert pairs(run, 2, "sync") == pairs(run, 2)


@pytest.mark.parametrize("policy", ["sync", "local"])
def test_each_exchange_of_a_correction_round_goes_over_the_links_of_its_own_time(run_tiny, policy) -> None:
    # Fading redraws the channel at every instant: the exchanges that follow a correction's
    # extra exchange or steps see the links of their start, not those of the round's start.
    run = run_tiny(LEAVE, f"correction.policy={policy}", *EAGER)
    network, live = run.sim.network, [0, 2, 3]
    start = min(row["time_s"] for row in run.rows("rounds") if row["round"] == 2)
    rows = [t for t in run.rows("transfers") if t["round"] == 2]
    stamps = sorted({t["time_s"] for t in rows})
    assert stamps[0] == start and len(stamps) >= 2  # the extra exchange, then the round's gossip
    assert {t["time_s"] for t in rows if t["purpose"] == "gossip"} == {stamps[-1]} != {start}
    for t in rows:
        links = network.links(t["time_s"], live)
        i, j = links.index(t["src"]), links.index(t["dst"])
        assert t["rate_bps"] == links.rate_bps[i, j] > 0 and t["mcs"] == links.mcs[i, j]
        assert t["goodput_bps"] == links.goodput_bps[i, j]


def test_proximal_damping_sets_a_strength_per_group(run_tiny) -> None:
    damped = run_tiny(LEAVE, "correction.policy=proximal", *EAGER)
    first = first_decision(damped)
    assert len(first["mu"]) == 2 and min(first["mu"]) > 0


def test_topology_refinement_reconnects_the_graph_split_by_a_hub_leave(run_tiny) -> None:
    run = run_tiny(*LINE, "correction.policy=topology")
    before = pairs(run, 1)
    assert before == {(a, b) for a, b in [(0, 1), (1, 2), (2, 3), (3, 4)] for a, b in [(a, b), (b, a)]}
    first = first_decision(run)
    assert "split into 2 components" in first["topology_reason"]
    assert first["links_added"] == 1
    after = pairs(run, 2)
    assert (1, 3) in after and (3, 1) in after  # the feasible bridge over the departed hub
    nodes = [0, 1, 3, 4]
    adjacency = np.array([[(a, b) in after for b in nodes] for a in nodes])
    assert len(components(adjacency)) == 1


def test_without_refinement_the_split_graph_stays_split(run_tiny) -> None:
    run = run_tiny(*LINE)
    assert pairs(run, 2) == {(0, 1), (1, 0), (3, 4), (4, 3)}


def test_priority_refines_the_topology_first_and_acts_per_group_in_the_same_round(run_tiny) -> None:
    run = run_tiny(*LINE, "correction.policy=priority", *EAGER)
    first = first_decision(run)
    assert first["links_added"] == 1 and "split" in first["topology_reason"]
    assert all(a in ("local_correction", "proximal_damping", "sync_scheduling") for a in first["actions"])
    assert (1, 3) in pairs(run, 2)
    # Re-decided on the refined graph, the round's decision still counts the deletion shock;
    # the decisions of later rounds do not.
    assert all(v > 0 for v in first["residuals"]["shock"])
    later = [c for c in corrections(run) if c["kind"] == "correction" and c["correction_round"] > 0]
    assert later and all(c["residuals"]["shock"] == [0.0, 0.0] for c in later)


def test_the_retrain_baseline_starts_over_from_the_base_model_and_replays_the_rounds(run_tiny) -> None:
    run = run_tiny(LEAVE, "correction.policy=retrain")
    assert max(row["round"] for row in run.rows("rounds")) == 4 + 2 - 1  # the 2 rounds before replayed
    evals = run.rows("evaluations")
    initial = {
        (e["device"], e["split"]): (e["accuracy"], e["loss"]) for e in evals if e["stage"] == "initial"
    }
    after = [e for e in evals if e["stage"] == "after_event" and e["device"] is not None]
    assert after
    for e in after:
        assert (e["accuracy"], e["loss"]) == pytest.approx(initial[(e["device"], e["split"])], abs=1e-6)
    end = [c for c in corrections(run) if c["kind"] == "correction_end"]
    assert end and end[0]["rounds"] == 2 and end[0]["reason"] == "replayed every round before the event"


def test_join_correction_targets_the_newcomer_and_its_neighbours(run_tiny) -> None:
    run = run_tiny(JOIN, "correction.policy=local", *EAGER)
    first = first_decision(run)
    assert first["event"] == "join" and 4 in first["affected"]
    neighbours = {t["dst"] for t in run.rows("transfers") if t["round"] == 2 and t["src"] == 4}
    assert set(first["affected"]) == {4} | neighbours
    # The extra steps train on the newcomer's data only: its neighbours train as usual.
    assert first["local_devices"] == [4] and first["local_steps"] > 0
    steps = {row["device"]: row["steps"] for row in run.rows("rounds") if row["round"] == 2}
    assert steps == {d: 2 + (first["local_steps"] if d == 4 else 0) for d in range(5)}
    # R_learn per affected device (the relative tolerance compares its largest row too); no shock.
    assert np.array(first["residuals"]["learn_devices"]).shape == (len(first["affected"]), 2)
    np.testing.assert_array_equal(first["residuals"]["shock_devices"], 0.0)


def test_during_a_correction_a_newcomer_acts_only_once_its_pull_has_arrived(run_tiny) -> None:
    def pulled_and_sent(run: Any) -> tuple[dict[str, Any], list[float]]:
        (pull,) = [t for t in run.rows("transfers") if t["purpose"] == "pull"]
        sent = [t for t in run.rows("transfers") if t["round"] == 2 and t["purpose"] == "sync"]
        assert min(t["start_s"] for t in sent) == pytest.approx(pull["time_s"], abs=1e-12)
        return pull, [t["start_s"] for t in sent if t["src"] == 4]

    # Extra exchanges start with the round; the newcomer's messages wait for its copies.
    synced = run_tiny(JOIN, "correction.policy=sync", *EAGER)
    assert first_decision(synced)["round"] == 2
    pull, starts = pulled_and_sent(synced)
    assert starts and min(starts) >= pull["finish_s"] > pull["time_s"]
    # Its extra local steps begin once the copies are in; its corrected slots go out after them.
    local = run_tiny(JOIN, "correction.policy=local", *EAGER)
    first = first_decision(local)
    assert first["round"] == 2 and first["local_devices"] == [4]
    pull, starts = pulled_and_sent(local)
    extra_s = local.sim.learner.flops_per_step() * first["local_steps"] / local.sim.flops_per_s[4]
    assert starts and min(starts) >= pull["finish_s"] + extra_s - 1e-12


def test_a_pull_holds_up_the_messages_of_the_device_that_serves_it(run_tiny) -> None:
    run = run_tiny(JOIN, "correction.policy=sync", *EAGER)
    (pull,) = [t for t in run.rows("transfers") if t["purpose"] == "pull"]
    # The extra exchange starts with the round, as the pull does: the source's radio is busy.
    sync = [t for t in run.rows("transfers") if t["round"] == 2 and t["purpose"] == "sync"]
    assert min(t["start_s"] for t in sync) == pytest.approx(pull["time_s"], abs=1e-12)
    own = [t for t in sync if t["src"] == pull["src"]]
    assert own and min(t["start_s"] for t in own) >= pull["finish_s"]


def test_a_correction_s_exchange_sends_no_empty_message_under_priority_allocation(run_tiny) -> None:
    run = run_tiny(
        JOIN,
        "correction.policy=local",
        *EAGER,
        "allocation.method=priority",
        "allocation.budget_fraction=0.5",
    )
    first = first_decision(run)
    assert first["local_devices"] == [4]
    sync = [t for t in run.rows("transfers") if t["round"] == 2 and t["purpose"] == "sync"]
    # Only the newcomer changed a slot (its own, by the extra steps); every other device has
    # nothing the receivers lack, and sends nothing rather than a header alone.
    assert sync and all(t["slots"] > 0 and t["bits"] > HEADER_BITS for t in sync)
    assert {t["src"] for t in sync} == {4}


def test_after_a_join_the_neighbours_are_measured_on_their_pre_event_samples(run_tiny) -> None:
    run = run_tiny(JOIN, "correction.policy=local", *EAGER)
    decisions = [c for c in corrections(run) if c["kind"] == "correction"]
    first, base = decisions[0], decisions[0]["baseline"]
    # The pre-event terms the relative tolerances divide by go with the first decision only.
    assert base["devices"] == [0, 1, 2, 3]
    assert np.array(base["learn_devices"]).shape == (4, 2) and len(base["loss_devices"]) == 4
    assert all(d["baseline"] == {} for d in decisions[1:])
    # A join leaves the neighbours' models as they were, and each device's samples are drawn
    # by the event alone: every neighbour's loss and R_learn repeat its pre-event values.
    residuals = first["residuals"]
    neighbours = [(i, d) for i, d in enumerate(first["affected"]) if d != 4]
    assert neighbours
    for i, d in neighbours:
        j = base["devices"].index(d)
        assert residuals["loss_devices"][i] == base["loss_devices"][j]
        assert residuals["learn_devices"][i] == base["learn_devices"][j]
    # The newcomer has learnt nothing yet: its loss is above every device's before the join.
    assert residuals["loss_devices"][first["affected"].index(4)] > max(base["loss_devices"])


def test_a_correction_keeps_the_baseline_of_its_event_when_a_later_event_starts_none(run_tiny) -> None:
    # A device goes silent in the round after the join: an event, but no correction of its own.
    events = "events=[{kind: join, round: 2}, {kind: leave_silent, device: 0, round: 3}]"
    decisions = [
        c
        for c in corrections(run_tiny(events, "correction.policy=local", *EAGER))
        if c["kind"] == "correction"
    ]
    first, later = decisions[0], [d for d in decisions if d["round"] == 3]
    assert first["round"] == 2 and later
    base = first["baseline"]
    for d in later:
        learn = np.asarray(d["residuals"]["learn"])
        rows = np.asarray(d["residuals"]["learn_devices"])
        total = learn / (np.asarray(base["learn"]) * len(d["affected"]) / len(base["devices"]))
        device = rows.max(axis=0) / np.asarray(base["learn_devices"]).max(axis=0)
        measured = d["residuals"]["loss_ratio"]  # tolerances.measured_loss is on by default
        # The join's baseline, not one measured before the silent leave.
        expected = np.maximum(np.maximum(total, device), measured) / 1.0e-9
        assert d["normalised"]["learn"] == pytest.approx(expected, rel=1e-9)


def test_measured_loss_compares_the_newcomer_s_loss_with_the_devices_mean_before(run_tiny) -> None:
    tolerance = "correction.tolerances.learn=1.05"
    plain = first_decision(
        run_tiny(JOIN, "correction.policy=priority", tolerance, "correction.tolerances.measured_loss=false")
    )
    first = first_decision(run_tiny(JOIN, "correction.policy=priority", tolerance))  # on by default
    base, residuals = first["baseline"], first["residuals"]
    newcomer = residuals["loss_devices"][first["affected"].index(4)]
    ratio = newcomer / np.mean(base["loss_devices"])
    assert residuals["loss_ratio"] == pytest.approx(ratio, rel=1e-12)
    assert plain["residuals"]["loss_ratio"] == residuals["loss_ratio"]  # recorded either way
    # Everything before the decision is the same run: R_learn's normalised value is the larger
    # of the plain one and the loss ratio over the tolerance.
    assert first["normalised"]["learn"] == pytest.approx(
        np.maximum(plain["normalised"]["learn"], ratio / 1.05)
    )
    assert ratio / 1.05 > max(plain["normalised"]["learn"])  # here the loss ratio decides


def test_the_deletion_shock_enters_each_retained_device_s_learning_residual(run_tiny) -> None:
    first = first_decision(run_tiny(LEAVE, "correction.policy=local", *EAGER))
    residuals = first["residuals"]
    rows = np.array(residuals["learn_devices"])
    assert rows.shape == (len(first["affected"]), 2)
    # Every retained device held a copy of the leaver's slot: each has a shock of its own,
    # measured before the tombstone and matched to it by device, and they add up to S.
    shocks = np.array(residuals["shock_devices"])
    assert shocks.shape == rows.shape and np.all(shocks > 0)
    np.testing.assert_allclose(shocks.sum(axis=0), residuals["shock"], rtol=1e-12)
    np.testing.assert_allclose(rows.sum(axis=0), residuals["learn"], rtol=1e-12)


def test_teacher_correction_fits_each_model_from_before_the_tombstones_and_pays_for_its_pass(
    run_tiny, monkeypatch
) -> None:
    from cosim.learning.learner import SlotLearner

    real_teacher, real_train = SlotLearner.teacher_logits, SlotLearner.train
    held: dict[int, set[int]] = {}
    made: list[Any] = []
    passed: list[tuple[bool, Any]] = []

    def teacher_logits(self, devices, rows=None):  # type: ignore[no-untyped-def]
        if rows is not None:  # a decision's distance from the teacher, not the teacher
            return real_teacher(self, devices, rows)
        for d in devices:
            held[d] = {
                k for k in range(self.capacity) if any(bool(c[d, k].any()) for c in self.copies.values())
            }
        made.append(real_teacher(self, devices))
        return made[-1]

    def train(self, devices, steps, rngs, **kwargs):  # type: ignore[no-untyped-def]
        passed.append((kwargs.get("group_steps") is not None, kwargs.get("teacher")))
        return real_train(self, devices, steps, rngs, **kwargs)

    monkeypatch.setattr(SlotLearner, "teacher_logits", teacher_logits)
    monkeypatch.setattr(SlotLearner, "train", train)
    run = run_tiny(LEAVE, "correction.policy=local", "correction.local_target=teacher", *EAGER, fresh=True)
    first = first_decision(run)
    retained = first["affected"]
    leaver_slot = next(e["slot"] for e in run.rows("events") if e["kind"] == "leave")
    # Taken once, with the leaver's slot still in every retained device's model.
    assert len(made) == 1 and sorted(held) == sorted(retained)
    assert all(leaver_slot in held[d] for d in retained)
    # The extra steps fit it; the regular steps fit the answers.
    assert first["local_steps"] > 0
    assert [t is made[0] for extra, t in passed if extra] == [True] * sum(1 for extra, _ in passed if extra)
    assert all(t is None for extra, t in passed if not extra)
    learner = run.sim.learner
    rows = {d: len(learner.task.train[d]) for d in retained}
    end = [c for c in corrections(run) if c["kind"] == "correction_end"][-1]
    assert end["teacher_rows"] == sum(rows.values())
    # Its forward pass counts in the leave's round, once.
    per_step, tau, extra = learner.flops_per_step(), 2, first["local_steps"]
    for r in (2, 3):
        for row in run.rows("rounds"):
            if row["round"] != r:
                continue
            d = row["device"]
            teacher = learner.forward_flops(rows[d]) if r == 2 else 0.0
            assert row["flops"] == pytest.approx(per_step * row["steps"] + teacher, rel=1e-12)
            assert row["compute_s"] == pytest.approx(row["flops"] / run.sim.flops_per_s[d], rel=1e-12)
            if r == 2:
                assert row["steps"] == tau + extra
                regular = per_step * tau / run.sim.flops_per_s[d]
                assert row["tx_start_s"] == pytest.approx(row["time_s"] + row["sync_s"] + regular)


def test_teacher_progress_ends_the_steps_once_a_round_cuts_the_distance_by_less_than_its_share(
    run_tiny, monkeypatch
) -> None:
    from cosim.learning.learner import SlotLearner
    from cosim.learning.residuals import draw_samples

    real_teacher = SlotLearner.teacher_logits
    teachers: list[Any] = []
    measured: list[tuple[dict[int, np.ndarray], dict[int, torch.Tensor]]] = []

    def teacher_logits(self, devices, rows=None):  # type: ignore[no-untyped-def]
        out = real_teacher(self, devices, rows)
        (teachers.append(out) if rows is None else measured.append((rows, out)))
        return out

    monkeypatch.setattr(SlotLearner, "teacher_logits", teacher_logits)
    share = 0.3
    run = run_tiny(
        LEAVE,
        "training.rounds=8",
        "correction.policy=priority",
        "correction.local_target=teacher",
        "correction.tolerances.learn=1.0e-9",
        f"correction.tolerances.teacher_progress={share}",
        fresh=True,
    )
    decisions = [c for c in corrections(run) if c["kind"] == "correction"]
    assert len(measured) == len(decisions) and len(teachers) == 1
    learner, teacher = run.sim.learner, teachers[0]
    for c, (rows, now) in zip(decisions, measured, strict=True):
        # The distance: each trainee's mean squared distance from the teacher's centred logits
        # on its residual samples (the rows the residuals are measured on), averaged over them.
        samples = draw_samples(learner, list(rows), 8, (run.sim.scenario.seed, 0x5E51D, 2))
        for d, idx in rows.items():
            np.testing.assert_array_equal(learner.task.train[d].inputs[idx], samples[d].inputs)
        per_device = [
            float((now[d] - teacher[d][torch.as_tensor(idx)]).pow(2).mean()) for d, idx in rows.items()
        ]
        residuals = c["residuals"]
        assert residuals["teacher_distance_devices"] == pytest.approx(per_device, rel=1e-12)
        assert residuals["teacher_distance"] == pytest.approx(np.mean(per_device), rel=1e-12)
    # Progress is measured after each round that took extra steps; the first cut below the
    # share ends them: the learning term then counts as within tolerance.
    done = False
    for before, c in pairwise(decisions):
        r = c["residuals"]
        if before["local_steps"] and not done:
            cut = 1.0 - r["teacher_distance"] / before["residuals"]["teacher_distance"]
            assert r["teacher_progress"] == pytest.approx(cut, rel=1e-12)
            done = cut < share
        else:
            assert "teacher_progress" not in r
        assert r["teacher_done"] is done
        if done:
            assert c["local_steps"] == 0 and c["normalised"]["learn"] == [0.0, 0.0]
            assert max(r["learn"]) > 0  # the trace keeps the term as measured
    cuts = [c["residuals"]["teacher_progress"] for c in decisions if "teacher_progress" in c["residuals"]]
    assert done and any(cut >= share for cut in cuts)  # both branches taken in this run


def test_whole_step_share_keeps_every_retained_device_its_whole_displacement(run_tiny, monkeypatch) -> None:
    from cosim.learning.learner import SlotLearner

    real_train = SlotLearner.train
    scales: dict[str, list[tuple[int, float]]] = {}
    share = "parallel"

    def train(self, devices, steps, rngs, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("group_steps") is not None:
            scales[share].append((len(devices), kwargs.get("step_scale", 1.0)))
        return real_train(self, devices, steps, rngs, **kwargs)

    monkeypatch.setattr(SlotLearner, "train", train)
    for share in ("parallel", "whole"):
        scales[share] = []
        run_tiny(LEAVE, "correction.policy=local", f"correction.step_share={share}", *EAGER, fresh=True)
    assert scales["parallel"] and all(s == pytest.approx(1.0 / m) for m, s in scales["parallel"])
    assert scales["whole"] and all(s == 1.0 for _, s in scales["whole"])
    assert all(m > 1 for m, _ in scales["parallel"])


def test_correction_learning_rate_drives_the_extra_steps_and_no_other(run_tiny, monkeypatch) -> None:
    from cosim.learning.learner import SlotLearner

    real_train = SlotLearner.train
    rates: dict[bool, set[float | None]] = {True: set(), False: set()}  # extra steps or not

    def train(self, devices, steps, rngs, **kwargs):  # type: ignore[no-untyped-def]
        rates[kwargs.get("group_steps") is not None].add(kwargs.get("lr"))
        return real_train(self, devices, steps, rngs, **kwargs)

    monkeypatch.setattr(SlotLearner, "train", train)
    run_tiny(LEAVE, "correction.policy=local", "correction.learning_rate=0.012", *EAGER, fresh=True)
    assert rates == {True: {0.012}, False: {None}}


def test_teacher_progress_needs_the_teacher_target(tiny_scenario) -> None:
    from cosim.scenario import ScenarioError, apply_overrides, parse_scenario

    raw = apply_overrides(tiny_scenario, ["correction.tolerances.teacher_progress=0.25"])
    with pytest.raises(
        ScenarioError, match=r"teacher_progress: 0.25 stops .* correction.local_target is 'answers'"
    ):
        parse_scenario(raw)


def test_the_teacher_target_needs_the_tiny_model(tiny_scenario) -> None:
    from cosim.scenario import ScenarioError, apply_overrides, parse_scenario

    raw = apply_overrides(tiny_scenario, ["correction.local_target=teacher", "model.base=smollm2-135m"])
    with pytest.raises(ScenarioError, match=r"correction.local_target: 'teacher' fits the answer logits"):
        parse_scenario(raw)


# --------------------------------------------------------------------------- membership inference


def test_mia_auc_is_recorded_on_the_forget_split_and_recomputes_from_the_final_state(run_tiny) -> None:
    from cosim.learning.privacy import mia_auc

    run = run_tiny(LEAVE)
    evals = run.rows("evaluations")
    assert all(e["mia_auc"] is None for e in evals if e["split"] != "forget")
    last = max(e["round"] for e in evals)
    final = {e["device"]: e["mia_auc"] for e in evals if e["round"] == last and e["split"] == "forget"}
    learner = run.sim.learner
    live = run.sim.members.active
    members, others = learner.split_losses(live, "forget"), learner.split_losses(live, "heldout")
    for i, d in enumerate(live):
        assert final[d] == pytest.approx(mia_auc(members[i], others[i]), abs=1e-12)
    assert final[None] == pytest.approx(mia_auc(members.mean(0), others.mean(0)), abs=1e-12)


def test_a_leaver_nobody_hears_is_tombstoned_by_everyone_after_the_silence_timeout(run_tiny) -> None:
    run = run_tiny(
        "network.area={width_m: 400, height_m: 10}",
        "network.placement={kind: explicit, positions_m: [[0, 5], [20, 5], [40, 5], [390, 5]]}",
        "network.radio.fading=none",
        "network.radio.shadowing_sigma_db=0",
        "training.silence_timeout_s=0.05",
        "training.rounds=8",
        "events=[{kind: leave, device: 3, round: 1}]",
    )
    events = run.rows("events")
    (leave,) = [e for e in events if e["kind"] == "leave"]
    assert json.loads(leave["detail"])["tombstone_from"] == []  # out of everyone's range
    (silence,) = [e for e in events if e["kind"] == "tombstone_by_silence"]
    # Nobody ever heard device 3: the silence counts from time 0, not from its leave. So the
    # tombstone comes at the first round boundary 0.05 s after time 0, less than 0.05 s after
    # the leave.
    assert json.loads(silence["detail"]) == {"owner_last_heard_s": 0.0}
    starts = {row["round"]: row["time_s"] for row in run.rows("rounds")}
    assert silence["round"] == min(r for r, t in starts.items() if t >= 0.05)
    assert silence["time_s"] - leave["time_s"] < 0.05
    applied = {e["device"] for e in events if e["kind"] == "tombstone"}
    assert applied == {0, 1, 2}
    assert [e["slot"] for e in events if e["kind"] == "slot_released"] == [leave["slot"]]


def test_extra_exchanges_leave_the_copies_closer_together(run_tiny) -> None:
    def distance(run: Any, r: int) -> float:
        (row,) = [
            e
            for e in run.rows("evaluations")
            if e["round"] == r and e["stage"] == "round" and e["device"] is None and e["split"] == "retain"
        ]
        return row["consensus_distance"]

    # Plain Metropolis-Hastings averaging on a sparse graph leaves the copies apart.
    sparse = (LEAVE, "training.gossip_degree=1", "training.adopt_owner_copy=false")
    plain, synced = run_tiny(*sparse), run_tiny(*sparse, "correction.policy=sync", *EAGER)
    assert distance(synced, 1) == distance(plain, 1)  # identical until the event
    assert first_decision(synced)["syncs"] >= 1
    assert distance(synced, 2) < distance(plain, 2)


def test_the_consensus_share_calls_for_exchanges_that_the_relative_tolerance_passes(run_tiny) -> None:
    # Learn and drift never act, the relative consensus tolerance (1e9 times the pre-event
    # level) never does: only the share of the copies' size can call for exchanges.  Plain
    # averaging on a sparse graph keeps the copies apart.
    def run(share: str) -> Any:
        return run_tiny(
            LEAVE,
            "training.gossip_degree=1",
            "training.adopt_owner_copy=false",
            "correction.policy=priority",
            "correction.tolerances={learn: 1.0e9, drift: 1.0e9, consensus: 1.0e9, gamma_min: 0.0, "
            f"consensus_share: {share}}}",
        )

    off, on = first_decision(run("null")), first_decision(run("1.0e-9"))
    assert off["actions"] == ["none", "none"] and off["syncs"] == 0
    # The same state before the decision: the same terms, now judged against the copies' size.
    assert on["residuals"] == off["residuals"]
    consensus, size = np.array(on["residuals"]["consensus"]), np.array(on["residuals"]["magnitude"])
    level = np.array(on["baseline"]["consensus"])
    assert (size > 0).all() and (consensus > 0).all() and (level > 0).all()
    np.testing.assert_allclose(off["normalised"]["consensus"], consensus / level / 1e9, rtol=1e-9)
    np.testing.assert_allclose(on["normalised"]["consensus"], consensus / (1e-9 * size), rtol=1e-9)
    assert on["actions"] == ["sync_scheduling", "sync_scheduling"]
    assert on["syncs"] == 3 and on["sync_groups"] == [0, 1]  # max_syncs: 1e-9 of the size is out of reach
    assert on["acted"] == ["consensus", "consensus"] and on["acted_value"] == on["normalised"]["consensus"]


def test_each_decision_records_the_term_it_acts_on_per_group(run_tiny) -> None:
    # Every term calls for action: per group priority acts on the largest normalised term
    # (no consensus term here is within its own tolerance, so event_first defers none).
    run = run_tiny(LEAVE, "correction.policy=priority", *EAGER)
    decisions = [c for c in corrections(run) if c["kind"] == "correction"]
    assert decisions
    action_of = {"learn": "local_correction", "drift": "proximal_damping", "consensus": "sync_scheduling"}
    for d in decisions:
        for g, (term, value) in enumerate(zip(d["acted"], d["acted_value"], strict=True)):
            values = {t: d["normalised"][t][g] for t in action_of}
            assert value == values[term] == max(values.values()) > 1.0
            assert d["actions"][g] == action_of[term]


def test_allocation_precisions_must_be_distinct(tiny_scenario) -> None:
    from cosim.scenario import ScenarioError, apply_overrides, parse_scenario

    with pytest.raises(ScenarioError, match="precisions_bits must be distinct"):
        parse_scenario(apply_overrides(tiny_scenario, ["allocation.precisions_bits=[8, 8]"]))


def test_replay_share_cuts_the_correction_to_its_share_of_the_replay(run_tiny) -> None:
    share = 0.4
    late = "events=[{kind: leave, device: 1, round: 6}]"
    run = run_tiny(
        late,
        "training.rounds=10",
        "correction.policy=local",
        *EAGER,
        f"correction.budget.replay_share={share}",
    )
    retrain = run_tiny(late, "training.rounds=10", "correction.policy=retrain")
    replay = next(c for c in corrections(retrain) if c["kind"] == "correction_end")
    rounds = run.rows("rounds")
    event_s = min(row["time_s"] for row in rounds if row["round"] == 6)
    history_bits = sum(t["delivered_bits"] for t in run.rows("transfers") if t["round"] < 6)
    first, second, end = (c for c in corrections(run) if c["round"] >= 6)
    estimate = first["replay_estimate"]
    # What retrain's replay of the six rounds before the leave costs, estimated from those
    # rounds without device 1: every message among the others arrived whole, so the bits
    # are exact; the seconds differ by how the replay's compute and links differ (about 1 %).
    assert estimate["rounds"] == 6
    assert estimate["bits"] == replay["bits"]
    assert estimate["seconds"] == pytest.approx(replay["seconds"], rel=0.02)
    # Far below the rounds as they ran: device 1's links and slot took most of their time and bits.
    assert estimate["seconds"] < 0.5 * event_s and estimate["bits"] < 0.5 * history_bits
    assert first["budget_limits"] == {
        "seconds": share * estimate["seconds"],
        "bits": share * estimate["bits"],
    }
    # A round and the corrected slots' exchange at the replay's mean round, the rest in extra
    # steps at the slowest trainee's step time; the decision asked for the cap.
    step_s = max(
        row["compute_s"] / row["steps"] for row in rounds if row["round"] == 5 and row["device"] != 1
    )
    fits = math.floor((share - 2 / 6) * estimate["seconds"] / step_s)
    assert 0 < fits < 40
    assert first["local_steps"] == fits and first["budget_cut"] == {"local_steps": 40, "syncs": 0}
    # The next round no longer fits the steps' exchange: the correction ends within its limit.
    assert second["local_steps"] == 0 and second["budget_cut"]["local_steps"] == 40
    assert end["kind"] == "correction_end" and end["rounds"] == 1
    assert end["reason"] == "the budget left does not fit the chosen action"
    assert end["seconds"] <= share * estimate["seconds"] and end["bits"] <= share * estimate["bits"]


def test_the_lower_of_seconds_and_replay_share_is_the_limit(run_tiny) -> None:
    late = "events=[{kind: leave, device: 1, round: 6}]"
    common = (late, "training.rounds=10", "correction.policy=local", *EAGER)
    run = run_tiny(*common, "correction.budget.replay_share=1", "correction.budget.seconds=0.01")
    limits = first_decision(run)["budget_limits"]
    assert limits["seconds"] == 0.01 and limits["bits"] > 0
    assert "budget_limits" not in first_decision(run_tiny(*common))  # no limit asked


def test_a_second_retrain_replays_only_the_rounds_since_the_first(run_tiny) -> None:
    run = run_tiny(
        "training.rounds=5",
        "events=[{kind: leave, device: 1, round: 2}, {kind: join, round: 3}]",
        "correction.policy=retrain",
    )
    starts = [json.loads(e["detail"]) for e in run.rows("events") if e["kind"] == "correction"]
    assert [d["replay_rounds"] for d in starts] == [2, 1]
    # 5 rounds + 2 replayed; the join comes at round 3 of the replayed timeline and replays 1.
    assert max(row["round"] for row in run.rows("rounds")) == 5 + 2 + 1 - 1


def test_a_correction_that_a_join_supersedes_does_not_pay_for_the_join_s_pull(run_tiny) -> None:
    run = run_tiny(
        # Tolerances no term can meet: the leave's correction still runs when the join comes.
        "correction={policy: local, budget: {rounds: 5}, "
        "tolerances: {mode: absolute, learn: 1.0e-12, drift: 1.0e-12, consensus: 1.0e-12}}",
        "events=[{kind: leave, device: 1, round: 1}, {kind: join, round: 2}]",
    )
    ends = [json.loads(e["detail"]) for e in run.rows("events") if e["kind"] == "correction_end"]
    leave_end, join_end = ends[0], ends[-1]
    assert (leave_end["event"], leave_end["reason"], join_end["event"]) == (
        "leave",
        "superseded by a new event",
        "join",
    )
    transfers = run.rows("transfers")
    (pull,) = [t for t in transfers if t["purpose"] == "pull"]
    assert pull["round"] == 2 and pull["delivered_bits"] > 0
    # The leave's correction spent round 1; round 2, the join's pull included, is not its.
    assert leave_end["bits"] == sum(t["delivered_bits"] for t in transfers if t["round"] == 1)


# --------------------------------------------------------------------------- waiting


def test_wait_rounds_let_regular_rounds_pass_as_under_none_before_the_first_action(run_tiny) -> None:
    waited = run_tiny(LEAVE, "correction.policy=priority", "correction.wait_rounds=1", *EAGER)
    decisions = [c for c in corrections(waited) if c["kind"] == "correction"]
    first, second = decisions[0], decisions[1]
    # The event's round: residuals estimated and logged, nothing done.
    assert first["round"] == 2 and first["correction_round"] == 0 and first["waiting"] is True
    assert set(first["actions"]) == {"none"} and len(first["actions"]) == 2
    assert first["local_steps"] == 0 and first["syncs"] == 0 and first["mu"] == []
    assert all(r.startswith("waiting: regular round 1 of 1 before acting; ") for r in first["reasons"])
    assert first["baseline"]["devices"] == [0, 1, 2, 3]  # the pre-event terms, with the first decision
    # ... and it ran as under none: the same steps, transfers and evaluations through round 2.
    none = run_tiny(LEAVE)

    def through_event(run: Any, table: str) -> list[dict[str, Any]]:
        return [row for row in run.rows(table) if row["round"] <= 2]

    for table in ("rounds", "transfers", "evaluations"):
        assert through_event(waited, table) == through_event(none, table), table
    # The next round acts on what the regular round left (every term past these tolerances).
    assert second["round"] == 3 and second["correction_round"] == 1 and "waiting" not in second
    assert set(second["actions"]) - {"none"}
    acting = run_tiny(LEAVE, "correction.policy=priority", *EAGER)
    assert "waiting" not in first_decision(acting) and set(first_decision(acting)["actions"]) - {"none"}
    # correction_end counts the rounds that did something: the waiting round is not one of them.
    for run in (waited, acting):
        decided = [c for c in corrections(run) if c["kind"] == "correction"]
        does = [
            bool(c["local_steps"] or c["syncs"] or c["mu"] or c["links_added"]) and "waiting" not in c
            for c in decided
        ]
        end = [c for c in corrections(run) if c["kind"] == "correction_end"][-1]
        assert end["acting_rounds"] == sum(does) and end["rounds"] == 2
    assert [c["acting_rounds"] for c in corrections(waited) if c["kind"] == "correction_end"] == [1]


def test_wait_rounds_must_leave_a_round_of_the_budget_to_act_in(tiny_scenario) -> None:
    from cosim.scenario import ScenarioError, apply_overrides, parse_scenario

    raw = apply_overrides(
        tiny_scenario,
        ["correction.policy=priority", "correction.wait_rounds=3", "correction.budget.rounds=3"],
    )
    with pytest.raises(
        ScenarioError, match=r"correction.wait_rounds: 3 leaves no round .*budget.rounds: 3.*allowed: 0 to 2"
    ):
        parse_scenario(raw)
    spec = parse_scenario(
        apply_overrides(tiny_scenario, ["correction.policy=priority", "correction.wait_rounds=2"])
    )
    assert spec.correction.wait_rounds == 2
    # Under a policy that does not wait the field is read as it is.
    none = parse_scenario(
        apply_overrides(tiny_scenario, ["correction.wait_rounds=3", "correction.budget.rounds=3"])
    )
    assert none.correction.wait_rounds == 3


def test_after_waiting_a_term_falling_fast_enough_is_left_to_the_regular_rounds(
    run_tiny, monkeypatch
) -> None:
    from cosim.engine import simulation
    from cosim.engine.correction import settling_terms, waiting_rate

    waited = run_tiny(LEAVE, "correction.policy=priority", "correction.wait_rounds=1", *EAGER)
    first, second = [c for c in corrections(waited) if c["kind"] == "correction"][:2]
    assert "settling" not in first["residuals"]

    def terms(c: dict[str, Any]) -> np.ndarray:
        return np.array([c["normalised"][t] for t in ("learn", "drift", "consensus")])

    # What the run recorded is the rule on the two decisions' terms: one round on, 5 - 1 rounds left.
    rate = waiting_rate(terms(first), terms(second), 1)
    assert second["residuals"]["settling"] == settling_terms(rate, terms(second), 4).tolist()
    # Learning marked as settling in every group: the decision acts on the other terms instead.
    calls: list[tuple[np.ndarray, np.ndarray, int]] = []

    def learn_settles(rate, now, left):
        calls.append((rate, now, left))
        return np.array([[True] * now.shape[1], [False] * now.shape[1], [False] * now.shape[1]])

    monkeypatch.setattr(simulation, "settling_terms", learn_settles)
    run = run_tiny(LEAVE, "correction.policy=priority", "correction.wait_rounds=1", *EAGER, fresh=True)
    after = [c for c in corrections(run) if c["kind"] == "correction"][1]
    # The rate from the waiting round (the event's decision to the next), this decision's terms.
    assert np.allclose(calls[0][0], rate) and np.allclose(calls[0][1], terms(second)) and calls[0][2] == 4
    assert "learn" not in after["acted"] and after["local_steps"] == 0
    assert all("left to the regular rounds: learn at" in r for r in after["reasons"])
    assert after["normalised"]["learn"] == pytest.approx(second["normalised"]["learn"])


def test_two_waiting_rounds_and_a_budget_that_ends_with_them_plus_one(run_tiny) -> None:
    run = run_tiny(
        LEAVE, "correction.policy=priority", "correction.wait_rounds=2", "correction.budget.rounds=3", *EAGER
    )
    decided = [c for c in corrections(run) if c["kind"] == "correction"]
    assert [(c["round"], c.get("waiting", False)) for c in decided] == [(2, True), (3, True)]
    # The run ends (4 rounds) before the third round of the budget: nothing acted.
    end = [c for c in corrections(run) if c["kind"] == "correction_end"][-1]
    assert end["acting_rounds"] == 0 and end["extra_local_steps"] == 0 and end["syncs"] == 0
    budget = run_tiny(
        LEAVE,
        "training.rounds=6",
        "correction.policy=priority",
        "correction.wait_rounds=1",
        "correction.budget.rounds=2",
        *EAGER,
    )
    decided = [c for c in corrections(budget) if c["kind"] == "correction"]
    end = [c for c in corrections(budget) if c["kind"] == "correction_end"][-1]
    assert [c["round"] for c in decided] == [2, 3] and decided[1]["residuals"]["settling"] is not None
    assert end["reason"] == "round budget spent" and end["rounds"] == 2 and end["acting_rounds"] == 1


def test_a_replay_counts_every_round_it_lasts_as_acting(run_tiny) -> None:
    run = run_tiny(LEAVE, "correction.policy=retrain")
    end = [c for c in corrections(run) if c["kind"] == "correction_end"][-1]
    assert end["rounds"] == 2 and end["acting_rounds"] == 2  # rounds 0 and 1 replayed


HURTING_LEAVE = "events=[{kind: leave, device: 2, round: 2}]"  # takes 1/6 off the retained samples


def test_accuracy_drop_ends_a_correction_the_deletion_did_not_hurt_and_the_run_goes_on_as_under_none(
    run_tiny,
) -> None:
    acting = run_tiny(HURTING_LEAVE, "correction.policy=priority", *EAGER)
    first = first_decision(acting)
    assert first["residuals"]["accuracy_drop"] == pytest.approx(1 / 6)
    # The mean over the retained devices of their accuracy before minus now, on the same samples.
    before = dict(zip(first["baseline"]["devices"], first["baseline"]["accuracy_devices"], strict=True))
    now = dict(zip(first["affected"], first["residuals"]["accuracy_devices"], strict=True))
    assert first["residuals"]["accuracy_drop"] == pytest.approx(np.mean([before[d] - now[d] for d in now]))
    assert set(first["actions"]) - {"none"}  # every term past these tolerances
    # Above the drop: the first decision ends the correction, whatever the terms say ...
    gated = run_tiny(
        HURTING_LEAVE, "correction.policy=priority", *EAGER, "correction.tolerances.accuracy_drop=0.5"
    )
    decisions = corrections(gated)
    assert [c["kind"] for c in decisions] == ["correction", "correction_end"]
    assert set(decisions[0]["actions"]) == {"none"} and decisions[0]["local_steps"] == 0
    reason = (
        "accuracy on the retained devices' samples -0.167 since before the event "
        "(a fall of less than accuracy_drop 0.5)"
    )
    # The gate's reason, then what the terms said; flagged for analyses.
    assert decisions[0]["accuracy_gate"] is True and decisions[1]["reason"] == reason
    assert [r.split("; ", 1)[0] for r in decisions[0]["reasons"]] == [reason, reason]
    assert [r.split("; ", 1)[1] for r in decisions[0]["reasons"]] == first["reasons"]
    assert decisions[1]["rounds"] == 0 and decisions[1]["seconds"] == 0.0
    # ... and the run goes on exactly as under none.
    none = run_tiny(HURTING_LEAVE)
    for table in ("rounds", "transfers", "evaluations"):
        assert gated.rows(table) == none.rows(table), table
    # Below the drop: the correction acts as without the option.
    below = run_tiny(
        HURTING_LEAVE, "correction.policy=priority", *EAGER, "correction.tolerances.accuracy_drop=0.1"
    )
    assert [c["actions"] for c in corrections(below) if c["kind"] == "correction"] == [
        c["actions"] for c in corrections(acting) if c["kind"] == "correction"
    ]
    assert below.rows("evaluations") == acting.rows("evaluations")


def test_accuracy_drop_does_not_gate_a_join(run_tiny) -> None:
    gated = run_tiny(JOIN, "correction.policy=priority", *EAGER, "correction.tolerances.accuracy_drop=0.5")
    first = first_decision(gated)
    assert "accuracy_drop" not in first["residuals"]  # a newcomer has no accuracy before
    assert set(first["actions"]) - {"none"}
    plain = run_tiny(JOIN, "correction.policy=priority", *EAGER)
    assert gated.rows("evaluations") == plain.rows("evaluations")


def test_accuracy_drop_reports_no_change_as_plus_zero(run_tiny) -> None:
    unchanged = "events=[{kind: leave, device: 0, round: 1}]"  # the samples' accuracy does not move
    gated = run_tiny(
        unchanged, "correction.policy=priority", *EAGER, "correction.tolerances.accuracy_drop=0.01"
    )
    first = first_decision(gated)
    assert first["residuals"]["accuracy_drop"] == 0.0
    assert first["reasons"][0].startswith("accuracy on the retained devices' samples +0.000 since before")


def test_accuracy_drop_does_not_gate_a_leave_at_the_boundary_of_a_join(run_tiny) -> None:
    both = "events=[{kind: leave, device: 2, round: 2}, {kind: join, round: 2}]"
    gated = run_tiny(both, "correction.policy=priority", *EAGER, "correction.tolerances.accuracy_drop=0.5")
    first = first_decision(gated)
    assert 4 in first["affected"]  # the newcomer, whose data must still be learnt
    assert "accuracy_drop" not in first["residuals"] and "accuracy_gate" not in first
    assert set(first["actions"]) - {"none"}
    plain = run_tiny(both, "correction.policy=priority", *EAGER)
    assert gated.rows("evaluations") == plain.rows("evaluations")
