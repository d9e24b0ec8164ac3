"""The engine on tiny scenarios: determinism, the trace contract, leave, silent leave, join."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import replace
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch

from cosim.engine.simulation import HEADER_BITS
from cosim.trace.schema import TABLES

LEAVE = ("events=[{kind: leave, device: 1, round: 2}]",)
JOIN = ("events=[{kind: join, round: 2}]",)
LEAVE_THEN_JOIN = ("events=[{kind: leave, device: 1, round: 2}, {kind: join, round: 3}]",)
SILENT_S = 0.03
SILENT = (
    "training.rounds=6",
    "network.slot_s=0.5",
    "training.silence_timeout_s=1.2",
    f"events=[{{kind: leave_silent, device: 1, time_s: {SILENT_S}}}]",
)
SCENARIOS = {"leave": LEAVE, "join": JOIN, "leave_then_join": LEAVE_THEN_JOIN, "silent": SILENT}
PARQUET = [f"{table}.parquet" for table in TABLES]

# Five devices 80 m apart on a line (range about 100 m without fading): only neighbours link.
LINE = (
    "devices.count=5",
    "training.rounds=3",
    "network.area={width_m: 400, height_m: 10}",
    "network.placement={kind: explicit, positions_m: [[0, 5], [80, 5], [160, 5], [240, 5], [320, 5]]}",
    "network.radio.fading=none",
    "network.radio.shadowing_sigma_db=0",
    "events=[{kind: leave, device: 0, round: 1}]",
)

# Two newcomers at one boundary, next to each other and far from the others: the second
# pulls from the first.
TWO_NEWCOMERS = (
    "devices.count=3",
    "network.area={width_m: 100, height_m: 10}",
    "network.placement={kind: explicit, positions_m: [[0, 5], [5, 5], [10, 5], [60, 5], [62, 5]]}",
    "network.radio.fading=none",
    "network.radio.shadowing_sigma_db=0",
    "training.rounds=3",
    "events=[{kind: join, round: 1}, {kind: join, round: 1}]",
)

# 2 blocks x (q, k, v, o: d_out 32; gate, up: 64; down: 32) x rank 4 x 32 bits
SLOT_BITS = 2 * (4 * 32 + 2 * 64 + 32) * 4 * 32


def by_round(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[row["round"]].append(row)
    return dict(out)


def round_times(run: Any) -> dict[int, tuple[float, float]]:
    """round -> (start, end) from the rounds table (the same for every device of the round)."""
    out = {}
    for r, rows in by_round(run.rows("rounds")).items():
        assert len({(row["time_s"], row["round_end_s"]) for row in rows}) == 1, f"round {r}"
        out[r] = (rows[0]["time_s"], rows[0]["round_end_s"])
    return out


def events_of(run: Any, kind: str) -> list[dict[str, Any]]:
    return [row for row in run.rows("events") if row["kind"] == kind]


# --------------------------------------------------------------------------- determinism


def test_the_same_scenario_and_seed_give_byte_identical_tables(run_tiny) -> None:
    first = run_tiny(*LEAVE_THEN_JOIN)
    second = run_tiny(*LEAVE_THEN_JOIN, fresh=True)
    for name in [*PARQUET, "state.safetensors", "state.json"]:
        assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes(), name
    assert first.summary == second.summary


def test_a_different_seed_gives_different_transfers(run_tiny) -> None:
    first = run_tiny(*LEAVE_THEN_JOIN)
    other = run_tiny(*LEAVE_THEN_JOIN, "seed=4")
    assert (first.out_dir / "transfers.parquet").read_bytes() != (
        other.out_dir / "transfers.parquet"
    ).read_bytes()
    distances = [row["distance_m"] for row in first.rows("transfers")]
    assert distances != [row["distance_m"] for row in other.rows("transfers")]


# --------------------------------------------------------------------------- the trace contract


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_table_has_the_schema_columns_and_types(run_tiny, scenario: str) -> None:
    run = run_tiny(*SCENARIOS[scenario])
    manifest = json.loads((run.out_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    for table, cols in TABLES.items():
        names = [name for name, _, _ in cols]
        assert {"round", "time_s"} <= set(names)
        schema = pq.read_schema(run.out_dir / f"{table}.parquet")
        assert schema.names == names
        assert [schema.field(n).type for n in names] == [dtype for _, dtype, _ in cols]
        assert manifest["tables"][table] == len(run.rows(table)) > 0
    assert manifest["summary"] == run.summary


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_times_advance_round_by_round(run_tiny, scenario: str) -> None:
    run = run_tiny(*SCENARIOS[scenario])
    times = round_times(run)
    rounds = run.sim.scenario.training.rounds
    assert sorted(times) == list(range(rounds))
    assert times[0][0] == 0.0
    for r in range(rounds - 1):
        assert times[r][1] == times[r + 1][0], f"round {r} ends when round {r + 1} starts"
        assert times[r][0] < times[r][1]
    assert times[rounds - 1][1] == run.summary["simulated_s"]
    for table in TABLES:
        rows = run.rows(table)
        assert [row["round"] for row in rows] == sorted(row["round"] for row in rows), table
        for r, group in by_round(rows).items():
            stamps = [row["time_s"] for row in group]
            assert stamps == sorted(stamps), f"{table}, round {r}"
            start, end = times[r]
            assert start <= stamps[0] and stamps[-1] <= end, f"{table}, round {r}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_delivered_transfers_arrive_by_the_round_end(run_tiny, scenario: str) -> None:
    run = run_tiny(*SCENARIOS[scenario])
    times = round_times(run)
    delivered = [row for row in run.rows("transfers") if row["delivered"]]
    assert delivered
    for row in delivered:
        start, end = times[row["round"]]
        assert row["time_s"] == start
        assert start <= row["start_s"] <= row["finish_s"] <= end
        assert row["delivered_bits"] == row["bits"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_message_bits_are_slots_times_slot_bits_plus_header(run_tiny, scenario: str) -> None:
    run = run_tiny(*SCENARIOS[scenario])
    slot_bits = sum(run.sim.learner.slot_bits().values())
    assert slot_bits == SLOT_BITS
    for row in run.rows("transfers"):
        assert row["bits"] == row["slots"] * slot_bits + HEADER_BITS


def test_a_message_costs_the_bits_that_got_through_by_the_deadline(run_tiny) -> None:
    # A slot of 5 ms: each sender's messages queue one after the other and most miss the
    # deadline, some before their first packet is out.
    run = run_tiny("network.slot_s=0.005")
    transfers = run.rows("transfers")
    late = [t for t in transfers if not t["delivered"]]
    packet = run.sim.scenario.network.radio.packet_bits
    assert any(t["delivered_bits"] == 0 for t in late)
    assert any(0 < t["delivered_bits"] < t["bits"] for t in late)
    for t in late:
        assert t["delivered_bits"] % packet == 0 and t["delivered_bits"] < t["bits"]
    sent = sum(t["delivered_bits"] for t in transfers)
    assert run.summary["bits_sent"] == sent < sum(t["bits"] for t in transfers)
    gossip = [t for t in transfers if t["purpose"] == "gossip"]
    for row in run.rows("rounds"):
        own = [t for t in gossip if t["round"] == row["round"] and t["src"] == row["device"]]
        assert row["bits_sent"] == sum(t["delivered_bits"] for t in own)


def test_the_summary_counts_each_senders_exchange_messages_and_those_through(run_tiny) -> None:
    run = run_tiny("network.slot_s=0.005")
    transfers = [t for t in run.rows("transfers") if t["purpose"] != "pull"]
    senders = sorted({t["src"] for t in transfers})
    expected = [
        {
            "device": d,
            "sent": sum(t["src"] == d for t in transfers),
            "delivered": sum(t["src"] == d and t["delivered"] for t in transfers),
        }
        for d in senders
    ]
    assert run.summary["gossip_messages"] == expected
    assert any(m["delivered"] < m["sent"] for m in expected)
    assert sum(m["sent"] for m in expected) == len(transfers)


def test_a_round_with_a_message_cut_off_lasts_until_the_deadline(run_tiny) -> None:
    # The receiver cannot tell that a message will not arrive, and a cut-off message is on
    # the air until the deadline: the next round starts no earlier.
    run = run_tiny("network.slot_s=0.005")
    slot_s = run.sim.scenario.network.slot_s
    transfers = run.rows("transfers")
    cut = 0
    for r, rows in by_round(run.rows("rounds")).items():
        deadline = max(row["tx_start_s"] for row in rows) + slot_s
        messages = [t for t in transfers if t["round"] == r and t["purpose"] == "gossip"]
        assert max(t["finish_s"] for t in messages if t["delivered"]) <= rows[0]["round_end_s"], r
        if not all(t["delivered"] for t in messages):
            cut += 1
            assert rows[0]["round_end_s"] == pytest.approx(deadline, rel=0, abs=1e-12), r
    assert cut == len(by_round(run.rows("rounds")))


@pytest.mark.parametrize(
    "scenario",
    sorted(SCENARIOS),
)
def test_the_rounds_table_adds_up_the_transfers(run_tiny, scenario: str) -> None:
    run = run_tiny(*SCENARIOS[scenario])
    transfers = [t for t in run.rows("transfers") if t["purpose"] == "gossip"]
    for row in run.rows("rounds"):
        sent = [t for t in transfers if t["round"] == row["round"]]
        own = [t for t in sent if t["src"] == row["device"]]
        received = [t for t in sent if t["dst"] == row["device"] and t["delivered"]]
        assert row["bits_sent"] == sum(t["delivered_bits"] for t in own)
        assert row["messages_sent"] == len(own)
        assert row["messages_delivered"] == sum(t["delivered"] for t in own), (row["round"], row["device"])
        assert row["bits_received"] == sum(t["bits"] for t in received)
        # A newcomer starts computing once its pull has arrived; everyone else at the round start.
        # A device serving a pull starts sending once the pull is through.
        pulls = [t for t in run.rows("transfers") if t["purpose"] == "pull" and t["round"] == row["round"]]
        ready = max([row["time_s"]] + [t["finish_s"] for t in pulls if t["dst"] == row["device"]])
        served = [t["finish_s"] for t in pulls if t["src"] == row["device"]]
        radio = max([ready + row["compute_s"], *served])
        assert row["tx_start_s"] == pytest.approx(radio, rel=0, abs=1e-12)
        assert row["tx_end_s"] == max(
            [row["tx_start_s"]] + [min(t["finish_s"], row["round_end_s"]) for t in own]
        )


def test_the_first_round_sends_every_slot_but_the_receivers_own_to_every_neighbour(run_tiny) -> None:
    run = run_tiny(*LEAVE)
    first = [row for row in run.rows("transfers") if row["round"] == 0]
    # 4 devices 30 m apart at most: a complete graph; 4 live slots, of which every message
    # carries the 3 its receiver does not own (an owner's copy of its slot is authoritative).
    assert sorted((row["src"], row["dst"]) for row in first) == [
        (i, j) for i in range(4) for j in range(4) if i != j
    ]
    assert {row["slots"] for row in first} == {3}
    assert {row["bits"] for row in first} == {3 * SLOT_BITS + HEADER_BITS}
    assert all(row["mcs"] >= 0 and row["rate_bps"] > 0 for row in first)


def test_every_event_kind_is_documented(run_tiny) -> None:
    documented = {kind.strip() for kind in dict((c, m) for c, _, m in TABLES["events"])["kind"].split(",")}
    kinds = {row["kind"] for s in SCENARIOS.values() for row in run_tiny(*s).rows("events")}
    assert kinds <= documented


# --------------------------------------------------------------------------- leave


def test_a_leave_tombstones_the_slot_everywhere_then_releases_it(run_tiny) -> None:
    run = run_tiny(*LEAVE)
    events = run.rows("events")
    (leave,) = events_of(run, "leave")
    slot = leave["slot"]
    assert (leave["device"], leave["round"], slot) == (1, 2, 1)
    assert json.loads(leave["detail"]) == {"tombstone_from": [0, 2, 3]}
    tombstones = events_of(run, "tombstone")
    assert sorted(row["device"] for row in tombstones) == [0, 2, 3]
    assert all(row["slot"] == slot and row["round"] == 2 for row in tombstones)
    (released,) = events_of(run, "slot_released")
    assert (released["slot"], released["round"], released["device"]) == (slot, 2, -1)
    position = {id(row): i for i, row in enumerate(events)}
    assert position[id(leave)] < min(position[id(row)] for row in tombstones)
    assert max(position[id(row)] for row in tombstones) < position[id(released)]


def test_a_leaver_takes_no_further_part(run_tiny) -> None:
    run = run_tiny(*LEAVE)
    assert sorted({row["round"] for row in run.rows("rounds") if row["device"] == 1}) == [0, 1]
    for row in run.rows("rounds"):
        assert row["device"] != 1 or row["round"] < 2
    for row in run.rows("transfers"):
        assert 1 not in (row["src"], row["dst"]) or row["round"] < 2
    for row in run.rows("evaluations"):
        assert row["device"] != 1 or row["round"] < 2 or row["stage"] == "before_event"
    assert run.summary["live_devices"] == 3


def test_every_copy_of_a_deleted_slot_is_exactly_zero(run_tiny) -> None:
    run = run_tiny(*LEAVE)
    learner = run.sim.learner
    assert learner.slot_of == {0: 0, 2: 2, 3: 3}
    for name, copies in learner.copies.items():
        assert torch.count_nonzero(copies[[0, 2, 3], 1]) == 0, name
        assert torch.count_nonzero(copies[1]) == 0, f"{name}: the leaver's own copies"
        # Not vacuous: the survivors' slots were trained and gossiped.
        assert torch.count_nonzero(copies[[0, 2, 3]][:, [0, 2, 3]]) > 0, name


# --------------------------------------------------------------------------- silent leave


def silent_run(run_tiny) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    run = run_tiny(*SILENT)
    (silent,) = events_of(run, "leave_silent")
    (detected,) = events_of(run, "leave_detected")
    return run, silent, detected


def test_a_silent_leave_is_detected_only_after_the_timeout(run_tiny) -> None:
    run, silent, detected = silent_run(run_tiny)
    timeout = run.sim.scenario.training.silence_timeout_s
    # A time-triggered event takes effect at the first round boundary at or after its time.
    assert silent["device"] == 1 and json.loads(silent["detail"]) == {"scheduled_s": SILENT_S}
    times = round_times(run)
    assert silent["time_s"] == min(start for start, _ in times.values() if start >= SILENT_S)
    assert detected["device"] == 1 and detected["slot"] == silent["slot"]
    # ... and at the first round boundary where the neighbours have heard nothing for that long.
    heard = max(t["finish_s"] for t in run.rows("transfers") if t["src"] == 1 and t["delivered"])
    assert detected["time_s"] - heard >= timeout
    assert detected["time_s"] == times[detected["round"]][0]
    quiet_enough = [r for r, (start, _) in times.items() if start - heard >= timeout]
    assert detected["round"] == min(quiet_enough)
    assert sorted(row["device"] for row in events_of(run, "tombstone")) == [0, 2, 3]
    assert [row["slot"] for row in events_of(run, "slot_released")] == [silent["slot"]]


def test_rounds_wait_for_a_silent_device_until_the_deadline(run_tiny) -> None:
    run, silent, detected = silent_run(run_tiny)
    slot_s = run.sim.scenario.network.slot_s
    waiting = range(silent["round"], detected["round"])
    assert len(waiting) >= 2
    rounds = by_round(run.rows("rounds"))
    for r, rows in rounds.items():
        deadline = rows[0]["time_s"] + max(row["compute_s"] for row in rows) + slot_s
        if r in waiting:
            assert rows[0]["round_end_s"] == pytest.approx(deadline, rel=0, abs=1e-12), r
            assert sorted(row["device"] for row in rows) == [0, 2, 3]
        else:
            assert rows[0]["round_end_s"] < deadline - 0.1, f"round {r} need not wait"
    # The silent device trained up to the round before it fell silent, and receives nothing after.
    assert max(row["round"] for row in run.rows("rounds") if row["device"] == 1) == silent["round"] - 1
    to_silent = [t for t in run.rows("transfers") if t["dst"] == 1 and t["round"] in waiting]
    assert to_silent and not any(t["delivered"] for t in to_silent)


def test_a_silent_device_neither_sends_nor_receives_after_it_fell_silent(run_tiny) -> None:
    run, silent, _ = silent_run(run_tiny)
    late = [
        t
        for t in run.rows("transfers")
        if 1 in (t["src"], t["dst"]) and t["delivered"] and t["finish_s"] > silent["time_s"]
    ]
    assert late == []


def test_silence_is_detected_at_the_first_boundary_past_the_timeout(run_tiny) -> None:
    """Neighbours can only observe silence: it counts from the last message they heard."""
    base = ("training.rounds=5", "network.slot_s=0.5", "events=[{kind: leave_silent, device: 2, round: 2}]")
    reference = run_tiny(*base, "training.silence_timeout_s=100")
    times = round_times(reference)
    heard = max(t["finish_s"] for t in reference.rows("transfers") if t["src"] == 2 and t["delivered"])
    # A timeout that the boundary of round 4 reaches, counted from `heard`, but that of round 3 does not.
    timeout = (times[3][0] + times[4][0]) / 2 - heard
    run = run_tiny(*base, f"training.silence_timeout_s={timeout!r}")
    (detected,) = events_of(run, "leave_detected")
    assert detected["round"] == 4
    assert detected["time_s"] - heard >= timeout
    assert times[3][0] - heard < timeout


# --------------------------------------------------------------------------- join


def test_a_newcomer_gets_the_next_id_a_free_slot_and_pulls(run_tiny) -> None:
    run = run_tiny(*JOIN)
    (join,) = events_of(run, "join")
    assert (join["device"], join["slot"], join["round"]) == (4, 4, 2)
    (pull,) = [t for t in run.rows("transfers") if t["purpose"] == "pull"]
    assert (pull["dst"], pull["round"], pull["slots"]) == (4, 2, 4)
    assert pull["delivered"] and pull["bits"] == 4 * SLOT_BITS + HEADER_BITS
    # It pulls from the neighbour with the best link.
    links = {t["src"]: t["goodput_bps"] for t in run.rows("transfers") if t["round"] == 2 and t["dst"] == 4}
    assert pull["src"] == max((g, s) for s, g in links.items() if s != 4)[1]
    (pulled,) = events_of(run, "pull")
    assert json.loads(pulled["detail"]) == {
        "delivered": True,
        "bits": pull["bits"],
        "finish_s": pull["finish_s"],
        "from": pull["src"],
        # The builtin network starts it when asked: its deadline is its start plus slot_s.
        "deadline_s": pull["start_s"] + run.sim.scenario.network.slot_s,
    }
    assert sorted({row["round"] for row in run.rows("rounds") if row["device"] == 4}) == [2, 3]
    assert run.sim.learner.slot_of[4] == 4
    assert run.summary["live_devices"] == 5


def test_a_newcomer_reuses_a_released_slot(run_tiny) -> None:
    run = run_tiny(*LEAVE_THEN_JOIN)
    (released,) = events_of(run, "slot_released")
    (join,) = events_of(run, "join")
    assert (released["slot"], released["round"]) == (1, 2)
    assert (join["device"], join["slot"], join["round"]) == (4, 1, 3)
    assert run.sim.learner.slot_of == {0: 0, 2: 2, 3: 3, 4: 1}
    (pull,) = [t for t in run.rows("transfers") if t["purpose"] == "pull"]
    assert pull["slots"] == 3, "the copies of the three other live slots"


def test_a_newcomer_sends_only_after_its_pull_arrived(run_tiny) -> None:
    run = run_tiny(*JOIN)
    (pull,) = [t for t in run.rows("transfers") if t["purpose"] == "pull"]
    (first,) = [row for row in run.rows("rounds") if row["device"] == 4 and row["round"] == 2]
    assert first["tx_start_s"] >= pull["finish_s"]
    sent = [t for t in run.rows("transfers") if t["src"] == 4 and t["purpose"] == "gossip"]
    assert sent and min(t["start_s"] for t in sent if t["round"] == 2) >= first["tx_start_s"]


def test_a_pull_that_misses_the_slot_is_not_delivered(run_tiny) -> None:
    run = run_tiny(*JOIN, "network.slot_s=0.001")
    (pull,) = [t for t in run.rows("transfers") if t["purpose"] == "pull"]
    assert not pull["delivered"]
    assert pull["finish_s"] > pull["time_s"] + 0.001
    (pulled,) = events_of(run, "pull")
    assert json.loads(pulled["detail"])["delivered"] is False
    # The newcomer cannot tell that the pull failed before its deadline: it starts computing
    # then, from zero copies of the other slots (and gossips).
    (first,) = [row for row in run.rows("rounds") if row["device"] == 4 and row["round"] == 2]
    deadline = pull["start_s"] + run.sim.scenario.network.slot_s
    assert first["tx_start_s"] == pytest.approx(deadline + first["compute_s"], rel=0, abs=1e-12)
    assert deadline > first["time_s"]  # it waits: the old rule started at the round start


def test_tombstones_hop_along_a_line(run_tiny) -> None:
    run = run_tiny(*LINE)
    (leave,) = events_of(run, "leave")
    assert json.loads(leave["detail"]) == {"tombstone_from": [1]}
    hops = {row["device"]: json.loads(row["detail"])["hops"] for row in events_of(run, "tombstone")}
    assert hops == {1: 0, 2: 1, 3: 2, 4: 3}
    stamps = {row["device"]: row["time_s"] for row in events_of(run, "tombstone")}
    hop_s = stamps[2] - stamps[1]
    assert hop_s > 0
    for device, h in hops.items():
        assert stamps[device] == pytest.approx(leave["time_s"] + h * hop_s, rel=0, abs=1e-12)


def test_a_slot_is_released_after_its_last_tombstone_arrives(run_tiny) -> None:
    run = run_tiny(*LINE)
    (released,) = events_of(run, "slot_released")
    assert released["time_s"] >= max(row["time_s"] for row in events_of(run, "tombstone"))


# --------------------------------------------------------------------------- evaluations


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_network_row_is_the_mean_of_the_device_rows(run_tiny, scenario: str) -> None:
    run = run_tiny(*SCENARIOS[scenario])
    trained = {r: sorted(row["device"] for row in rows) for r, rows in by_round(run.rows("rounds")).items()}
    silent_at = {row["device"]: row["time_s"] for row in events_of(run, "leave_silent")}
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in run.rows("evaluations"):
        groups[row["round"], row["stage"], row["split"]].append(row)
    checked = 0
    for (r, stage, split), rows in groups.items():
        network = [row for row in rows if row["device"] is None]
        devices = [row for row in rows if row["device"] is not None]
        assert len(network) == 1, (r, stage, split)
        (net,) = network
        assert net["accuracy"] == pytest.approx(
            math.fsum(d["accuracy"] for d in devices) / len(devices), abs=1e-12
        )
        assert net["loss"] == pytest.approx(math.fsum(d["loss"] for d in devices) / len(devices), abs=1e-12)
        assert {d["n"] for d in devices} == {net["n"]}
        assert all(d["consensus_distance"] is None for d in devices)
        assert net["consensus_distance"] is not None and net["consensus_distance"] >= 0
        if stage == "round":
            # Every device that trained in the round and has not fallen silent by its end.
            expected = [d for d in trained[r] if silent_at.get(d, math.inf) >= net["time_s"]]
            assert sorted(d["device"] for d in devices) == expected
            checked += 1
    # retain and test, forget and heldout when a device leaves, newcomer when one joins
    splits = {"leave": 4, "join": 3, "leave_then_join": 5, "silent": 4}[scenario]
    assert checked == run.sim.scenario.training.rounds * splits


def test_events_are_evaluated_just_before_and_after(run_tiny) -> None:
    run = run_tiny(*LEAVE)
    evaluations = run.rows("evaluations")
    stages = {(row["round"], row["stage"]) for row in evaluations}
    assert {(r, "round") for r in range(4)} <= stages
    assert {s for s in stages if s[1] in ("before_event", "after_event")} == {
        (2, "before_event"),
        (2, "after_event"),
    }
    start = round_times(run)[2][0]
    for stage, devices in (("before_event", {0, 1, 2, 3}), ("after_event", {0, 2, 3})):
        rows = [row for row in evaluations if row["stage"] == stage]
        assert {row["device"] for row in rows} == devices | {None}
        assert {row["time_s"] for row in rows} == {start}


def test_the_splits_have_the_scenario_sizes(run_tiny) -> None:
    run = run_tiny(*LEAVE)
    sizes = {row["split"]: row["n"] for row in run.rows("evaluations") if row["device"] is None}
    # retain: 3 stayers x 4 private + 2 shared; forget: 1 leaver x 4; test: 8 rule questions;
    # heldout: at least as many unseen facts as forget has, and 32 where there are enough.
    assert sizes == {"retain": 14, "forget": 4, "test": 8, "heldout": 32}


def test_an_event_after_the_last_round_began_is_reported_as_not_reached(run_tiny) -> None:
    late = run_tiny("events=[{kind: leave, device: 1, round: 1}, {kind: leave, device: 2, time_s: 1.0e9}]")
    assert late.summary["events_not_reached"] == [{"index": 1, "kind": "leave", "time_s": 1.0e9, "device": 2}]
    assert late.summary["live_devices"] == 3
    assert [e["device"] for e in late.rows("events") if e["kind"] == "leave"] == [1]
    assert "events_not_reached" not in run_tiny("events=[{kind: leave, device: 1, round: 1}]").summary


def test_an_event_at_time_zero_happens_in_round_zero(run_tiny) -> None:
    run = run_tiny("events=[{kind: leave, device: 1, time_s: 0.0}]")
    (leave,) = events_of(run, "leave")
    assert (leave["round"], leave["time_s"]) == (0, 0.0)
    assert 1 not in {row["device"] for row in run.rows("rounds")}


def test_a_newcomer_does_not_pull_from_a_device_that_has_gone_silent(run_tiny) -> None:
    # Device 1 falls silent at round 1 and is not detected before the join at round 2; it
    # sits next to the newcomer, so the best link would be its.
    run = run_tiny(
        "training.silence_timeout_s=100.0",
        "network.placement={kind: explicit, positions_m: [[0, 0], [20, 20], [0, 25], [25, 0], [20, 21]]}",
        "events=[{kind: leave_silent, device: 1, round: 1}, {kind: join, round: 2}]",
    )
    (pull,) = [t for t in run.rows("transfers") if t["purpose"] == "pull"]
    assert pull["dst"] == 4 and pull["src"] != 1 and pull["delivered"]
    links = {t["src"]: t["goodput_bps"] for t in run.rows("transfers") if t["round"] == 2 and t["dst"] == 4}
    assert pull["src"] == max((g, s) for s, g in links.items() if s not in (1, 4))[1]


def test_a_round_lasts_until_a_device_without_a_link_has_finished_computing(run_tiny) -> None:
    # Device 2 is out of everyone's range and slow: every message between 0 and 1 arrives
    # before it has finished its local steps.
    run = run_tiny(
        "devices.count=3",
        "devices.flops_per_s=1.0e8",
        "devices.heterogeneity=1.0",
        "training.rounds=3",
        "network.area={width_m: 400, height_m: 10}",
        "network.placement={kind: explicit, positions_m: [[0, 5], [10, 5], [390, 5]]}",
        "network.radio.fading=none",
        "network.radio.shadowing_sigma_db=0",
    )
    transfers = run.rows("transfers")
    assert not [t for t in transfers if 2 in (t["src"], t["dst"])], "device 2 has no link"
    for r in range(3):
        rows = [row for row in run.rows("rounds") if row["round"] == r]
        arrived = max(t["finish_s"] for t in transfers if t["round"] == r and t["delivered"])
        (isolated,) = [row for row in rows if row["device"] == 2]
        assert isolated["tx_start_s"] > arrived, "it computes past the last arrival"
        assert {row["round_end_s"] for row in rows} == {isolated["tx_start_s"]}


def test_a_newcomer_serves_a_pull_only_once_its_own_copies_have_arrived(run_tiny) -> None:
    run = run_tiny(*TWO_NEWCOMERS)
    pulls = {t["dst"]: t for t in run.rows("transfers") if t["purpose"] == "pull"}
    assert pulls[4]["src"] == 3 and pulls[3]["delivered"]
    assert pulls[4]["start_s"] >= pulls[3]["finish_s"] > pulls[3]["start_s"]


def test_a_device_leaving_at_the_boundary_of_a_join_does_not_serve_its_pull(run_tiny) -> None:
    # The newcomer's best link is to device 1, which leaves at the same boundary; the join
    # comes first in the file.
    run = run_tiny(
        "network.area={width_m: 100, height_m: 10}",
        "network.placement={kind: explicit, positions_m: [[0, 5], [30, 5], [10, 5], [32, 5]]}",
        "devices.count=3",
        "network.radio.fading=none",
        "network.radio.shadowing_sigma_db=0",
        "training.rounds=3",
        "events=[{kind: join, round: 1}, {kind: leave, device: 1, round: 1}]",
    )
    (pull,) = [t for t in run.rows("transfers") if t["purpose"] == "pull"]
    assert pull["dst"] == 3 and pull["src"] != 1
    links = {t["src"]: t["goodput_bps"] for t in run.rows("transfers") if t["round"] == 1 and t["dst"] == 3}
    assert pull["src"] == max((g, s) for s, g in links.items() if s != 3)[1]


def test_the_network_is_told_which_pulls_are_still_on_the_air(tmp_path: Any) -> None:
    # TWO_NEWCOMERS, the second pulling from the first: every transfer call gets, as on the
    # air, the pulls of earlier calls not over at its time.
    from cosim.engine.simulation import Simulation
    from cosim.scenario import apply_overrides, parse_scenario
    from tests.conftest import TINY_SCENARIO

    sim = Simulation(parse_scenario(apply_overrides(TINY_SCENARIO, list(TWO_NEWCOMERS))), tmp_path / "run")
    calls: list[tuple[float, float, list[Any], list[Any]]] = []
    transfer = sim.network.transfer

    def recording(time_s: float, messages: Any, deadline_s: float, on_air: Any = ()) -> Any:
        results = transfer(time_s, messages, deadline_s, on_air)
        calls.append((time_s, deadline_s, list(on_air), results))
        return results

    sim.network.transfer = recording  # type: ignore[method-assign]
    sim.run()
    # The pull calls: one message each, to a newcomer (devices 3 and 4).
    pulls = [k for k, (_, _, _, results) in enumerate(calls) if len(results) == 1 and results[0].dst >= 3]
    assert [calls[k][3][0].dst for k in pulls] == [3, 4]
    held = {k: replace(calls[k][3][0], finish_s=min(calls[k][3][0].finish_s, calls[k][1])) for k in pulls}
    for k, (time_s, _, on_air, _) in enumerate(calls):
        assert on_air == [r for j, r in held.items() if j < k and r.finish_s > time_s], k
    # The second pull went out with the first on the air; the round's exchange with both.
    first, second = pulls
    assert calls[second][2] == [held[first]]
    assert len(calls[second + 1][3]) > 2 and calls[second + 1][2] == [held[first], held[second]]


# --------------------------------------------------------------------------- what a receiver holds


def _run_recording_what_links_deliver(tmp_path: Any, overrides: list[str], lost: Any) -> list[int]:
    """Run the tiny scenario with ``overrides``, losing the messages for which ``lost(call, result)``
    holds (``call`` counts the network's transfer calls), and check every mix against a
    brute-force record: per link, the sender's copy of each slot and layer group as of the
    last delivered message that carried it (or the pull).  Returns, per exchange, how many
    (link, slot, group) the receivers mixed from an earlier message."""
    from dataclasses import replace

    from cosim.engine.simulation import Simulation
    from cosim.scenario import apply_overrides, parse_scenario
    from tests.conftest import TINY_SCENARIO

    sim = Simulation(parse_scenario(apply_overrides(TINY_SCENARIO, overrides)), tmp_path)
    learner = sim.learner
    held: dict[tuple[int, int], dict[str, torch.Tensor]] = {}  # (src, dst) -> what dst holds of src
    message: dict[str, Any] = {}
    carried: list[tuple[int, int, set[tuple[int, int]]]] = []  # delivered messages of this exchange
    reused: list[int] = []

    transfer, calls = sim.network.transfer, [0]

    def lossy(time_s: float, messages: Any, deadline_s: float, on_air: Any = ()) -> Any:
        calls[0] += 1
        results = transfer(time_s, messages, deadline_s, on_air)
        return [replace(r, delivered=False) if lost(calls[0], r) else r for r in results]

    add = sim.trace.add

    def watch(table: str, **row: Any) -> None:
        if table == "transfers" and row["purpose"] != "pull":
            message.clear()
            if row["delivered"]:
                message.update(src=row["src"], dst=row["dst"], items=set())
                carried.append((row["src"], row["dst"], message["items"]))
        if table == "allocations" and message and row["precision_bits"] > 0:
            message["items"].add((row["slot"], row["group"]))
        add(table, **row)

    pull = learner.pull

    def pulled(device: int, source: int) -> None:
        pull(device, source)
        held[(source, device)] = {n: c[source].clone() for n, c in learner.copies.items()}

    mix = learner.mix

    def checked_mix(devices: list[int], weights: Any, delivered: Any, **kwargs: Any) -> None:
        live = learner.live_slots()
        count = 0
        for src, dst, items in carried:
            record = held.setdefault((src, dst), {})
            for name, copies in learner.copies.items():
                g = learner.group_of[name]
                mine = record.setdefault(name, torch.full_like(copies[src], float("nan")))
                q = kwargs["precision"][devices.index(dst), devices.index(src)]  # [slot, group]
                for slot in live:
                    if (slot, g) in items:
                        mine[slot] = copies[src, slot]
                    elif q[slot, g] > 0:
                        # Mixed without being in this message: dst must hold it from an earlier one.
                        assert torch.equal(mine[slot], copies[src, slot]), (src, dst, slot, name)
                        count += 1
        reused.append(count)
        carried.clear()
        mix(devices, weights, delivered, **kwargs)

    sim.network.transfer = lossy  # type: ignore[method-assign]
    sim.trace.add = watch  # type: ignore[method-assign]
    learner.pull = pulled  # type: ignore[method-assign]
    learner.mix = checked_mix  # type: ignore[method-assign]
    sim.run()
    return reused


def test_a_receiver_mixes_only_copies_that_reached_it(tmp_path: Any) -> None:
    # In the second round nothing reaches device 1 and nothing of its gets through, so in the
    # third its copies of the other slots are unchanged since it last sent them, yet no one
    # received them: they must travel again.
    reused = _run_recording_what_links_deliver(
        tmp_path, [], lambda call, r: call == 2 and 1 in (r.src, r.dst)
    )
    assert len(reused) == 4 and sum(reused) > 0


def test_a_correction_exchange_of_some_layer_groups_leaves_the_others_owed(tmp_path: Any) -> None:
    # A synchronisation of the lagging layer groups only, after a leave; then a join pulls.
    from tests.test_correction import EAGER

    reused = _run_recording_what_links_deliver(
        tmp_path,
        [
            "training.rounds=6",
            "events=[{kind: leave, device: 1, round: 2}, {kind: join, round: 4}]",
            "correction.policy=sync",
            *EAGER,
        ],
        lambda call, r: call % 3 == 0 and (r.src + r.dst) % 2 == 1,
    )
    assert len(reused) > 6 and sum(reused) > 0
