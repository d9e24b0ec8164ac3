"""What the installed ns-3 offers the ns3 backend (for ``cosim doctor``)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from cosim.network.ns3._loader import Ns3ImportError, import_seconds, load_ns

__all__ = ["MODELS", "ns3_report"]

MODELS: dict[str, tuple[str, ...]] = {
    "propagation": (
        "LogDistancePropagationLossModel",
        "ThreeLogDistancePropagationLossModel",
        "FriisPropagationLossModel",
        "ThreeGppIndoorOfficePropagationLossModel",
        "ThreeGppUmiStreetCanyonPropagationLossModel",
        "ThreeGppUmaPropagationLossModel",
        "ThreeGppRmaPropagationLossModel",
    ),
    "fading": ("NakagamiPropagationLossModel",),
    "error_rate": ("TableBasedErrorRateModel", "NistErrorRateModel", "YansErrorRateModel"),
    "mobility": ("ConstantPositionMobilityModel", "RandomWaypointMobilityModel", "GaussMarkovMobilityModel"),
    "channel_condition": (
        "AlwaysLosChannelConditionModel",
        "NeverLosChannelConditionModel",
        "ThreeGppIndoorOpenOfficeChannelConditionModel",
        "ThreeGppUmiStreetCanyonChannelConditionModel",
        "ThreeGppUmaChannelConditionModel",
        "ThreeGppRmaChannelConditionModel",
    ),
    "routing": ("olsr::RoutingProtocol", "aodv::RoutingProtocol"),
}
"""ns-3 classes (without ``ns3::``) the backend can use, by role."""


def _creatable(ns: Any, name: str) -> bool:
    tid = ns.TypeId()
    if not ns.TypeId.LookupByNameFailSafe(f"ns3::{name}", tid):
        return False
    try:
        factory = ns.ObjectFactory()
        factory.SetTypeId(tid)
        return bool(factory.Create())
    except Exception:
        return False


def ns3_report() -> dict[str, Any]:
    """Import ns-3 (once per process) and report on it.

    Keys: ``available`` (bool), ``error`` (why not, or None), ``version`` (of the ns3
    package), ``import_s`` (wall-clock seconds of the first import in this process),
    and per role in :data:`MODELS` a mapping from model name to whether an instance could
    be created through its TypeId.
    """
    try:
        version: str | None = importlib.metadata.version("ns3")
    except importlib.metadata.PackageNotFoundError:
        version = None
    report: dict[str, Any] = {"available": False, "error": None, "version": version, "import_s": None}
    try:
        ns = load_ns()
    except Ns3ImportError as err:
        report["error"] = str(err)
        return report
    report["available"] = True
    report["import_s"] = round(import_seconds(), 3)
    for role, names in MODELS.items():
        report[role] = {name: _creatable(ns, name) for name in names}
    return report
