"""Packet-level fidelity of the ns-3 backend, ``network.fidelity: packet``.

``transfer`` simulates the round's messages packet by packet in ns-3: every device is an
ad hoc 802.11 station (the spec's standard, channel width and band; its tx power, antenna
gains, noise figure, error-rate model and carrier-sense threshold as CCA sensitivity) on
one ``YansWifiChannel`` whose loss is the spec's propagation model, chained to a
Nakagami model when ``fading: nakagami`` (redrawn per frame).  Rate control is ns-3's
``IdealWifiManager``; IPv4 on one subnet with neighbour caches filled in advance.  With
``routing: none`` a message reaches its destination in one hop or not at all; with
``olsr`` or ``aodv`` every device runs ns-3's protocol from t = 0 and relays messages
over several hops (the control traffic shares the channel; routes follow mobility).

Each message is one TCP connection (BulkSend -> PacketSink, 1448-byte segments) carrying
``ceil(bits / 8)`` bytes, started at the message's ``start_s``; a sender's messages run
concurrently (the MAC shares the air among them).  Contention, collisions, backoff,
MAC retransmissions, TCP's own behaviour and hidden terminals are all ns-3's.  The C++
side is ``ns3_models/update_sender.h`` (compiled once per process with cppyy): the
sink's ``Rx`` trace counts bytes, and the arrival of the last one is the finish time.
ns-3's preamble detection (``ThresholdPreambleDetectionModel``) keeps its 4 dB SNR
threshold, its -82 dBm floor is lowered to -101 dBm: links the analytic fidelity
admits below 4 dB SNR carry nothing here.

Time.  The simulator runs in step with the caller: ``transfer(t, messages, deadline)``
advances ns-3 to ``t``, schedules the messages and runs (``Simulator::Stop`` in integer
nanoseconds + ``Run``) until every message has finished or the deadline has come,
whichever is first, so the ns-3 clock ends at the round's last finish or its deadline.
Messages still open at the deadline are aborted (the receiver's TCP RST; what they
already queued in the Wi-Fi MAC is left to ns-3, see ``ns3_models/update_sender.h``) and
reported undelivered, with ``delivered_bits`` = 8 x the bytes received by the deadline
and ``finish_s = inf``.
A call whose messages start before the ns-3 clock (or a
``links`` query before it, with moving devices) rebuilds the simulation from t = 0
(deterministically); so does a call after another backend's simulation replaced this one.

``links`` is the analytic fidelity's computation (ns-3 propagation + error-rate model per
pair, :mod:`cosim.network.ns3.backend`) on the same Nodes; the ``rate_bps`` and ``loss``
reported with each transfer are that analytic link's, while ``start_s``, ``finish_s``,
``delivered`` and ``goodput_bps`` (bits / (finish - start)) come from the packets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from cosim.network.base import Message, TransferResult
from cosim.network.ns3._loader import cpp, load_ns
from cosim.network.ns3._world import World, _propagation, is_current
from cosim.network.ns3.backend import Ns3Backend, _time_ns
from cosim.scenario import AodvRouting, NakagamiFading, Ns3Network, OlsrRouting

__all__ = ["MODELS_DIR", "PacketBackend", "PacketWorld"]

MODELS_DIR = Path(__file__).resolve().parents[3] / "ns3_models"
"""Where the C++ models live (``update_sender.h``)."""

_STANDARD = {"802.11n": 0, "802.11ac": 1, "802.11ax": 2}
_BAND = {2.4: 0, 5: 1, 6: 2}
_ROUTING = {"none": 0, "olsr": 1, "aodv": 2}
_PACKET_FADING_STREAM = (1 << 30) + 2000
_WIFI_STREAM = (1 << 30) + 3000


@cache
def _models() -> Any:
    """The compiled ``cosim_ns3`` namespace with ``AdhocNetwork`` (once per process)."""
    load_ns()
    import cppyy

    header = MODELS_DIR / "update_sender.h"
    if not header.is_file():
        raise FileNotFoundError(f"the packet fidelity needs {header} (ns3_models/ of the cosim repository)")
    cppyy.include(str(header))
    return cppyy.gbl.cosim_ns3


class PacketWorld(World):
    """A :class:`World` whose Nodes also carry an ad hoc Wi-Fi network and its TCP updates."""

    def __init__(self, spec: Ns3Network, start_m: np.ndarray, seed: int) -> None:
        super().__init__(spec, start_m, seed)
        ns = self._ns
        models = _models()
        # Its own propagation chain: the analytic queries re-chain fading on theirs.
        loss = _propagation(ns, spec)
        if isinstance(spec.fading, NakagamiFading):
            nakagami = ns.CreateObject[ns.NakagamiPropagationLossModel]()
            for name in ("m0", "m1", "m2"):
                nakagami.SetAttribute(name, ns.DoubleValue(spec.fading.m))
            nakagami.AssignStreams(_PACKET_FADING_STREAM)
            loss.SetNext(nakagami)
        nodes = cpp().std.vector["ns3::Ptr<ns3::Node>"]()
        for node in self._nodes:
            nodes.push_back(node)
        routing = spec.routing
        intervals = cpp().std.vector["int64_t"]()
        if isinstance(routing, OlsrRouting):
            for interval_s in (routing.hello_interval_s, routing.tc_interval_s):
                intervals.push_back(_time_ns(interval_s))
        elif isinstance(routing, AodvRouting):
            for interval_s in (routing.hello_interval_s, routing.active_route_timeout_s):
                intervals.push_back(_time_ns(interval_s))
        self.net = models.AdhocNetwork(
            nodes,
            loss,
            _STANDARD[spec.standard],
            int(spec.channel_width_mhz),
            _BAND[spec.band_ghz],
            float(spec.tx_power_dbm),
            float(spec.antenna_gain_db),
            float(spec.noise_figure_db),
            float(spec.carrier_sense_dbm),
            spec.error_model == "nist",
            _ROUTING[routing.model],
            intervals,
            _WIFI_STREAM,
        )
        self._keep = (loss, nodes, intervals)

    def _run(self, until_ns: int, stop_when_done: bool) -> None:
        ns = self._ns
        while self.clock_ns < until_ns:
            ns.Simulator.Stop(ns.NanoSeconds(until_ns - self.clock_ns))
            ns.Simulator.Run()
            self.clock_ns = int(ns.Simulator.Now().GetNanoSeconds())
            if stop_when_done and self.net.Open() == 0:
                break

    def advance(self, time_ns: int) -> None:
        """Run the simulator (packets and all) up to ``time_ns``."""
        if time_ns < self.clock_ns:
            raise ValueError(f"the ns-3 clock is at {self.clock_ns} ns and cannot go back to {time_ns} ns")
        self._run(time_ns, stop_when_done=False)

    def run_round(self, deadline_ns: int) -> None:
        """Run until no update is open or ``deadline_ns``; then abort what is still open."""
        if self.net.Open() > 0:
            self._run(deadline_ns, stop_when_done=True)
        self.net.AbortOpen()


class PacketBackend(Ns3Backend):
    """The ns-3 backend with ``fidelity: packet`` (see the module docstring)."""

    def _world_at(self, time_ns: int, rebuild: bool = False) -> PacketWorld:
        world = self._world
        if (
            rebuild
            or not isinstance(world, PacketWorld)
            or not is_current(world.generation)
            or (time_ns < world.clock_ns and self.spec.mobility.kind != "static")
        ):
            world = PacketWorld(self.spec, self._start, self.seed)
            self._world = world
            self._snapshot = None
        if time_ns > world.clock_ns:
            world.advance(time_ns)
        return world

    def _at(self, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        time_ns = _time_ns(time_s)
        snap = self._snapshot
        if (
            snap is not None
            and snap[0] == time_ns
            and self._world is not None
            and snap[1] == self._world.generation
            and is_current(self._world.generation)
        ):
            return snap[2], snap[3]
        world = self._world_at(time_ns)
        # Static devices: positions do not depend on the clock, which may be past time_s.
        positions = world.positions_m()
        rx_dbm = world.rx_power_dbm(self.spec.tx_power_dbm + 2.0 * self.spec.antenna_gain_db, at_ns=time_ns)
        for a in (positions, rx_dbm):
            a.setflags(write=False)
        self._snapshot = (time_ns, world.generation, positions, rx_dbm)
        return positions, rx_dbm

    def transfer(
        self,
        time_s: float,
        messages: Sequence[Message],
        deadline_s: float,
        on_air: Sequence[TransferResult] = (),
    ) -> list[TransferResult]:
        """Send ``messages`` packet by packet in ns-3 from ``time_s`` to (at most) ``deadline_s``.

        ``on_air``: transmissions of an earlier call that the simulation now running has not
        carried up to their finish (it was rebuilt from t = 0 for this call's start) are sent
        again from where the clock stands, their remaining bits in proportion to the time
        left, so that they take the air they took; their results are not reported again.
        """
        for m in messages:
            if m.src == m.dst:
                raise ValueError(f"message from device {m.src} to itself")
            if m.bits < 0:
                raise ValueError(f"message {m.src}->{m.dst} has a negative size ({m.bits} bits)")
        if not messages:
            return []
        time_ns, deadline_ns = _time_ns(time_s), _time_ns(deadline_s)
        starts_ns = [max(_time_ns(m.start_s), time_ns) for m in messages]
        devices = sorted({d for m in messages for d in (m.src, m.dst)})
        self._ranks(devices)
        world = self._world_at(time_ns)
        if min(starts_ns) < world.clock_ns:
            world = self._world_at(time_ns, rebuild=True)
        for r in on_air:
            if r.bits == 0 or not math.isfinite(r.finish_s):
                continue
            start_ns, finish_ns = _time_ns(r.start_s), _time_ns(r.finish_s)
            from_ns = max(start_ns, world.clock_ns)
            if finish_ns <= from_ns:
                continue  # over, or carried by this simulation already
            left = r.bits * (finish_ns - from_ns) / (finish_ns - start_ns)
            src, dst = self._rank[r.src], self._rank[r.dst]
            world.net.Send(src, dst, max(1, math.ceil(left / 8)), from_ns)
        state = self.links(time_s, devices)
        assert self._world is world
        ids: list[int | None] = []
        for m, start_ns in zip(messages, starts_ns, strict=True):
            if m.bits == 0:
                ids.append(None)
                continue
            src, dst = self._rank[m.src], self._rank[m.dst]
            ids.append(int(world.net.Send(src, dst, (m.bits + 7) // 8, start_ns)))
        world.run_round(deadline_ns)

        results = []
        for m, start_ns, flow in zip(messages, starts_ns, ids, strict=True):
            i, j = state.index(m.src), state.index(m.dst)
            rate_bps, loss = float(state.rate_bps[i, j]), float(state.loss[i, j])
            start = start_ns * 1e-9
            if flow is None:
                finish_ns, got_bits = start_ns, 0
            else:
                finish_ns = int(world.net.FinishNs(flow))
                got_bits = min(m.bits, 8 * int(world.net.Received(flow)))
            delivered = 0 <= finish_ns <= deadline_ns
            finish = finish_ns * 1e-9 if finish_ns >= 0 else math.inf
            elapsed = finish - start
            results.append(
                TransferResult(
                    src=m.src,
                    dst=m.dst,
                    bits=m.bits,
                    start_s=start,
                    finish_s=finish,
                    rate_bps=rate_bps,
                    loss=loss,
                    delivered=delivered,
                    delivered_bits=m.bits if delivered else got_bits,
                    goodput_bps=m.bits / elapsed if delivered and elapsed > 0 else 0.0,
                )
            )
        return results
