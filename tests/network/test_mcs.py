"""The 802.11ax MCS table, the packet error curve and the MCS choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosim.network import mcs

MCS = np.arange(mcs.NUM_MCS)

# Published 802.11ax single-stream PHY rates (Mbps, 0.8 us GI), per channel width.
HE_RATES_MBPS = {
    20e6: [8.6, 17.2, 25.8, 34.4, 51.6, 68.8, 77.4, 86.0, 103.2, 114.7, 129.0, 143.4],
    40e6: [17.2, 34.4, 51.6, 68.8, 103.2, 137.6, 154.9, 172.1, 206.5, 229.4, 258.1, 286.8],
    80e6: [36.0, 72.1, 108.1, 144.1, 216.2, 288.2, 324.3, 360.3, 432.4, 480.4, 540.4, 600.5],
    160e6: [72.1, 144.1, 216.2, 288.2, 432.4, 576.5, 648.5, 720.6, 864.7, 960.8, 1080.9, 1201.0],
}
THRESHOLDS_DB = [2, 5, 9, 11, 15, 18, 20, 25, 29, 31, 34, 37]


@pytest.mark.parametrize("bandwidth_hz", sorted(HE_RATES_MBPS))
def test_phy_rates_match_the_standard(bandwidth_hz: float) -> None:
    rates_mbps = mcs.phy_rate_bps(MCS, bandwidth_hz) / 1e6
    np.testing.assert_allclose(rates_mbps, HE_RATES_MBPS[bandwidth_hz], atol=0.051)


def test_phy_rate_from_first_principles() -> None:
    # MCS 11: 1024-QAM (10 bits) at rate 5/6 on 234 subcarriers, one symbol per 13.6 us.
    assert mcs.phy_rate_bps(11, 20e6) == pytest.approx(234 * 10 * 5 / 6 / 13.6e-6, rel=1e-12)
    assert mcs.phy_rate_bps(-1, 20e6) == 0.0


def test_unknown_bandwidth_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"allowed: 20 MHz.*40 MHz.*80 MHz.*160 MHz"):
        mcs.phy_rate_bps(0, 30e6)


def test_out_of_range_mcs_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"MCS 12 out of range"):
        mcs.per(10.0, 12)


def test_thresholds_are_the_documented_table() -> None:
    assert [m.min_snr_db for m in mcs.MCS_TABLE] == THRESHOLDS_DB


def test_per_is_reference_at_each_threshold() -> None:
    np.testing.assert_allclose(mcs.per(THRESHOLDS_DB, MCS, 12000), 0.1, rtol=1e-12)


def test_per_closed_form() -> None:
    # One dB above MCS 4's threshold, 1500-bit packets.
    p_ref = 1.0 / (1.0 + 9.0 * math.exp(1.0 / mcs.WATERFALL_WIDTH_DB))
    expected = 1.0 - (1.0 - p_ref) ** (1500 / 12000)
    assert mcs.per(16.0, 4, 1500) == pytest.approx(expected, rel=1e-12)
    assert mcs.per(-np.inf, 4) == 1.0
    assert mcs.per(np.inf, 4) == 0.0


def test_per_is_monotone_in_snr_and_packet_length() -> None:
    snr_db = np.arange(-20.0, 60.0, 0.01)
    curves = mcs.per(snr_db[None, :], MCS[:, None], 12000)
    assert np.all(np.diff(curves, axis=1) <= 0.0)
    # Strictly decreasing across each waterfall (5 dB either side of the threshold).
    for m, thr in enumerate(THRESHOLDS_DB):
        window = curves[m, np.abs(snr_db - thr) <= 5.0]
        assert np.all(np.diff(window) < 0.0)
    bits = np.unique(np.logspace(0, 7, 200).astype(int))
    for m, thr in enumerate(THRESHOLDS_DB):
        by_length = mcs.per(thr + 0.7, m, bits)
        assert np.all(np.diff(by_length) > 0.0)


def test_required_snr_meets_the_target() -> None:
    for target in (0.01, 0.1, 0.5):
        for bits in (500, 12000, 80000):
            snr_db = mcs.required_snr_db(MCS, target, bits)
            np.testing.assert_allclose(mcs.per(snr_db, MCS, bits), target, rtol=1e-9)
    np.testing.assert_allclose(mcs.required_snr_db(MCS, 0.1, 12000), THRESHOLDS_DB, atol=1e-12)


@pytest.mark.parametrize("per_target", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("packet_bits", [1000, 12000, 100000])
def test_best_mcs_equals_brute_force(per_target: float, packet_bits: int) -> None:
    snr_db = np.random.default_rng(7).uniform(-5.0, 45.0, 2000)
    expected = np.full(snr_db.shape, -1)
    for m in range(mcs.NUM_MCS):  # brute force: every MCS, keep the highest that passes
        expected[mcs.per(snr_db, m, packet_bits) <= per_target] = m
    np.testing.assert_array_equal(mcs.best_mcs(snr_db, per_target, packet_bits), expected)


def test_best_mcs_at_hand_picked_snrs() -> None:
    snr_db = np.array([[-np.inf, 1.9, 2.1], [12.3, 36.9, 37.1]])
    np.testing.assert_array_equal(mcs.best_mcs(snr_db, 0.1, 12000), [[-1, -1, 0], [3, 10, 11]])
