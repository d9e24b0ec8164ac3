"""The engine on the ns-3 backend: a whole run, reproducible, with a leave and a join."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from cosim.engine.simulation import run_scenario
from cosim.scenario import parse_scenario

pytestmark = pytest.mark.ns3

TABLES = ("rounds", "transfers", "events", "evaluations")


def _ns3_scenario(tiny: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(tiny)
    raw["network"] = {
        "backend": "ns3",
        "area": {"width_m": 40.0, "height_m": 40.0},
        "mobility": {"kind": "random_waypoint", "speed_min_mps": 1.0, "speed_max_mps": 3.0, "pause_s": 0.5},
        "fading": {"model": "nakagami", "m": 1.0},
        "slot_s": 0.5,
    }
    raw["training"] = raw["training"] | {"rounds": 5}
    raw["events"] = [{"kind": "leave", "device": 1, "round": 2}, {"kind": "join", "round": 3}]
    return raw


def test_an_ns3_run_is_reproducible_and_applies_membership(ns, tiny_scenario, tmp_path: Path) -> None:
    scenario = parse_scenario(_ns3_scenario(tiny_scenario))
    first = run_scenario(scenario, tmp_path / "a")
    second = run_scenario(scenario, tmp_path / "b")
    for table in TABLES:
        assert (tmp_path / "a" / f"{table}.parquet").read_bytes() == (
            tmp_path / "b" / f"{table}.parquet"
        ).read_bytes(), table
    assert first == second
    events = pq.read_table(tmp_path / "a" / "events.parquet").to_pylist()
    kinds = [e["kind"] for e in events]
    assert "leave" in kinds and "join" in kinds and "slot_released" in kinds
    transfers = pq.read_table(tmp_path / "a" / "transfers.parquet").to_pylist()
    assert transfers and all(t["rate_bps"] > 0 for t in transfers if t["mcs"] >= 0)
    rounds = pq.read_table(tmp_path / "a" / "rounds.parquet").to_pylist()
    assert {r["device"] for r in rounds if r["round"] >= 2} == {0, 2, 3} | {4}
