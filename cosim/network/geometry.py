"""What every network backend shares: noise, start positions, device ranks, fluid transfers.

The builtin and ns-3 backends place devices alike (same seed, same positions) and
turn a link's goodput into a transfer result alike; both call these functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from cosim.network.base import Message, TransferResult
from cosim.scenario import Placement

__all__ = [
    "PLACEMENT_STREAM",
    "THERMAL_NOISE_DBM_PER_HZ",
    "device_ranks",
    "fluid_result",
    "noise_dbm",
    "place_devices",
]

THERMAL_NOISE_DBM_PER_HZ = -174.0
PLACEMENT_STREAM = 1


def noise_dbm(bandwidth_hz: float, noise_figure_db: float) -> float:
    """Receiver noise power ``-174 dBm/Hz + 10 log10(bandwidth) + noise_figure``."""
    return THERMAL_NOISE_DBM_PER_HZ + 10.0 * math.log10(bandwidth_hz) + noise_figure_db


def place_devices(
    placement: Placement, area_m: np.ndarray, device_ids: Sequence[int], seed: int
) -> np.ndarray:
    """Start positions ``(n, 2)`` in metres, in the order of ``device_ids``.

    ``uniform``: each device from its own stream ``(seed, PLACEMENT_STREAM, device)``;
    ``grid``: cell centres of a near-square grid; ``explicit``: the listed positions,
    which must cover every device and lie inside the area.
    """
    n = len(device_ids)
    if placement.kind == "uniform":
        return np.array(
            [
                np.random.default_rng(np.random.SeedSequence([seed, PLACEMENT_STREAM, d])).uniform(
                    0.0, 1.0, 2
                )
                * area_m
                for d in device_ids
            ]
        )
    if placement.kind == "grid":
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        cell = area_m / np.array([cols, rows])
        k = np.arange(n)
        return (np.stack([k % cols, k // cols], axis=1) + 0.5) * cell
    positions = placement.positions_m or ()
    missing = [d for d in device_ids if d >= len(positions)]
    if missing:
        raise ValueError(f"placement.positions_m has {len(positions)} positions; devices {missing} have none")
    start = np.array([positions[d] for d in device_ids], dtype=np.float64)
    inside = np.all((start >= 0.0) & (start <= area_m), axis=1)
    outside = [d for d, ok in zip(device_ids, inside, strict=True) if not ok]
    if outside:
        raise ValueError(
            f"placement.positions_m: devices {outside} lie outside the area "
            f"[0, {area_m[0]:g}] x [0, {area_m[1]:g}] m"
        )
    return start


def device_ranks(rank: Mapping[int, int], devices: Sequence[int]) -> np.ndarray:
    """Each device's index among all the network's devices; unknown or repeated ids are errors."""
    unknown = [d for d in devices if d not in rank]
    if unknown:
        raise ValueError(f"unknown device(s) {unknown}; this network has devices {sorted(rank)}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices must be distinct, got {list(devices)}")
    return np.array([rank[d] for d in devices], dtype=np.int64)


def fluid_result(
    m: Message,
    *,
    start_s: float,
    finish_s: float,
    rate_bps: float,
    loss: float,
    goodput_bps: float,
    access_delay_s: float,
    packet_bits: int,
    deadline_s: float,
) -> TransferResult:
    """A transfer that flows at ``goodput_bps`` after ``access_delay_s``.

    Delivered when the link exists and it finished by the deadline; otherwise the
    whole packets that got through by the deadline count as delivered bits.
    """
    if rate_bps > 0.0:
        sent_bits = max(0.0, (deadline_s - start_s - access_delay_s) * goodput_bps)
        partial_bits = min(m.bits, int(sent_bits // packet_bits) * packet_bits)
    else:
        partial_bits = 0
    delivered = rate_bps > 0.0 and finish_s <= deadline_s
    return TransferResult(
        src=m.src,
        dst=m.dst,
        bits=m.bits,
        start_s=start_s,
        finish_s=finish_s,
        rate_bps=rate_bps,
        loss=loss,
        delivered=delivered,
        delivered_bits=m.bits if delivered else partial_bits,
        goodput_bps=goodput_bps,
    )
