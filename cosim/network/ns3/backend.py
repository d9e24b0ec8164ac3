"""The ns-3 network backend, ``network.backend: ns3`` (fidelity ``analytic``; ``packet`` is
:mod:`cosim.network.ns3.packet`, which this class hands over to).

Geometry.  Devices start where the builtin backend puts them for the same seed
(uniform, grid or explicit placement, at ``height_m``) and move with ns-3 mobility
models aggregated to ns-3 Nodes: ConstantPositionMobilityModel (``static``),
RandomWaypointMobilityModel (waypoints uniform in the area, ``pause_s`` pauses) or
GaussMarkovMobilityModel (in the plane, bounded by the area).  Positions at time t
come from advancing the ns-3 simulator to t (integer nanoseconds).

Channel, per unordered pair (so every link is symmetric)::

    P_rx    = ns-3 CalcRxPower(P_tx + 2 G) of the propagation model [-> Nakagami fading]
    SNR     = P_rx - N,     N = -174 dBm/Hz + 10 log10(channel width) + noise_figure

The MCS is the highest single-stream HT/VHT/HE MCS (0.8 us guard interval) whose
packet error rate for ``packet_bits`` from ns-3's error-rate model
(``GetChunkSuccessRate``) is <= ``per_target``; its PHY rate is ns-3's
``WifiMode::GetDataRate``.  A link exists where such an MCS exists and its rate is at
least ``min_rate_bps``; goodput is ``rate * mac_efficiency * (1 - PER)``, as in builtin.
Nakagami fading is block fading: one draw per pair per distinct query time.

Shared medium (``transfer``).  Devices within carrier-sense range share airtime.
Two transmissions may not overlap in time when

- their senders hear each other (received power >= ``carrier_sense_dbm``; ns-3's
  CCA sensitivity is -82 dBm), or
- they share a device (a radio sends or receives one frame at a time: same sender,
  same receiver, or one's receiver is the other's sender).

Transmissions are scheduled greedily: each sender keeps its messages in the order
given; repeatedly, of the senders' next messages, the one that can start earliest
(no earlier than its ``start_s``, its sender's previous finish, and the finish of
every conflicting transmission already scheduled; ties by message order) is
scheduled and runs to completion.  Transmissions of an earlier call still on the
air (``on_air``: a newcomer's pull, sent at the event before the round's exchange)
hold the air as already scheduled ones.  This is ideal CSMA: no collisions, no backoff,
no hidden terminals (a receiver's interference from senders it hears but its sender
does not is ignored).  A transmission takes ``access_delay_s + bits / goodput``;
deadline and partial-delivery rules are the builtin backend's.  With no two senders
in carrier-sense range and no shared receivers this gives exactly builtin's results.

Randomness.  ns-3's streams are fixed per use (``RngSeedManager`` seed 1, run =
the scenario seed, ``AssignStreams`` per model), so a scenario, seed and sequence of
query times give the same answers in any process and after other simulations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cosim.network.base import LinkState, Message, TransferResult
from cosim.network.geometry import (
    THERMAL_NOISE_DBM_PER_HZ,
    device_ranks,
    fluid_result,
    noise_dbm,
    place_devices,
)
from cosim.network.ns3._phy import Phy
from cosim.network.ns3._world import World, is_current
from cosim.scenario import Ns3Network, ScenarioError

__all__ = ["THERMAL_NOISE_DBM_PER_HZ", "Ns3Backend", "noise_dbm"]


def _time_ns(time_s: float) -> int:
    if not time_s >= 0.0 or math.isinf(time_s):
        raise ValueError(f"time_s must be finite and >= 0, got {time_s!r}")
    return round(time_s * 1e9)


class Ns3Backend:
    """The ns-3 network model for ``device_ids`` (every device that ever takes part)."""

    def __new__(cls, spec: Ns3Network, device_ids: Sequence[int], seed: int) -> Ns3Backend:
        """``fidelity: packet`` gives a :class:`cosim.network.ns3.packet.PacketBackend`."""
        if cls is Ns3Backend and spec.fidelity == "packet":
            from cosim.network.ns3.packet import PacketBackend

            return super().__new__(PacketBackend)
        return super().__new__(cls)

    def __init__(self, spec: Ns3Network, device_ids: Sequence[int], seed: int) -> None:
        ids = [int(d) for d in device_ids]
        if not ids:
            raise ValueError("device_ids is empty; the network needs at least one device")
        if len(set(ids)) != len(ids) or min(ids) < 0:
            raise ValueError(f"device_ids must be distinct non-negative integers, got {ids}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if spec.fidelity not in ("analytic", "packet"):
            raise ValueError(
                f"network.fidelity {spec.fidelity!r} is not implemented; allowed: 'analytic', 'packet'"
            )
        self.spec = spec
        self.seed = int(seed)
        self.device_ids: tuple[int, ...] = tuple(sorted(ids))
        self._rank = {d: r for r, d in enumerate(self.device_ids)}
        self._area = np.array([spec.area.width_m, spec.area.height_m])
        self._start = self._place()
        self._noise_dbm = noise_dbm(spec.bandwidth_hz, spec.noise_figure_db)
        self._phy = Phy(spec.standard, spec.channel_width_mhz, spec.error_model)
        top = float(self._phy.rates_bps.max())
        if spec.min_rate_bps > top:
            raise ScenarioError(
                f"network.min_rate_bps: {spec.min_rate_bps:g} is above the highest PHY rate of "
                f"{spec.standard} at {spec.channel_width_mhz} MHz ({top:g}), so no link would exist; "
                f"allowed: <= {top:g}"
            )
        self._world: World | None = None
        # The last evaluated time: (time_ns, generation, positions, rx power) of every device.
        self._snapshot: tuple[int, int, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ geometry

    def _place(self) -> np.ndarray:
        """Start positions, drawn exactly as the builtin backend draws them."""
        return place_devices(self.spec.placement, self._area, self.device_ids, self.seed)

    def _ranks(self, devices: Sequence[int]) -> np.ndarray:
        return device_ranks(self._rank, devices)

    def _at(self, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(positions, rx power) of every device at ``time_s``, from ns-3.

        The simulator only runs forward: an earlier time than the clock, or a World
        whose simulation another one replaced, means a deterministic rebuild from t = 0.
        """
        time_ns = _time_ns(time_s)
        snap = self._snapshot
        if (
            snap is not None
            and snap[0] == time_ns
            and self._world is not None
            and snap[1] == self._world.generation
        ):
            return snap[2], snap[3]
        world = self._world
        if world is None or not is_current(world.generation) or time_ns < world.clock_ns:
            world = self._world = World(self.spec, self._start, self.seed)
        world.advance(time_ns)
        positions = world.positions_m()
        rx_dbm = world.rx_power_dbm(self.spec.tx_power_dbm + 2.0 * self.spec.antenna_gain_db)
        for a in (positions, rx_dbm):
            a.setflags(write=False)
        self._snapshot = (time_ns, world.generation, positions, rx_dbm)
        return positions, rx_dbm

    # ------------------------------------------------------------------ the seam

    def positions(self, time_s: float, devices: Sequence[int]) -> np.ndarray:
        """(n, 2) positions in metres of ``devices`` at ``time_s``, in the order given."""
        ranks = self._ranks(devices)
        return self._at(time_s)[0][ranks].copy()

    def rx_power_dbm(self, time_s: float, devices: Sequence[int]) -> np.ndarray:
        """(n, n) received power in dBm among ``devices`` at ``time_s``; -inf on the diagonal."""
        ranks = self._ranks(devices)
        return self._at(time_s)[1][np.ix_(ranks, ranks)].copy()

    def links(self, time_s: float, devices: Sequence[int]) -> LinkState:
        """Link state among ``devices`` at ``time_s`` (see the module docstring for the model)."""
        spec = self.spec
        devices = [int(d) for d in devices]
        ranks = self._ranks(devices)
        all_positions, all_rx_dbm = self._at(time_s)
        pos = all_positions[ranks]
        n = len(devices)
        distance_m = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(axis=2))
        snr_db = all_rx_dbm[np.ix_(ranks, ranks)] - self._noise_dbm
        np.fill_diagonal(snr_db, -np.inf)
        upper = np.triu_indices(n, 1)
        mode_upper, per_upper = self._phy.best(snr_db[upper], spec.packet_bits, spec.per_target)
        mode = np.full((n, n), -1, dtype=np.int64)
        loss = np.ones((n, n))
        mode[upper], loss[upper] = mode_upper, per_upper
        mode, loss = np.maximum(mode, mode.T), np.minimum(loss, loss.T)
        rate_bps = np.where(mode >= 0, self._phy.rates_bps[np.clip(mode, 0, None)], 0.0)
        linked = (mode >= 0) & (rate_bps >= spec.min_rate_bps)
        mcs = np.where(linked, self._phy.mcs_indices[np.clip(mode, 0, None)], -1)
        rate_bps = np.where(linked, rate_bps, 0.0)
        loss = np.where(linked, loss, 1.0)
        return LinkState.of(time_s, devices, distance_m, snr_db, mcs, rate_bps, loss, spec.mac_efficiency)

    def transfer(
        self,
        time_s: float,
        messages: Sequence[Message],
        deadline_s: float,
        on_air: Sequence[TransferResult] = (),
    ) -> list[TransferResult]:
        """Send ``messages`` over the links at ``time_s`` on a shared medium; results in message order.

        As builtin's, plus the shared-medium rule of the module docstring: per sender in
        the order given, ``start = max(start_s, previous finish, finish of every conflicting
        transmission scheduled before)``, ``finish = start + access_delay_s + bits / goodput``.
        The transmissions ``on_air`` (of earlier calls, e.g. a newcomer's pull) count as
        scheduled before every message: one that conflicts with them waits until they end.
        A message without a link is not sent (``finish = start``, 0 bits) and holds up
        nobody.  A message finishing after ``deadline_s`` is not delivered; its
        ``delivered_bits`` are the whole packets (of ``packet_bits``) through by the deadline.
        """
        for m in messages:
            if m.src == m.dst:
                raise ValueError(f"message from device {m.src} to itself")
            if m.bits < 0:
                raise ValueError(f"message {m.src}->{m.dst} has a negative size ({m.bits} bits)")
        if not messages:
            return []
        spec = self.spec
        air = [r for r in on_air if r.finish_s > time_s and r.finish_s > r.start_s]
        ends = [(m.src, m.dst) for m in messages] + [(r.src, r.dst) for r in air]
        devices = sorted({d for pair in ends for d in pair})
        state = self.links(time_s, devices)
        hears = self.rx_power_dbm(time_s, devices) >= spec.carrier_sense_dbm
        at = {d: k for k, d in enumerate(devices)}

        queues: dict[int, list[int]] = {}
        for k, m in enumerate(messages):
            queues.setdefault(m.src, []).append(k)
        sender_free_s: dict[int, float] = {}
        # (src, dst, finish_s) of transmissions so far: those still on the air first
        scheduled: list[tuple[int, int, float]] = [(r.src, r.dst, r.finish_s) for r in air]
        for r in air:
            sender_free_s[r.src] = max(sender_free_s.get(r.src, -math.inf), r.finish_s)
        results: list[TransferResult | None] = [None] * len(messages)

        def conflicts(m: Message, src: int, dst: int) -> bool:
            shared = {m.src, m.dst} & {src, dst}
            return bool(shared) or bool(hears[at[m.src], at[src]])

        while True:
            best: tuple[float, int] | None = None
            for src, queue in queues.items():
                while queue:
                    k = queue[0]
                    m = messages[k]
                    ready_s = max(m.start_s, sender_free_s.get(src, -math.inf))
                    if state.rate_bps[at[m.src], at[m.dst]] > 0.0:
                        break
                    results[k] = self._result(m, ready_s, ready_s, state, deadline_s)
                    queue.pop(0)
                if not queue:
                    continue
                start_s = max([ready_s] + [f for s, d, f in scheduled if conflicts(m, s, d)])
                if best is None or (start_s, k) < best:
                    best = (start_s, k)
            if best is None:
                break
            start_s, k = best
            m = messages[k]
            i, j = at[m.src], at[m.dst]
            finish_s = start_s + spec.access_delay_s + m.bits / float(state.goodput_bps[i, j])
            sender_free_s[m.src] = finish_s
            scheduled.append((m.src, m.dst, finish_s))
            results[k] = self._result(m, start_s, finish_s, state, deadline_s)
            queues[m.src].pop(0)
        return [r for r in results if r is not None]

    def _result(
        self, m: Message, start_s: float, finish_s: float, state: LinkState, deadline_s: float
    ) -> TransferResult:
        i, j = state.index(m.src), state.index(m.dst)
        return fluid_result(
            m,
            start_s=start_s,
            finish_s=finish_s,
            rate_bps=float(state.rate_bps[i, j]),
            loss=float(state.loss[i, j]),
            goodput_bps=float(state.goodput_bps[i, j]),
            access_delay_s=self.spec.access_delay_s,
            packet_bits=self.spec.packet_bits,
            deadline_s=deadline_s,
        )
