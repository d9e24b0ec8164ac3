"""The builtin network backend: link budget, randomness, mobility and transfers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from cosim.network import LinkState, Message, NetworkBackend
from cosim.network.builtin import BuiltinBackend
from cosim.scenario import (
    Area,
    BuiltinNetwork,
    Placement,
    Radio,
    RandomWaypointMobility,
    StaticMobility,
)

C_MPS = 299_792_458.0


def make(
    *,
    positions: list[tuple[float, float]] | None = None,
    area_m: float = 200.0,
    seed: int = 0,
    devices: int | None = None,
    mobility: Any = None,
    placement: str = "explicit",
    **radio: Any,
) -> BuiltinBackend:
    """A backend; deterministic channel (no shadowing, no fading) unless radio overrides it."""
    radio = {"shadowing_sigma_db": 0.0, "fading": "none", **radio}
    spec = BuiltinNetwork(
        area=Area(width_m=area_m, height_m=area_m),
        placement=Placement(kind=placement, positions_m=tuple(positions) if positions else None),
        mobility=mobility or StaticMobility(),
        radio=Radio(**radio),
    )
    count = devices if devices is not None else len(positions or ())
    return BuiltinBackend(spec, range(count), seed)


def test_is_a_network_backend() -> None:
    assert isinstance(make(positions=[(0, 0), (1, 1)]), NetworkBackend)


# --------------------------------------------------------------------------- link budget


def test_hand_computed_link_budget() -> None:
    net = make(positions=[(10.0, 100.0), (40.0, 140.0)])  # 30 m across, 40 m up: 50 m apart
    state = net.links(0.0, [0, 1])

    # Defaults: 5.18 GHz, 20 MHz, 16 dBm, 0 dBi, NF 7 dB, n = 3, d0 = 1 m.
    fspl_1m_db = 20 * math.log10(4 * math.pi * 1.0 * 5.18e9 / C_MPS)  # 46.73 dB
    path_loss_db = fspl_1m_db + 10 * 3.0 * math.log10(50.0 / 1.0)  # + 50.97 = 97.70 dB
    noise_dbm = -174 + 10 * math.log10(20e6) + 7.0  # -174 + 73.01 + 7 = -93.99 dBm
    snr_db = 16.0 + 2 * 0.0 - path_loss_db - 0.0 + 10 * math.log10(1.0) - noise_dbm  # 12.29 dB
    assert snr_db == pytest.approx(12.29, abs=0.01)
    # Thresholds 2, 5, 9, 11, 15 dB: 11 <= 12.29 < 15, so MCS 3 (16-QAM 1/2) at PER target 0.1.
    rate_bps = 234 * 4 * (1 / 2) / 13.6e-6  # 34.41 Mbps
    p_ref = 1 / (1 + 9 * math.exp((snr_db - 11.0) / 0.5))  # 12000-bit packets: the reference length
    goodput_bps = rate_bps * 0.7 * (1 - p_ref)

    assert state.distance_m[0, 1] == pytest.approx(50.0, rel=1e-12)
    assert state.snr_db[0, 1] == pytest.approx(snr_db, abs=1e-9)
    assert state.mcs[0, 1] == 3
    assert state.rate_bps[0, 1] == pytest.approx(rate_bps, rel=1e-12)
    assert state.loss[0, 1] == pytest.approx(p_ref, rel=1e-9)
    assert state.goodput_bps[0, 1] == pytest.approx(goodput_bps, rel=1e-9)
    # Symmetric, and nothing on the diagonal.
    for name in ("distance_m", "snr_db", "mcs", "rate_bps", "loss", "goodput_bps"):
        matrix = getattr(state, name)
        np.testing.assert_array_equal(matrix, matrix.T)
    assert np.all(np.diag(state.snr_db) == -np.inf)
    np.testing.assert_array_equal(np.diag(state.mcs), [-1, -1])
    np.testing.assert_array_equal(np.diag(state.rate_bps), [0.0, 0.0])
    np.testing.assert_array_equal(np.diag(state.loss), [1.0, 1.0])
    np.testing.assert_array_equal(state.adjacency(), [[False, True], [True, False]])


def test_link_state_is_read_only_and_indexed_by_device() -> None:
    state = make(positions=[(0, 0), (10, 0), (20, 0)]).links(0.0, [2, 0])
    assert state.devices == (2, 0)
    assert state.index(0) == 1
    assert state.distance_m[state.index(2), state.index(0)] == pytest.approx(20.0)
    with pytest.raises(ValueError, match=r"device 1 is not in this link state"):
        state.index(1)
    with pytest.raises(ValueError, match="read-only"):
        state.rate_bps[0, 1] = 1.0


def max_link_distance_m(min_snr_db: float) -> float:
    """Distance at which the default radio's SNR (no shadowing, no fading) equals min_snr_db."""
    fspl_1m_db = 20 * math.log10(4 * math.pi * 5.18e9 / C_MPS)
    noise_dbm = -174 + 10 * math.log10(20e6) + 7.0
    return 10 ** ((16.0 - fspl_1m_db - noise_dbm - min_snr_db) / 30.0)  # about 110 m for 2 dB


@pytest.mark.parametrize(("min_rate_bps", "min_snr_db"), [(6e6, 2.0), (30e6, 11.0), (60e6, 18.0)])
def test_rate_falls_with_distance_and_links_end_at_the_range(min_rate_bps: float, min_snr_db: float) -> None:
    # The slowest MCS at or above min_rate_bps is 0 (8.6 Mbps), 3 (34.4) or 5 (68.8): the range is
    # where the SNR falls to that MCS's threshold.
    d_max_m = max_link_distance_m(min_snr_db)
    distances_m = np.concatenate([np.linspace(0.5, 300.0, 300), d_max_m * np.array([0.999, 1.001])])
    positions = [(0.0, 0.0)] + [(float(d), 0.0) for d in distances_m]
    state = make(positions=positions, area_m=400.0, min_rate_bps=min_rate_bps).links(
        0.0, range(len(positions))
    )
    order = np.argsort(distances_m)
    rate_bps = state.rate_bps[0, 1:][order]
    assert np.all(np.diff(rate_bps) <= 0.0)
    assert rate_bps[0] == pytest.approx(143.4e6, rel=1e-3)  # MCS 11 close by
    linked = state.adjacency()[0, 1:]
    np.testing.assert_array_equal(linked, distances_m < d_max_m)
    assert np.all(state.rate_bps[0, 1:][linked] >= min_rate_bps)
    np.testing.assert_array_equal(state.mcs[0, 1:][~linked], -1)
    np.testing.assert_array_equal(state.loss[0, 1:][~linked], 1.0)
    np.testing.assert_array_equal(state.goodput_bps[0, 1:][~linked], 0.0)


def test_grid_placement_fills_the_area() -> None:
    net = make(placement="grid", devices=9, area_m=300.0)
    expected = [(x, y) for y in (50.0, 150.0, 250.0) for x in (50.0, 150.0, 250.0)]
    np.testing.assert_allclose(net.positions(0.0, range(9)), expected)


def test_explicit_placement_outside_the_area_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"devices \[1\] lie outside the area"):
        make(positions=[(0.0, 0.0), (250.0, 10.0)])


def test_unknown_or_repeated_devices_are_rejected() -> None:
    net = make(positions=[(0, 0), (1, 1)])
    with pytest.raises(ValueError, match=r"unknown device\(s\) \[5\]"):
        net.links(0.0, [0, 5])
    with pytest.raises(ValueError, match="distinct"):
        net.links(0.0, [1, 1])
    with pytest.raises(ValueError, match="time_s"):
        net.positions(-1.0, [0])


# --------------------------------------------------------------------------- randomness


def random_net(seed: int = 3, devices: int = 10) -> BuiltinBackend:
    return make(
        placement="uniform",
        devices=devices,
        seed=seed,
        mobility=RandomWaypointMobility(kind="random_waypoint", speed_min_mps=1.0, speed_max_mps=5.0),
        shadowing_sigma_db=6.0,
        fading="rayleigh",
    )


def assert_same(a: LinkState, b: LinkState) -> None:
    assert a.devices == b.devices
    for name in ("distance_m", "snr_db", "mcs", "rate_bps", "loss", "goodput_bps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_same_seed_same_links_whatever_the_query_order() -> None:
    times_s = [0.0, 7.5, 60.0, 301.25]
    first, second = random_net(), random_net()
    forward = {t: first.links(t, range(10)) for t in times_s}
    backward = {t: second.links(t, range(10)) for t in reversed(times_s)}
    for t in times_s:
        assert_same(forward[t], backward[t])
    # A subset, in another order, sees the same links as the full query.
    fresh = random_net()
    subset = [7, 2, 5]
    state = fresh.links(60.0, subset)
    full = forward[60.0]
    rows = [full.index(d) for d in subset]
    np.testing.assert_array_equal(state.snr_db, full.snr_db[np.ix_(rows, rows)])


def test_added_devices_leave_existing_links_unchanged() -> None:
    small, large = random_net(devices=5), random_net(devices=12)
    for t in (0.0, 42.0):
        assert_same(small.links(t, range(5)), large.links(t, range(5)))


def test_different_seed_different_shadowing() -> None:
    positions = [(20.0 * k, 10.0) for k in range(6)]
    a = make(positions=positions, seed=1, shadowing_sigma_db=4.0).links(0.0, range(6))
    b = make(positions=positions, seed=2, shadowing_sigma_db=4.0).links(0.0, range(6))
    off = ~np.eye(6, dtype=bool)
    assert np.all(a.snr_db[off] != b.snr_db[off])
    assert_same(a, make(positions=positions, seed=1, shadowing_sigma_db=4.0).links(0.0, range(6)))


def test_shadowing_and_fading_statistics() -> None:
    n, sigma_db = 150, 4.0
    positions = [(float(k), 0.0) for k in range(n)]
    upper = np.triu_indices(n, 1)  # 11175 pairs

    def pair_snr_db(net: BuiltinBackend, time_s: float = 0.0) -> np.ndarray:
        return net.links(time_s, range(n)).snr_db[upper]

    reference_db = pair_snr_db(make(positions=positions))
    shadowing_db = reference_db - pair_snr_db(make(positions=positions, shadowing_sigma_db=sigma_db))
    assert abs(shadowing_db.mean()) < 0.15
    assert shadowing_db.std() == pytest.approx(sigma_db, rel=0.03)
    faded = make(positions=positions, fading="rayleigh")
    gain_0 = 10 ** ((pair_snr_db(faded, 0.0) - reference_db) / 10)
    gain_1 = 10 ** ((pair_snr_db(faded, 1.0) - reference_db) / 10)
    assert gain_0.mean() == pytest.approx(1.0, abs=0.05)  # Exp(1)
    assert np.mean(gain_0 < math.log(2)) == pytest.approx(0.5, abs=0.02)  # its median is ln 2
    assert abs(np.corrcoef(gain_0, gain_1)[0, 1]) < 0.05  # a new block at a new time
    np.testing.assert_array_equal(pair_snr_db(faded, 0.0), pair_snr_db(faded, 0.0))


# --------------------------------------------------------------------------- mobility


def test_random_waypoint_stays_inside_and_respects_the_speed_limit() -> None:
    net = random_net(devices=6)
    dt_s = 0.5
    track = np.array([net.positions(t, range(6)) for t in np.arange(0.0, 600.0, dt_s)])
    assert track.min() >= 0.0
    assert track.max() <= 200.0
    step_m = np.linalg.norm(np.diff(track, axis=0), axis=2)
    assert step_m.max() <= 5.0 * dt_s + 1e-9
    assert np.all(np.linalg.norm(track[-1] - track[0], axis=1) > 0.0)  # everyone moved
    assert np.mean(step_m == 0.0) > 0.0  # and paused somewhere
    np.testing.assert_array_equal(track[0], random_net(devices=6).positions(0.0, range(6)))
    # Pure in time: a fresh backend asked only about t = 599.5 agrees with the walk.
    np.testing.assert_array_equal(random_net(devices=6).positions(599.5, range(6)), track[-1])


def test_static_devices_never_move() -> None:
    net = make(placement="uniform", devices=5, seed=4)
    start = net.positions(0.0, range(5))
    for t in (0.1, 10.0, 1e5):
        np.testing.assert_array_equal(net.positions(t, range(5)), start)


# --------------------------------------------------------------------------- transfers


TRANSFER_POSITIONS = [(0.0, 0.0), (30.0, 0.0), (0.0, 60.0), (190.0, 190.0)]  # device 3 is out of range


def test_transfers_serialise_per_sender() -> None:
    net = make(positions=TRANSFER_POSITIONS)
    state = net.links(10.0, range(4))
    g = state.goodput_bps
    access_s = 1e-3
    messages = [
        Message(src=0, dst=1, bits=2_000_000, start_s=10.0),
        Message(src=0, dst=2, bits=1_000_000, start_s=10.0),  # waits for the first
        Message(src=1, dst=0, bits=1_000_000, start_s=10.01),  # another sender: no wait
        Message(src=0, dst=3, bits=1_000_000, start_s=10.0),  # no link
        Message(src=0, dst=1, bits=500_000, start_s=20.0),  # sender idle by then
    ]
    results = net.transfer(10.0, messages, deadline_s=30.0)

    finish_0 = 10.0 + access_s + 2_000_000 / g[0, 1]
    finish_1 = finish_0 + access_s + 1_000_000 / g[0, 2]
    finish_2 = 10.01 + access_s + 1_000_000 / g[1, 0]
    finish_4 = 20.0 + access_s + 500_000 / g[0, 1]
    assert [r.start_s for r in results] == pytest.approx([10.0, finish_0, 10.01, finish_1, 20.0])
    assert [r.finish_s for r in results] == pytest.approx([finish_0, finish_1, finish_2, finish_1, finish_4])
    assert [r.delivered for r in results] == [True, True, True, False, True]
    assert [r.delivered_bits for r in results] == [2_000_000, 1_000_000, 1_000_000, 0, 500_000]
    assert [(r.src, r.dst, r.bits) for r in results] == [(m.src, m.dst, m.bits) for m in messages]
    assert results[0].rate_bps == state.rate_bps[0, 1]
    assert results[0].loss == state.loss[0, 1]
    assert results[3].rate_bps == 0.0
    assert results[3].loss == 1.0


def test_a_transmission_on_the_air_holds_up_its_sender_alone() -> None:
    net = make(positions=TRANSFER_POSITIONS)
    (pull,) = net.transfer(10.0, [Message(0, 1, 2_000_000, 10.0)], deadline_s=30.0)
    messages = [
        Message(0, 2, 1_000_000, 10.0),
        Message(1, 0, 1_000_000, 10.0),
        Message(2, 0, 1_000_000, 10.0),
    ]
    # The same messages queued behind the pull in one call: the reference.
    together = net.transfer(10.0, [Message(0, 1, 2_000_000, 10.0), *messages], deadline_s=30.0)
    after = net.transfer(10.0, messages, deadline_s=30.0, on_air=[pull])
    assert after == together[1:]
    assert after[0].start_s == pull.finish_s > 10.0  # its sender's radio was busy
    assert after[1].start_s == after[2].start_s == 10.0  # builtin: no shared medium
    # A transmission over by then holds up nobody.
    assert net.transfer(20.0, [Message(0, 2, 1_000_000, 20.0)], 30.0, on_air=[pull])[0].start_s == 20.0


def test_deadline_cuts_late_transfers_to_whole_packets() -> None:
    net = make(positions=TRANSFER_POSITIONS, packet_bits=8000)
    g = net.links(0.0, range(3)).goodput_bps
    messages = [Message(0, 1, 3_000_000, 0.0), Message(0, 2, 3_000_000, 0.0), Message(1, 2, 100, 0.0)]
    finish_0 = 1e-3 + 3_000_000 / g[0, 1]
    deadline_s = finish_0 + 1e-3 + 0.4 * 3_000_000 / g[0, 2]  # 40 % of the second message is through
    results = net.transfer(0.0, messages, deadline_s)

    assert results[0].delivered
    assert results[0].finish_s == pytest.approx(finish_0)
    assert not results[1].delivered
    assert results[1].finish_s == pytest.approx(finish_0 + 1e-3 + 3_000_000 / g[0, 2])
    sent_bits = (deadline_s - finish_0 - 1e-3) * g[0, 2]  # 1.2 Mbit
    assert results[1].delivered_bits == math.floor(sent_bits / 8000) * 8000 == 1_200_000
    assert results[2].delivered_bits == 100

    # A deadline before the data starts lets nothing through.
    late = net.transfer(0.0, [Message(0, 1, 3_000_000, 5.0)], deadline_s=4.0)[0]
    assert (late.delivered, late.delivered_bits, late.start_s) == (False, 0, 5.0)


def test_transfer_edge_cases() -> None:
    net = make(positions=TRANSFER_POSITIONS)
    assert net.transfer(0.0, [], 1.0) == []
    with pytest.raises(ValueError, match="to itself"):
        net.transfer(0.0, [Message(1, 1, 10, 0.0)], 1.0)
    (no_link,) = net.transfer(0.0, [Message(3, 0, 10, 0.5)], 1.0)
    assert (no_link.delivered, no_link.delivered_bits, no_link.start_s, no_link.finish_s) == (
        False,
        0,
        0.5,
        0.5,
    )
