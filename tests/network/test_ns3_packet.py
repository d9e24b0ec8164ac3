"""The ns-3 backend's packet fidelity (``network.fidelity: packet``) against its analytic fidelity.

Every test is marked ``ns3`` and takes the session fixture ``ns`` (one ns-3 import per
session).  Measured tolerances (802.11ax, 20 MHz, 5 GHz, log-distance exponent 3, no
fading, TCP 1448-byte segments; docs/ns3.md, "Packet fidelity"):

- one link at MCS 11 (both fidelities at the top MCS), 4 Mbit: analytic goodput
  (``mac_efficiency`` 0.7, the default) / packet goodput = 0.95; packet-level MAC
  efficiency (goodput / PHY rate) 0.74.  Tolerance 10 %.
- 8 and 16 devices within 30 m (all in carrier-sense range), each sending 4 Mbit to the
  next: round duration (last finish) packet / analytic = 1.21 and 1.21 for the placement
  and seed used here; over 3 placements x 2 seeds 1.09-1.26 (8 devices) and 1.21-1.51
  (16), except when a TCP SYN is lost in the collisions of 16 simultaneous starts (3 s
  connection timeout: 3.8) or a flow stalls (see docs/ns3.md).  Tolerance [1.0, 1.6]:
  the analytic model serialises contenders ideally (no collisions, backoff or TCP ACK
  airtime) and is optimistic by 10-50 %.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cosim.network import create_network
from cosim.network.base import Message, TransferResult
from cosim.network.ns3.packet import PacketBackend
from cosim.scenario import Ns3Network

UPDATE_BITS = 4_000_000


def _spec(positions: list[list[float]], side_m: float, **spec: Any) -> Ns3Network:
    placement = {"kind": "explicit", "positions_m": positions}
    return Ns3Network(area={"width_m": side_m, "height_m": side_m}, placement=placement, **spec)


def _pair(distance_m: float, **spec: Any) -> Ns3Network:
    return _spec([[0.0, 5.0], [distance_m, 5.0]], distance_m + 10.0, **spec)


def _cluster(n: int) -> Ns3Network:
    positions = np.random.default_rng(0).uniform(0.0, 30.0, (n, 2))
    return _spec([[float(x), float(y)] for x, y in positions], 30.0)


def _round(spec: Ns3Network, n: int, seed: int = 1) -> list[TransferResult]:
    net = create_network(spec, range(n), seed=seed)
    messages = [Message(i, (i + 1) % n, UPDATE_BITS, 0.0) for i in range(n)]
    return net.transfer(0.0, messages, 30.0)


@pytest.mark.ns3
def test_packet_fidelity_builds_the_packet_backend(ns: Any) -> None:
    net = create_network(_pair(5.0, fidelity="packet"), [0, 1], seed=0)
    assert isinstance(net, PacketBackend)
    analytic = create_network(_pair(5.0), [0, 1], seed=0)
    assert not isinstance(analytic, PacketBackend)
    # links() is the analytic computation in both fidelities.
    np.testing.assert_array_equal(net.links(0.0, [0, 1]).rate_bps, analytic.links(0.0, [0, 1]).rate_bps)


@pytest.mark.ns3
def test_single_link_analytic_goodput_within_10_percent_of_packet_goodput(ns: Any) -> None:
    message = [Message(0, 1, UPDATE_BITS, 0.0)]
    (analytic,) = create_network(_pair(5.0), [0, 1], seed=1).transfer(0.0, message, 10.0)
    (packet,) = create_network(_pair(5.0, fidelity="packet"), [0, 1], seed=1).transfer(0.0, message, 10.0)
    assert analytic.delivered and packet.delivered
    assert packet.rate_bps == analytic.rate_bps  # MCS 11, 143.4 Mbps
    packet_goodput = UPDATE_BITS / (packet.finish_s - packet.start_s)
    assert packet.goodput_bps == pytest.approx(packet_goodput)
    ratio = analytic.goodput_bps / packet_goodput
    assert 0.9 <= ratio <= 1.1, ratio  # measured 0.95
    assert 0.65 <= packet_goodput / packet.rate_bps <= 0.8  # packet-level MAC efficiency, measured 0.74


@pytest.mark.ns3
@pytest.mark.parametrize("n", [8, 16])
def test_contention_round_duration_against_the_analytic_shared_medium(ns: Any, n: int) -> None:
    analytic = _round(_cluster(n), n)
    packet = _round(_cluster(n).model_copy(update={"fidelity": "packet"}), n)
    assert all(r.delivered for r in analytic) and all(r.delivered for r in packet)
    assert all(r.delivered_bits == UPDATE_BITS for r in packet)
    ratio = max(r.finish_s for r in packet) / max(r.finish_s for r in analytic)
    assert 1.0 <= ratio <= 1.6, ratio  # measured 1.21 (8 devices) and 1.21 (16)
    # Contention is real: the packet round takes far longer than the slowest link alone would.
    slowest_alone = max(UPDATE_BITS / r.goodput_bps for r in analytic)
    assert max(r.finish_s for r in packet) > 3 * slowest_alone


@pytest.mark.ns3
def test_same_scenario_and_seed_give_identical_packet_results(ns: Any) -> None:
    spec = _cluster(8).model_copy(update={"fidelity": "packet", "fading": {"model": "nakagami", "m": 1.0}})
    first = _round(spec, 8, seed=5)
    create_network(_pair(5.0, fidelity="packet"), [0, 1], seed=2).transfer(
        0.0, [Message(0, 1, 80_000, 0.0)], 1.0
    )  # another simulation in between
    second = _round(spec, 8, seed=5)
    assert first == second


@pytest.mark.ns3
def test_an_update_past_the_deadline_is_undelivered_with_partial_bits(ns: Any) -> None:
    net = create_network(_pair(5.0, fidelity="packet"), [0, 1], seed=1)
    (cut,) = net.transfer(0.0, [Message(0, 1, UPDATE_BITS, 0.0)], 0.01)
    assert not cut.delivered
    assert 0 < cut.delivered_bits < UPDATE_BITS
    assert cut.finish_s == float("inf") and cut.goodput_bps == 0.0
    # The aborted update leaves the channel clean: the next round is as fast as on a fresh network.
    (later,) = net.transfer(1.0, [Message(0, 1, UPDATE_BITS, 1.0)], 2.0)
    fresh = create_network(_pair(5.0, fidelity="packet"), [0, 1], seed=1)
    (alone,) = fresh.transfer(0.0, [Message(0, 1, UPDATE_BITS, 0.0)], 1.0)
    assert later.delivered
    # Not slowed by leftovers; a little faster (measured 0.034 vs 0.038 s): the block-ack
    # agreement and the rate manager's SNR estimate of the first round carry over.
    later_s, alone_s = later.finish_s - later.start_s, alone.finish_s - alone.start_s
    assert 0.8 * alone_s <= later_s <= 1.02 * alone_s


@pytest.mark.ns3
def test_out_of_range_and_empty_messages(ns: Any) -> None:
    spec = _spec([[0.0, 5.0], [5.0, 5.0], [2000.0, 5.0]], 2001.0, fidelity="packet")
    net = create_network(spec, [0, 1, 2], seed=1)
    far, empty = net.transfer(0.0, [Message(0, 2, UPDATE_BITS, 0.0), Message(0, 1, 0, 0.1)], 0.5)
    assert not far.delivered and far.delivered_bits == 0 and far.rate_bps == 0.0
    assert empty.delivered and empty.finish_s == empty.start_s == pytest.approx(0.1)


# --------------------------------------------------------------------------- routing

HOP_M = 70.0
"""Spacing of the 3-device line: one hop carries MCS 2 (25.8 Mbps analytic), two hops nothing."""


def _line(**spec: Any) -> Ns3Network:
    return _spec([[0.0, 5.0], [HOP_M, 5.0], [2 * HOP_M, 5.0]], 2 * HOP_M + 10.0, **spec)


def _alone(message: Message, routing: str, seed: int = 1) -> TransferResult:
    """``message`` sent alone on a fresh 3-device line, from its start to 30 s later."""
    net = create_network(_line(fidelity="packet", routing=routing), range(3), seed=seed)
    (result,) = net.transfer(message.start_s, [message], message.start_s + 30.0)
    return result


@pytest.mark.ns3
@pytest.mark.parametrize("routing", ["olsr", "aodv"])
def test_routing_relays_a_message_over_two_hops(ns: Any, routing: str) -> None:
    links = create_network(_line(), range(3), seed=1).links(0.0, [0, 1, 2])
    assert links.rate_bps[0, 1] == links.rate_bps[1, 2] == 25_808_824.0
    assert links.rate_bps[0, 2] == 0.0  # the ends are out of each other's range

    # t = 10 s: OLSR has exchanged HELLOs (2 s) and TCs (5 s); AODV discovers on demand.
    start_s = 10.0
    unrouted = _alone(Message(0, 2, UPDATE_BITS, start_s), "none")
    assert not unrouted.delivered and unrouted.delivered_bits == 0
    relayed = _alone(Message(0, 2, UPDATE_BITS, start_s), routing)
    assert relayed.delivered and relayed.delivered_bits == UPDATE_BITS
    assert relayed.rate_bps == 0.0  # the analytic direct link that does not exist

    relayed_s = relayed.finish_s - relayed.start_s
    first_s, second_s = (
        (r.finish_s - r.start_s)
        for r in (
            _alone(Message(0, 1, UPDATE_BITS, start_s), routing),
            _alone(Message(1, 2, UPDATE_BITS, start_s), routing),
        )
    )
    # Store and forward over two hops that share the air: at least the two hops one after
    # the other, plus the TCP ACKs' way back and the relay's contention with the source.
    # Measured (seeds 1, 2): 1.15-1.19 (OLSR) and 1.15-1.23 (AODV) times the two hops' sum,
    # 2.2-2.5 times the first hop alone (0.45-0.48 s for 4 Mbit).
    assert 1.0 <= relayed_s / (first_s + second_s) <= 1.5, (relayed_s, first_s, second_s)
    assert 1.8 <= relayed_s / first_s <= 3.0


@pytest.mark.ns3
def test_olsr_needs_its_first_hellos_and_tcs_before_it_relays(ns: Any) -> None:
    # From t = 0 OLSR has no route to the far end yet; TCP retries its SYN (1 s, then 2 s,
    # 4 s, ...) until the route exists.  Measured: 9.4 s for what takes 0.46 s at t = 10 s.
    early = _alone(Message(0, 2, UPDATE_BITS, 0.0), "olsr")
    assert early.delivered
    assert early.finish_s - early.start_s > 2.0


@pytest.mark.ns3
@pytest.mark.parametrize("routing", ["olsr", "aodv"])
def test_same_seed_gives_identical_routed_results(ns: Any, routing: str) -> None:
    messages = [
        Message(0, 2, UPDATE_BITS, 10.0),
        Message(2, 0, UPDATE_BITS, 10.0),
        Message(1, 0, UPDATE_BITS, 10.2),
    ]

    def round_() -> list[TransferResult]:
        net = create_network(_line(fidelity="packet", routing=routing), range(3), seed=4)
        return net.transfer(10.0, messages, 40.0)

    first = round_()
    _alone(Message(0, 1, 80_000, 0.0), "none", seed=2)  # another simulation in between
    second = round_()
    assert first == second
    assert all(r.delivered for r in first)


@pytest.mark.ns3
@pytest.mark.parametrize("routing", ["olsr", "aodv"])
def test_routes_follow_the_devices_when_the_relay_moves_away(ns: Any, routing: str) -> None:
    # Devices 0, 1, 2 on the line; device 3 far away (400 m).  After the first transfer,
    # the relay (1) and device 3 swap places: the old route is gone and a new one through
    # device 3 must be found.
    positions = [[0.0, 5.0], [HOP_M, 5.0], [2 * HOP_M, 5.0], [HOP_M, 400.0]]
    spec = _spec(positions, 410.0, fidelity="packet", routing=routing)
    net = create_network(spec, range(4), seed=1)
    (before,) = net.transfer(10.0, [Message(0, 2, UPDATE_BITS, 10.0)], 20.0)
    # ns-3 numbers the Nodes of the newest simulation 0, 1, ... in device order.
    for rank, (x, y) in ((1, (HOP_M, 400.0)), (3, (HOP_M, 5.0))):
        mobility = ns.NodeList.GetNode(rank).GetObject[ns.MobilityModel]()
        mobility.SetPosition(ns.Vector(x, y, spec.height_m))
    (after,) = net.transfer(20.0, [Message(0, 2, UPDATE_BITS, 20.0)], 40.0)
    rates = net.links(20.0, [0, 1, 2, 3]).rate_bps
    assert rates[0, 1] == rates[1, 2] == 0.0 and rates[0, 3] == rates[3, 2] > 0.0
    assert before.delivered and after.delivered
    # The protocol had the 9.5 s between the two transfers to notice (measured: both take
    # 0.44-0.48 s, the time of a two-hop relay).
    assert after.finish_s - after.start_s <= 1.3 * (before.finish_s - before.start_s)


@pytest.mark.ns3
@pytest.mark.parametrize("routing", ["olsr", "aodv"])
def test_relayed_transfers_go_on_after_a_round_cut_at_its_deadline(ns: Any, routing: str) -> None:
    # Regression: flushing the Wi-Fi MAC queues at the deadline broke the Block Ack agreement
    # on the relay's links and no relayed message got through again.
    net = create_network(_line(fidelity="packet", routing=routing), range(3), seed=1)
    (cut,) = net.transfer(10.0, [Message(0, 2, 4 * UPDATE_BITS, 10.0)], 10.4)
    assert not cut.delivered and 0 < cut.delivered_bits < 4 * UPDATE_BITS
    later = [net.transfer(t, [Message(0, 2, UPDATE_BITS, t)], t + 20.0)[0] for t in (11.0, 31.0)]
    fresh = _alone(Message(0, 2, UPDATE_BITS, 10.0), routing)
    fresh_s = fresh.finish_s - fresh.start_s
    for result in later:
        assert result.delivered
        assert result.finish_s - result.start_s <= 1.3 * fresh_s  # measured 0.44-0.47 s vs 0.45-0.48


@pytest.mark.ns3
def test_a_pull_on_the_air_takes_its_share_of_the_air_again_after_a_rebuild(ns: Any) -> None:
    # 0 -> 1 (the pull, sent alone first) and 2 -> 3: 10 m links 20 m apart, one medium.
    spec = _spec([[0.0, 5.0], [10.0, 5.0], [20.0, 5.0], [30.0, 5.0]], 30.0, fidelity="packet")
    net = create_network(spec, range(4), seed=1)
    (pull,) = net.transfer(0.0, [Message(0, 1, UPDATE_BITS, 0.0)], 30.0)
    assert pull.delivered
    # The round's message starts before the clock (at the pull's end): the simulation is
    # rebuilt from t = 0, and the pull is sent again beside it.
    (shared,) = net.transfer(0.0, [Message(2, 3, UPDATE_BITS, 0.0)], 30.0, on_air=[pull])
    # The reference: both in one call of a fresh simulation.
    fresh = create_network(spec, range(4), seed=1)
    together = fresh.transfer(0.0, [Message(0, 1, UPDATE_BITS, 0.0), Message(2, 3, UPDATE_BITS, 0.0)], 30.0)
    assert shared == together[1]
    (alone,) = create_network(spec, range(4), seed=1).transfer(0.0, [Message(2, 3, UPDATE_BITS, 0.0)], 30.0)
    assert shared.finish_s > 1.1 * alone.finish_s  # measured 0.057 s against 0.047 s alone
    # A pull that the running simulation already carried is not sent again.
    t = pull.finish_s + 1.0
    (later,) = net.transfer(t, [Message(2, 3, UPDATE_BITS, t)], t + 30.0, on_air=[pull])
    assert later.finish_s - later.start_s == pytest.approx(alone.finish_s - alone.start_s, rel=0.02)
