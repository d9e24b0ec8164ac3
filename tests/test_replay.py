"""The estimate of retrain's replay: the rounds as they went, replayed without the devices gone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from cosim.engine.replay import RoundRecord, Sent, replay_cost
from cosim.network import Message
from cosim.network.builtin import BuiltinBackend
from cosim.scenario import Area, BuiltinNetwork, Placement, Radio

ACCESS_S, PACKET_BITS, SLOT_S = 1e-3, 8000, 0.05
DEVICES = 6


def network(seed: int) -> BuiltinBackend:
    # Devices spread over 200 m with the default range (about 100 m): some pairs cannot link.
    rng = np.random.default_rng(seed)
    positions = tuple((float(x), float(y)) for x, y in rng.uniform(0, 200, size=(DEVICES, 2)))
    spec = BuiltinNetwork(
        area=Area(width_m=200, height_m=200),
        placement=Placement(kind="explicit", positions_m=positions),
        radio=Radio(shadowing_sigma_db=0.0, fading="none", packet_bits=PACKET_BITS, access_delay_s=ACCESS_S),
    )
    return BuiltinBackend(spec, range(DEVICES), seed)


def exchange(net: BuiltinBackend, start_s: float, rng: np.random.Generator) -> tuple[RoundRecord, list]:
    """One round: every device computes, then sends every other device the slots it holds.

    A device holds the slots of its part of the graph; a message never carries the receiver's own.
    """
    computed = {d: start_s + float(rng.uniform(0.0, 0.02)) for d in range(DEVICES)}
    slot_bits = {d: int(rng.integers(20_000, 120_000)) for d in range(DEVICES)}
    _, part = connected_components(net.links(start_s, range(DEVICES)).rate_bps > 0, directed=False)
    messages, carried = [], []
    for src in range(DEVICES):
        for dst in rng.permutation([d for d in range(DEVICES) if d != src]):
            carries = {d: b for d, b in slot_bits.items() if d != dst and part[d] == part[src]}
            messages.append(Message(src, int(dst), 512 + sum(carries.values()), computed[src]))
            carried.append(carries)
    deadline = max(computed.values()) + SLOT_S
    results = net.transfer(start_s, messages, deadline)
    sent = tuple(
        Sent(m.src, m.dst, m.bits, m.start_s, r.start_s, r.finish_s, r.rate_bps > 0, c)
        for m, r, c in zip(messages, results, carried, strict=True)
    )
    return RoundRecord(start_s, computed, sent), results


def reference(net: BuiltinBackend, record: RoundRecord, gone: set[int]) -> tuple[float, float]:
    """The round sent again through the network itself, among the devices left and without their slots."""
    computed = max(t for d, t in record.computed_s.items() if d not in gone)
    deadline = computed + SLOT_S
    kept = [m for m in record.messages if m.src not in gone and m.dst not in gone]
    results = net.transfer(record.start_s, [Message(m.src, m.dst, m.bits, m.ready_s) for m in kept], deadline)
    # The engine's round: over when every message is through and every device has computed,
    # or at the deadline when one is not delivered.
    # A slot crosses only links: a message carries no slot of a device no link among
    # those left connects to its sender (a dense reachability, independent of the estimate's).
    left = sorted({m.src for m in record.messages} - gone)
    index = {d: i for i, d in enumerate(left)}
    linked = np.eye(len(left), dtype=int)
    for m, r in zip(kept, results, strict=True):
        if r.rate_bps > 0:
            linked[index[m.src], index[m.dst]] = linked[index[m.dst], index[m.src]] = 1
    _, part = connected_components(linked, directed=False)
    results = net.transfer(
        record.start_s,
        [
            Message(
                m.src,
                m.dst,
                m.bits
                - sum(b for d, b in m.slot_bits.items() if d in gone or part[index[d]] != part[index[m.src]]),
                m.ready_s,
            )
            for m in kept
        ],
        deadline,
    )
    late = any(not r.delivered for r in results)
    end = deadline if late else max([computed, *(r.finish_s for r in results)])
    return end - record.start_s, float(sum(r.delivered_bits for r in results))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_replay_is_the_rounds_sent_again_without_the_devices_gone(seed: int) -> None:
    net, rng = network(seed), np.random.default_rng(100 + seed)
    records, outcomes = [], []
    for r in range(4):
        record, results = exchange(net, start_s=0.2 * r, rng=rng)
        records.append(record)
        outcomes += results
    # The setup reaches every case: delivered, cut off by the deadline with part of it
    # through, and no link at all.
    assert any(o.delivered for o in outcomes)
    assert any(not o.delivered and o.delivered_bits > 0 for o in outcomes)
    assert any(o.rate_bps == 0 for o in outcomes)
    for gone in ({3}, {0, 5}):
        expected = [reference(net, record, gone) for record in records]
        cost = replay_cost(records, gone, slot_s=SLOT_S, access_delay_s=ACCESS_S, packet_bits=PACKET_BITS)
        assert cost.rounds == 4
        assert cost.seconds == pytest.approx(sum(s for s, _ in expected), rel=1e-9)
        assert cost.bits == pytest.approx(sum(b for _, b in expected), rel=1e-9)


def test_with_nobody_gone_the_replay_is_the_rounds_as_they_went() -> None:
    net, rng = network(0), np.random.default_rng(7)
    record, results = exchange(net, start_s=1.0, rng=rng)
    deadline = max(record.computed_s.values()) + SLOT_S
    cost = replay_cost([record], (), slot_s=SLOT_S, access_delay_s=ACCESS_S, packet_bits=PACKET_BITS)
    assert cost.bits == sum(r.delivered_bits for r in results)
    assert not all(r.delivered for r in results)  # so the round ran to its deadline
    assert cost.seconds == pytest.approx(deadline - 1.0, rel=1e-12)


def test_a_message_without_the_slot_of_a_device_gone_is_that_much_shorter() -> None:
    # Sender 0 sends 1 Mbit at 10 Mbit/s of goodput (0.1 s of airtime), then 0.5 Mbit:
    # without device 2's 0.4 Mbit slot in the first the second starts 0.04 s sooner.
    first = Sent(0, 1, 1_000_000, 0.0, 0.0, ACCESS_S + 0.1, True, {2: 400_000, 0: 600_000})
    second = Sent(0, 3, 500_000, 0.0, ACCESS_S + 0.1, 2 * ACCESS_S + 0.15, True, {0: 500_000})
    to_gone = Sent(0, 2, 600_000, 0.0, 2 * ACCESS_S + 0.15, 3 * ACCESS_S + 0.21, True, {0: 600_000})
    record = RoundRecord(0.0, {0: 0.0, 1: 0.0, 2: 0.5, 3: 0.0}, (first, to_gone, second))
    cost = replay_cost([record], {2}, slot_s=1.0, access_delay_s=ACCESS_S, packet_bits=PACKET_BITS)
    # Device 2 computed last (0.5 s): without it the round is over when the second arrives.
    assert cost.bits == 600_000 + 500_000
    assert cost.seconds == pytest.approx(2 * ACCESS_S + 0.06 + 0.05)
    # With it the round waits for device 2's computing, and every bit goes.
    everyone = replay_cost([record], (), slot_s=1.0, access_delay_s=ACCESS_S, packet_bits=PACKET_BITS)
    assert everyone.bits == 2_100_000 and everyone.seconds == pytest.approx(0.5)


def test_where_the_devices_gone_held_the_graph_together_a_message_carries_its_part_s_slots() -> None:
    # The path 0 - 1 - 2 - 3 without device 1: 2 -> 3 no longer relays slot 0 (nor 1),
    # and 3 -> 2 still carries slot 3.  Goodput 1 Mbit/s, nothing cut off.
    def sent(src: int, dst: int, slots: dict[int, int], at: float) -> Sent:
        bits = sum(slots.values())
        return Sent(src, dst, bits, 0.0, at, at + ACCESS_S + bits / 1e6, True, slots)

    messages = (
        sent(0, 1, {0: 1000, 2: 2000, 3: 3000}, 0.0),
        sent(1, 0, {1: 4000, 2: 2000, 3: 3000}, 0.0),
        sent(2, 3, {0: 1000, 1: 4000, 2: 2000}, 0.0),
        sent(3, 2, {0: 1000, 1: 4000, 3: 3000}, 0.0),
    )
    record = RoundRecord(0.0, dict.fromkeys(range(4), 0.0), messages)
    cost = replay_cost([record], {1}, slot_s=1.0, access_delay_s=ACCESS_S, packet_bits=PACKET_BITS)
    assert cost.bits == 2000 + 3000
    assert cost.seconds == pytest.approx(ACCESS_S + 3000 / 1e6)
