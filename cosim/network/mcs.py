"""802.11ax (HE) single-spatial-stream MCS table, PHY rates and a packet error curve.

PHY rate, from first principles::

    rate_bps = data_subcarriers(bandwidth) * bits_per_subcarrier * coding_rate / OFDM_SYMBOL_S

with 234, 468, 980 and 1960 data subcarriers at 20, 40, 80 and 160 MHz and a 13.6 us
OFDM symbol (12.8 us + 0.8 us guard interval), so MCS 0 at 20 MHz is 8.6 Mbps and
MCS 11 at 20 MHz is 143.4 Mbps.

Packet error rate.  Each MCS has a threshold ``min_snr_db`` (the SNR at which a
``REFERENCE_PACKET_BITS`` = 12000-bit packet is lost with probability
``REFERENCE_PER`` = 0.1).  At that reference length the error curve is a logistic
waterfall in SNR::

    p_ref(snr, mcs) = 1 / (1 + 9 * exp((snr - min_snr_db[mcs]) / WATERFALL_WIDTH_DB))

(9 = 1 / REFERENCE_PER - 1, so p_ref = 0.1 at the threshold), and a packet of ``L``
bits is lost with::

    per(snr, mcs, L) = 1 - (1 - p_ref(snr, mcs)) ** (L / REFERENCE_PACKET_BITS)

i.e. bits fail independently with the bit-equivalent error rate
``1 - (1 - p_ref) ** (1 / 12000)``.  ``per`` decreases with SNR, increases with
``L`` and with the MCS (the thresholds increase).  Because the curve of every MCS is
the same curve shifted by its threshold, the SNR at which ``per`` equals a target is
``min_snr_db[mcs] + snr_margin_db(per_target, L)``; :func:`best_mcs` uses that.

The thresholds are representative minimum SNRs for one spatial stream with LDPC
coding, as commonly quoted in vendor design guides; they are not taken from the
standard (which specifies receiver sensitivities in dBm, with implementation
margins, not SNRs).  They do not depend on the bandwidth because the SNR is measured
over the channel bandwidth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "DATA_SUBCARRIERS",
    "MCS_TABLE",
    "NUM_MCS",
    "OFDM_SYMBOL_S",
    "REFERENCE_PACKET_BITS",
    "REFERENCE_PER",
    "WATERFALL_WIDTH_DB",
    "Mcs",
    "best_mcs",
    "data_subcarriers",
    "per",
    "phy_rate_bps",
    "required_snr_db",
    "snr_margin_db",
]


@dataclass(frozen=True)
class Mcs:
    """One row of the HE MCS table."""

    index: int
    modulation: str
    bits_per_subcarrier: int
    coding_rate: Fraction
    min_snr_db: float
    """SNR at which a REFERENCE_PACKET_BITS packet has packet error rate REFERENCE_PER."""


MCS_TABLE: tuple[Mcs, ...] = (
    Mcs(0, "BPSK", 1, Fraction(1, 2), 2.0),
    Mcs(1, "QPSK", 2, Fraction(1, 2), 5.0),
    Mcs(2, "QPSK", 2, Fraction(3, 4), 9.0),
    Mcs(3, "16-QAM", 4, Fraction(1, 2), 11.0),
    Mcs(4, "16-QAM", 4, Fraction(3, 4), 15.0),
    Mcs(5, "64-QAM", 6, Fraction(2, 3), 18.0),
    Mcs(6, "64-QAM", 6, Fraction(3, 4), 20.0),
    Mcs(7, "64-QAM", 6, Fraction(5, 6), 25.0),
    Mcs(8, "256-QAM", 8, Fraction(3, 4), 29.0),
    Mcs(9, "256-QAM", 8, Fraction(5, 6), 31.0),
    Mcs(10, "1024-QAM", 10, Fraction(3, 4), 34.0),
    Mcs(11, "1024-QAM", 10, Fraction(5, 6), 37.0),
)
NUM_MCS = len(MCS_TABLE)

DATA_SUBCARRIERS = MappingProxyType({20e6: 234, 40e6: 468, 80e6: 980, 160e6: 1960})
"""Data subcarriers of an HE SU PPDU per channel width in Hz (pilots and DC excluded)."""

OFDM_SYMBOL_S = 13.6e-6
"""HE OFDM symbol: 12.8 us of data plus a 0.8 us guard interval."""

REFERENCE_PACKET_BITS = 12000
REFERENCE_PER = 0.1
WATERFALL_WIDTH_DB = 0.5
"""Logistic scale of the waterfall: PER falls from 0.1 to 0.01 over 0.5 * ln(11) = 1.2 dB."""

_MIN_SNR_DB = np.array([m.min_snr_db for m in MCS_TABLE])
_BITS_PER_SYMBOL_PER_SUBCARRIER = np.array([m.bits_per_subcarrier * float(m.coding_rate) for m in MCS_TABLE])
_LOG_ODDS_REF = math.log(1.0 / REFERENCE_PER - 1.0)  # ln 9


def data_subcarriers(bandwidth_hz: float) -> int:
    """Data subcarriers at ``bandwidth_hz``; ValueError unless it is 20, 40, 80 or 160 MHz."""
    for width_hz, count in DATA_SUBCARRIERS.items():
        if math.isclose(bandwidth_hz, width_hz, rel_tol=1e-9):
            return count
    allowed = ", ".join(f"{w / 1e6:g} MHz ({w:g})" for w in DATA_SUBCARRIERS)
    raise ValueError(f"bandwidth_hz {bandwidth_hz!r} has no 802.11ax MCS table; allowed: {allowed}")


def _check_mcs(mcs: np.ndarray, allow_none: bool) -> None:
    low = -1 if allow_none else 0
    if mcs.size and (mcs.min() < low or mcs.max() >= NUM_MCS):
        bad = mcs[(mcs < low) | (mcs >= NUM_MCS)].flat[0]
        raise ValueError(f"MCS {bad} out of range; allowed: {low}..{NUM_MCS - 1}")


def phy_rate_bps(mcs: ArrayLike, bandwidth_hz: float) -> np.ndarray:
    """PHY rate of ``mcs`` (0..11, or -1 for "no link", which gives 0) at ``bandwidth_hz``."""
    mcs_arr = np.asarray(mcs, dtype=np.int64)
    _check_mcs(mcs_arr, allow_none=True)
    per_mcs = data_subcarriers(bandwidth_hz) * _BITS_PER_SYMBOL_PER_SUBCARRIER / OFDM_SYMBOL_S
    return np.where(mcs_arr >= 0, per_mcs[np.clip(mcs_arr, 0, None)], 0.0)


def _check_bits(packet_bits: np.ndarray) -> None:
    if packet_bits.size and packet_bits.min() <= 0:
        raise ValueError(f"packet_bits must be > 0, got {packet_bits.min()}")


def per(snr_db: ArrayLike, mcs: ArrayLike, packet_bits: ArrayLike = REFERENCE_PACKET_BITS) -> np.ndarray:
    """Packet error rate ``1 - (1 - p_ref) ** (packet_bits / 12000)`` (see the module docstring).

    Broadcasts over its arguments.  ``snr_db`` may be -inf (PER 1) or +inf (PER 0).
    """
    snr = np.asarray(snr_db, dtype=np.float64)
    mcs_arr = np.asarray(mcs, dtype=np.int64)
    bits = np.asarray(packet_bits, dtype=np.float64)
    _check_mcs(mcs_arr, allow_none=False)
    _check_bits(bits)
    # z is the log-odds of success at the reference length: p_ref = 1 / (1 + e^z).
    z = (snr - _MIN_SNR_DB[mcs_arr]) / WATERFALL_WIDTH_DB + _LOG_ODDS_REF
    # log(1 - p_ref) = -log(1 + e^-z); written this way it neither overflows nor loses tiny PERs.
    log_success_ref = -np.logaddexp(0.0, -z)
    return np.asarray(-np.expm1(bits / REFERENCE_PACKET_BITS * log_success_ref))


def snr_margin_db(per_target: float, packet_bits: ArrayLike = REFERENCE_PACKET_BITS) -> np.ndarray:
    """SNR above an MCS's threshold at which ``per`` equals ``per_target`` (0 for 0.1 and 12000 bits)."""
    if not 0.0 < per_target < 1.0:
        raise ValueError(f"per_target must be in (0, 1), got {per_target!r}")
    bits = np.asarray(packet_bits, dtype=np.float64)
    _check_bits(bits)
    # Solve per = t: p_ref = q = 1 - (1 - t)^(12000 / L); then 9 e^(x / w) = 1 / q - 1.
    q = -np.expm1(REFERENCE_PACKET_BITS / bits * math.log1p(-per_target))
    return np.asarray(WATERFALL_WIDTH_DB * (np.log1p(-q) - np.log(q) - _LOG_ODDS_REF))


def required_snr_db(
    mcs: ArrayLike, per_target: float, packet_bits: ArrayLike = REFERENCE_PACKET_BITS
) -> np.ndarray:
    """Lowest SNR at which ``mcs`` meets ``per_target`` for ``packet_bits`` packets."""
    mcs_arr = np.asarray(mcs, dtype=np.int64)
    _check_mcs(mcs_arr, allow_none=False)
    return np.asarray(_MIN_SNR_DB[mcs_arr] + snr_margin_db(per_target, packet_bits))


def best_mcs(snr_db: ArrayLike, per_target: float, packet_bits: int = REFERENCE_PACKET_BITS) -> np.ndarray:
    """Highest MCS whose ``per(snr_db, mcs, packet_bits) <= per_target``, or -1 where none is.

    Equivalently the number of MCSs with ``required_snr_db(mcs, ...) <= snr_db``, minus one.
    Same shape as ``snr_db``, dtype int64.
    """
    snr = np.asarray(snr_db, dtype=np.float64)
    thresholds_db = _MIN_SNR_DB + snr_margin_db(per_target, packet_bits)
    return np.searchsorted(thresholds_db, snr, side="right").astype(np.int64) - 1
