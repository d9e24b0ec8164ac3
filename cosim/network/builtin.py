"""The builtin network: a NumPy model of an 802.11ax ad hoc channel between devices.

Geometry.  Devices are placed in the area (uniform, grid or explicit) and either stay
put or follow the random waypoint model.

Channel, per unordered pair of devices (so every link is symmetric)::

    PL(d)   = FSPL(d0) + 10 n log10(max(d, d0) / d0),   FSPL(d0) = 20 log10(4 pi d0 f / c)
    SNR     = P_tx + 2 G - PL(d) - X + 10 log10(h) - N
    N       = -174 dBm/Hz + 10 log10(bandwidth) + noise_figure

``X ~ Normal(0, shadowing_sigma_db)`` is drawn once per pair for the whole run;
``h`` is the fading power gain: ``Exp(1)`` per pair, redrawn for every distinct time
(block fading, one block per round) for ``fading="rayleigh"``, 1 for ``"none"``.
The MCS is :func:`cosim.network.mcs.best_mcs` of the SNR; a link exists where an MCS
qualifies and its PHY rate is at least ``min_rate_bps``.  Goodput is
``rate * mac_efficiency * (1 - PER)``.

Transfers.  Each sender sends its messages one after another in the order given,
each taking ``access_delay_s + bits / goodput``.  The builtin model has no shared
medium: different senders, and a receiver's incoming messages, do not contend or
interfere.  (The ns-3 ``packet`` fidelity models contention; expect it to be slower.)

Randomness.  Every draw comes from its own ``SeedSequence([seed, stream, ...])``:
placement and mobility per device id, shadowing once for all pairs, fading per
time (keyed by ``round(time_s * 1e9)``).  Answers are therefore pure functions of
(seed, device ids, time): they do not depend on which queries came before, and
(with uniform or explicit placement) a device's track and its pairs' shadowing and
fading do not change when devices with higher ids are added.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cosim.network import mcs as mcs_table
from cosim.network.base import LinkState, Message, TransferResult
from cosim.network.geometry import device_ranks, fluid_result, noise_dbm, place_devices
from cosim.scenario import BuiltinNetwork, RandomWaypointMobility

__all__ = ["BuiltinBackend", "noise_dbm", "path_loss_db"]

SPEED_OF_LIGHT_MPS = 299_792_458.0

# Stream constants: the second entry of every SeedSequence, so streams never overlap.
_SHADOWING_STREAM = 2
_FADING_STREAM = 3
_MOBILITY_STREAM = 4


def path_loss_db(
    distance_m: np.ndarray, frequency_hz: float, exponent: float, reference_m: float
) -> np.ndarray:
    """Log-distance path loss ``FSPL(d0) + 10 n log10(max(d, d0) / d0)`` in dB."""
    fspl_ref_db = 20.0 * math.log10(4.0 * math.pi * reference_m * frequency_hz / SPEED_OF_LIGHT_MPS)
    d = np.maximum(np.asarray(distance_m, dtype=np.float64), reference_m)
    return np.asarray(fspl_ref_db + 10.0 * exponent * np.log10(d / reference_m))


def _pair_index(rank_a: np.ndarray, rank_b: np.ndarray) -> np.ndarray:
    """Index of the unordered pair {a, b} (a != b) in the order (0,1), (0,2), (1,2), (0,3), ...

    Pairs among the first k devices come first, so draws made in this order stay the
    same when devices are added.
    """
    lo, hi = np.minimum(rank_a, rank_b), np.maximum(rank_a, rank_b)
    return hi * (hi - 1) // 2 + lo


def _pair_values(ranks: np.ndarray, stream: np.ndarray) -> np.ndarray:
    """(n, n) symmetric matrix of ``stream[pair_index]`` among ``ranks``; 0 on the diagonal."""
    rows, cols = np.meshgrid(ranks, ranks, indexing="ij")
    off = rows != cols
    out = np.zeros(rows.shape)
    out[off] = stream[_pair_index(rows[off], cols[off])]
    return out


@dataclass
class _Waypoints:
    """One device's random waypoint legs, generated lazily from its own stream.

    Leg k: leave ``origin[k]`` at ``depart_s[k]``, reach ``target[k]`` at ``arrive_s[k]``,
    pause there until ``depart_s[k + 1]``.
    """

    rng: np.random.Generator
    depart_s: list[float] = field(default_factory=list)
    arrive_s: list[float] = field(default_factory=list)
    origin: list[np.ndarray] = field(default_factory=list)
    target: list[np.ndarray] = field(default_factory=list)

    def extend_to(
        self, time_s: float, start: np.ndarray, area: np.ndarray, spec: RandomWaypointMobility
    ) -> None:
        """Generate legs until the last one (with its pause) lasts past ``time_s``."""
        while not self.depart_s or self.arrive_s[-1] + spec.pause_s <= time_s:
            if self.depart_s:
                depart_s, origin = self.arrive_s[-1] + spec.pause_s, self.target[-1]
            else:
                depart_s, origin = 0.0, start
            target = self.rng.uniform(0.0, 1.0, 2) * area
            speed_mps = self.rng.uniform(spec.speed_min_mps, spec.speed_max_mps)
            self.depart_s.append(depart_s)
            self.arrive_s.append(depart_s + float(np.hypot(*(target - origin))) / speed_mps)
            self.origin.append(origin)
            self.target.append(target)

    def at(self, time_s: float) -> np.ndarray:
        k = bisect.bisect_right(self.depart_s, time_s) - 1
        if time_s >= self.arrive_s[k]:
            return self.target[k]
        frac = (time_s - self.depart_s[k]) / (self.arrive_s[k] - self.depart_s[k])
        return np.asarray(self.origin[k] + frac * (self.target[k] - self.origin[k]))


class BuiltinBackend:
    """The builtin network model for ``device_ids`` (every device that ever takes part)."""

    def __init__(self, spec: BuiltinNetwork, device_ids: Sequence[int], seed: int) -> None:
        ids = [int(d) for d in device_ids]
        if not ids:
            raise ValueError("device_ids is empty; the network needs at least one device")
        if len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"device_ids must be distinct non-negative integers, got {ids}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        mcs_table.data_subcarriers(spec.radio.bandwidth_hz)  # fail now on a bandwidth without a table
        self.spec = spec
        self.seed = int(seed)
        self.device_ids: tuple[int, ...] = tuple(sorted(ids))
        self._rank = {d: r for r, d in enumerate(self.device_ids)}
        self._area = np.array([spec.area.width_m, spec.area.height_m])
        self._start = self._place()
        n = len(self.device_ids)
        shadow_rng = self._rng(_SHADOWING_STREAM)
        all_ranks = np.arange(n)
        pair_draws = shadow_rng.standard_normal(n * (n - 1) // 2)
        self._shadowing_db = spec.radio.shadowing_sigma_db * _pair_values(all_ranks, pair_draws)
        self._noise_dbm = noise_dbm(spec.radio.bandwidth_hz, spec.radio.noise_figure_db)
        self._waypoints: dict[int, _Waypoints] = {}

    # ------------------------------------------------------------------ helpers

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *key]))

    def _place(self) -> np.ndarray:
        return place_devices(self.spec.placement, self._area, self.device_ids, self.seed)

    def _ranks(self, devices: Sequence[int]) -> np.ndarray:
        return device_ranks(self._rank, devices)

    @staticmethod
    def _check_time(time_s: float) -> None:
        if not time_s >= 0.0 or math.isinf(time_s):
            raise ValueError(f"time_s must be finite and >= 0, got {time_s!r}")

    def _fading_gain(self, time_s: float, ranks: np.ndarray) -> np.ndarray:
        if self.spec.radio.fading == "none" or len(ranks) < 2:
            return np.ones((len(ranks), len(ranks)))
        top = int(ranks.max())
        rng = self._rng(_FADING_STREAM, round(time_s * 1e9))
        # Only the pairs among ranks <= top are drawn; the draws are a prefix of the full stream.
        gains = rng.standard_exponential(top * (top + 1) // 2)
        return _pair_values(ranks, gains)

    # ------------------------------------------------------------------ the seam

    def positions(self, time_s: float, devices: Sequence[int]) -> np.ndarray:
        """(n, 2) positions in metres at ``time_s`` (a pure function of time_s)."""
        self._check_time(time_s)
        ranks = self._ranks(devices)
        mobility = self.spec.mobility
        if not isinstance(mobility, RandomWaypointMobility):
            return self._start[ranks].copy()
        out = np.empty((len(ranks), 2))
        for i, (device, rank) in enumerate(zip(devices, ranks, strict=True)):
            legs = self._waypoints.get(device)
            if legs is None:
                legs = self._waypoints[device] = _Waypoints(self._rng(_MOBILITY_STREAM, device))
            legs.extend_to(time_s, self._start[rank], self._area, mobility)
            out[i] = legs.at(time_s)
        return out

    def links(self, time_s: float, devices: Sequence[int]) -> LinkState:
        """Link state among ``devices`` at ``time_s`` (see the module docstring for the model)."""
        radio = self.spec.radio
        devices = [int(d) for d in devices]
        ranks = self._ranks(devices)
        pos = self.positions(time_s, devices)
        n = len(devices)
        distance_m = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(axis=2))
        fading_db = 10.0 * np.log10(np.maximum(self._fading_gain(time_s, ranks), np.finfo(float).tiny))
        loss_db = path_loss_db(
            distance_m, radio.frequency_hz, radio.path_loss_exponent, radio.reference_distance_m
        )
        shadowing_db = self._shadowing_db[np.ix_(ranks, ranks)]
        snr_db = (
            radio.tx_power_dbm
            + 2.0 * radio.antenna_gain_db
            - loss_db
            - shadowing_db
            + fading_db
            - self._noise_dbm
        )
        np.fill_diagonal(snr_db, -np.inf)
        mcs = mcs_table.best_mcs(snr_db, radio.per_target, radio.packet_bits)
        rate_bps = mcs_table.phy_rate_bps(mcs, radio.bandwidth_hz)
        linked = (mcs >= 0) & (rate_bps >= radio.min_rate_bps) & ~np.eye(n, dtype=bool)
        mcs = np.where(linked, mcs, -1)
        rate_bps = np.where(linked, rate_bps, 0.0)
        loss = np.ones((n, n))
        loss[linked] = mcs_table.per(snr_db[linked], mcs[linked], radio.packet_bits)
        return LinkState.of(time_s, devices, distance_m, snr_db, mcs, rate_bps, loss, radio.mac_efficiency)

    def transfer(
        self,
        time_s: float,
        messages: Sequence[Message],
        deadline_s: float,
        on_air: Sequence[TransferResult] = (),
    ) -> list[TransferResult]:
        """Send ``messages`` over the links at ``time_s``; results in the order of ``messages``.

        Per sender, in the order given: ``start = max(message.start_s, previous finish)``,
        ``finish = start + access_delay_s + bits / goodput``; a sender's transmissions
        ``on_air`` (of earlier calls) count as previous ones.  A message without a link is
        not sent (``finish = start``, 0 bits delivered) and does not hold up the sender.
        A message finishing after ``deadline_s`` is not delivered; its ``delivered_bits``
        are the whole packets (of ``packet_bits``) through by the deadline.
        """
        for m in messages:
            if m.src == m.dst:
                raise ValueError(f"message from device {m.src} to itself")
            if m.bits < 0:
                raise ValueError(f"message {m.src}->{m.dst} has a negative size ({m.bits} bits)")
        if not messages:
            return []
        radio = self.spec.radio
        state = self.links(time_s, sorted({d for m in messages for d in (m.src, m.dst)}))
        free_at_s: dict[int, float] = {}
        for r in on_air:
            free_at_s[r.src] = max(free_at_s.get(r.src, -math.inf), r.finish_s)
        results = []
        for m in messages:
            i, j = state.index(m.src), state.index(m.dst)
            rate_bps, loss = float(state.rate_bps[i, j]), float(state.loss[i, j])
            goodput_bps = float(state.goodput_bps[i, j])
            start_s = max(m.start_s, free_at_s.get(m.src, -math.inf))
            if rate_bps > 0.0:
                finish_s = start_s + radio.access_delay_s + m.bits / goodput_bps
                free_at_s[m.src] = finish_s
            else:
                finish_s = start_s
            results.append(
                fluid_result(
                    m,
                    start_s=start_s,
                    finish_s=finish_s,
                    rate_bps=rate_bps,
                    loss=loss,
                    goodput_bps=goodput_bps,
                    access_delay_s=radio.access_delay_s,
                    packet_bits=radio.packet_bits,
                    deadline_s=deadline_s,
                )
            )
        return results
