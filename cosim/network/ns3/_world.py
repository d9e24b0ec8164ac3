"""The ns-3 side of the backend: nodes, their mobility models, the propagation chain, the clock.

Everything ns-3 lives here and in :mod:`cosim.network.ns3._kernel`; the backend
(:mod:`cosim.network.ns3.backend`) hands in plain values and gets NumPy arrays back.

ns-3 has one simulator per process.  A :class:`World` is one simulation on it: it
starts with ``Simulator::Destroy()``, fixes the random streams, builds a Node with a
mobility model per device, and can only move its clock forward.  Building another
World (of this or another backend) destroys the previous one's simulation, so a World
checks, before each use, that it is still the newest one (:func:`is_current`); the
backend rebuilds it otherwise (and when asked for an earlier time than the clock).
Rebuilding is deterministic: the same spec, seed and query times give the same answers.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from cosim.network.ns3._kernel import kernel
from cosim.network.ns3._loader import cpp, load_ns
from cosim.scenario import (
    FriisPropagation,
    GaussMarkovMobility,
    LogDistancePropagation,
    NakagamiFading,
    Ns3Network,
    RandomWaypointMobility,
    ThreeGppPropagation,
    ThreeLogDistancePropagation,
)

__all__ = ["World", "free_space_loss_db", "is_current"]

SPEED_OF_LIGHT_MPS = 299_792_458.0

# Stream numbers handed to AssignStreams: disjoint ranges per use.
_MOBILITY_STREAM = 0  # + 16 * rank (random waypoint uses 4, Gauss-Markov 6)
_PROPAGATION_STREAM = 1 << 30
_CONDITION_STREAM = (1 << 30) + 1000
_FADING_STREAM = 1 << 40  # + 2 * time in ns (Nakagami uses 2)

_THREE_GPP_TYPES = {
    "3gpp_indoor_office": (
        "ThreeGppIndoorOfficePropagationLossModel",
        "ThreeGppIndoorOpenOfficeChannelConditionModel",
    ),
    "3gpp_umi": (
        "ThreeGppUmiStreetCanyonPropagationLossModel",
        "ThreeGppUmiStreetCanyonChannelConditionModel",
    ),
    "3gpp_uma": ("ThreeGppUmaPropagationLossModel", "ThreeGppUmaChannelConditionModel"),
    "3gpp_rma": ("ThreeGppRmaPropagationLossModel", "ThreeGppRmaChannelConditionModel"),
}
_CONDITION_TYPES = {"los": "AlwaysLosChannelConditionModel", "nlos": "NeverLosChannelConditionModel"}

# The generation of the newest World in this process.  It mirrors state that ns-3
# itself keeps per process (its one Simulator), so it cannot live in an object.
_generations = itertools.count(1)
_current = [0]


def is_current(generation: int) -> bool:
    """True while no newer World (simulation) has been built in this process."""
    return _current[0] == generation


def free_space_loss_db(distance_m: float, frequency_hz: float) -> float:
    """Friis free-space loss ``20 log10(4 pi d f / c)`` in dB (the builtin backend's FSPL)."""
    return 20.0 * math.log10(4.0 * math.pi * distance_m * frequency_hz / SPEED_OF_LIGHT_MPS)


def _seed_streams(ns: Any, seed: int) -> None:
    # MRG32k3a needs a non-zero seed, so the scenario seed selects the run (ns-3's advice).
    ns.RngSeedManager.SetSeed(1)
    ns.RngSeedManager.SetRun(seed)
    ns.RngSeedManager.ResetNextStreamIndex()


def _propagation(ns: Any, spec: Ns3Network) -> Any:
    model = spec.propagation
    frequency_hz = spec.frequency_hz
    if isinstance(model, LogDistancePropagation):
        loss = ns.CreateObject[ns.LogDistancePropagationLossModel]()
        reference_db = model.reference_loss_db
        if reference_db is None:
            reference_db = free_space_loss_db(model.reference_distance_m, frequency_hz)
        loss.SetAttribute("Exponent", ns.DoubleValue(model.exponent))
        loss.SetAttribute("ReferenceDistance", ns.DoubleValue(model.reference_distance_m))
        loss.SetAttribute("ReferenceLoss", ns.DoubleValue(reference_db))
        return loss
    if isinstance(model, ThreeLogDistancePropagation):
        loss = ns.CreateObject[ns.ThreeLogDistancePropagationLossModel]()
        reference_db = model.reference_loss_db
        if reference_db is None:
            reference_db = free_space_loss_db(model.distance0_m, frequency_hz)
        for name, value in (
            ("Distance0", model.distance0_m),
            ("Distance1", model.distance1_m),
            ("Distance2", model.distance2_m),
            ("Exponent0", model.exponent0),
            ("Exponent1", model.exponent1),
            ("Exponent2", model.exponent2),
            ("ReferenceLoss", reference_db),
        ):
            loss.SetAttribute(name, ns.DoubleValue(value))
        return loss
    if isinstance(model, FriisPropagation):
        loss = ns.CreateObject[ns.FriisPropagationLossModel]()
        loss.SetAttribute("Frequency", ns.DoubleValue(frequency_hz))
        loss.SetAttribute("SystemLoss", ns.DoubleValue(model.system_loss))
        loss.SetAttribute("MinLoss", ns.DoubleValue(model.min_loss_db))
        return loss
    assert isinstance(model, ThreeGppPropagation)
    loss_type, probabilistic_condition = _THREE_GPP_TYPES[model.model]
    condition_type = _CONDITION_TYPES.get(model.channel_condition, probabilistic_condition)
    condition = ns.CreateObject[getattr(ns, condition_type)]()
    condition.AssignStreams(_CONDITION_STREAM)
    loss = ns.CreateObject[getattr(ns, loss_type)]()
    loss.SetAttribute("Frequency", ns.DoubleValue(frequency_hz))
    loss.SetAttribute("ShadowingEnabled", ns.BooleanValue(model.shadowing))
    loss.SetAttribute("BuildingPenetrationLossesEnabled", ns.BooleanValue(False))
    loss.SetAttribute("ChannelConditionModel", ns.PointerValue(condition))
    loss.AssignStreams(_PROPAGATION_STREAM)
    return loss


def _mobility(ns: Any, spec: Ns3Network, rank: int, start_m: np.ndarray) -> Any:
    mobility = spec.mobility
    width_m, height_m = spec.area.width_m, spec.area.height_m
    if isinstance(mobility, RandomWaypointMobility):
        model = ns.CreateObject[ns.RandomWaypointMobilityModel]()
        waypoints = ns.CreateObject[ns.RandomRectanglePositionAllocator]()
        waypoints.SetAttribute("X", ns.StringValue(f"ns3::UniformRandomVariable[Min=0|Max={width_m!r}]"))
        waypoints.SetAttribute("Y", ns.StringValue(f"ns3::UniformRandomVariable[Min=0|Max={height_m!r}]"))
        waypoints.SetAttribute("Z", ns.DoubleValue(spec.height_m))
        speed = f"ns3::UniformRandomVariable[Min={mobility.speed_min_mps!r}|Max={mobility.speed_max_mps!r}]"
        model.SetAttribute("Speed", ns.StringValue(speed))
        model.SetAttribute(
            "Pause", ns.StringValue(f"ns3::ConstantRandomVariable[Constant={mobility.pause_s!r}]")
        )
        model.SetAttribute("PositionAllocator", ns.PointerValue(waypoints))
    elif isinstance(mobility, GaussMarkovMobility):
        model = ns.CreateObject[ns.GaussMarkovMobilityModel]()
        z = spec.height_m
        model.SetAttribute("Bounds", ns.BoxValue(ns.Box(0.0, width_m, 0.0, height_m, z, z)))
        model.SetAttribute("TimeStep", ns.TimeValue(ns.NanoSeconds(round(mobility.time_step_s * 1e9))))
        model.SetAttribute("Alpha", ns.DoubleValue(mobility.alpha))
        lo, hi = mobility.mean_speed_min_mps, mobility.mean_speed_max_mps
        model.SetAttribute(
            "MeanVelocity", ns.StringValue(f"ns3::UniformRandomVariable[Min={lo!r}|Max={hi!r}]")
        )
        two_pi = 2.0 * math.pi
        model.SetAttribute(
            "MeanDirection", ns.StringValue(f"ns3::UniformRandomVariable[Min=0|Max={two_pi!r}]")
        )
        model.SetAttribute("MeanPitch", ns.StringValue("ns3::ConstantRandomVariable[Constant=0]"))
        for name, sigma in (
            ("NormalVelocity", mobility.speed_sigma_mps),
            ("NormalDirection", mobility.direction_sigma_rad),
        ):
            variance = sigma * sigma
            model.SetAttribute(
                name, ns.StringValue(f"ns3::NormalRandomVariable[Mean=0|Variance={variance!r}]")
            )
        model.SetAttribute("NormalPitch", ns.StringValue("ns3::NormalRandomVariable[Mean=0|Variance=0]"))
    else:
        model = ns.CreateObject[ns.ConstantPositionMobilityModel]()
    model.AssignStreams(_MOBILITY_STREAM + 16 * rank)
    model.SetPosition(ns.Vector(float(start_m[0]), float(start_m[1]), spec.height_m))
    return model


class World:
    """One ns-3 simulation of every device: Nodes with mobility models, a propagation chain, a clock."""

    def __init__(self, spec: Ns3Network, start_m: np.ndarray, seed: int) -> None:
        ns = self._ns = load_ns()
        self.spec = spec
        self.seed = seed
        ns.Simulator.Destroy()
        _seed_streams(ns, seed)
        self.generation = next(_generations)
        _current[0] = self.generation
        self._moving = spec.mobility.kind != "static"
        self._nodes = []
        self._mobility = cpp().std.vector["ns3::Ptr<ns3::MobilityModel>"]()
        for rank, start in enumerate(start_m):
            node = ns.CreateObject[ns.Node]()
            model = _mobility(ns, spec, rank, start)
            node.AggregateObject(model)
            self._nodes.append(node)
            self._mobility.push_back(model)
        self._loss = _propagation(ns, spec)
        self.clock_ns = 0

    def advance(self, time_ns: int) -> None:
        """Run the simulator up to ``time_ns``; ValueError if that is before the clock."""
        if time_ns < self.clock_ns:
            raise ValueError(f"the ns-3 clock is at {self.clock_ns} ns and cannot go back to {time_ns} ns")
        if time_ns > self.clock_ns and self._moving:
            ns = self._ns
            ns.Simulator.Stop(ns.NanoSeconds(time_ns - self.clock_ns))
            ns.Simulator.Run()
        self.clock_ns = time_ns

    def positions_m(self) -> np.ndarray:
        """(n, 2) positions of every device (in rank order) at the clock."""
        out = np.empty((self._mobility.size(), 2))
        for rank, model in enumerate(self._mobility):
            position = model.GetPosition()
            out[rank] = (position.x, position.y)
        return out

    def rx_power_dbm(self, tx_power_dbm: float, at_ns: int | None = None) -> np.ndarray:
        """(n, n) received power of every pair at the clock, symmetric, -inf on the diagonal.

        With Nakagami fading a fresh fading model is chained for every distinct clock time
        (or ``at_ns``, when given: the packet fidelity asks about static devices at times
        before its clock), on streams numbered by that time: block fading, reproducible,
        one draw per pair.
        """
        ns = self._ns
        fading = self.spec.fading
        if isinstance(fading, NakagamiFading):
            _seed_streams(ns, self.seed)
            nakagami = ns.CreateObject[ns.NakagamiPropagationLossModel]()
            for name in ("m0", "m1", "m2"):
                nakagami.SetAttribute(name, ns.DoubleValue(fading.m))
            block_ns = self.clock_ns if at_ns is None else at_ns
            nakagami.AssignStreams(_FADING_STREAM + 2 * block_ns)
            self._loss.SetNext(nakagami)
        n = self._mobility.size()
        out = np.empty((n, n))
        kernel().rx_power_dbm(self._loss, self._mobility, float(tx_power_dbm), out)
        return out
