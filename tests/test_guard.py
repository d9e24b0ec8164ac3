"""A run whose process dies hard (as on an ns-3 abort) is marked interrupted, not left running."""

import json
import os

import pytest

from cosim.engine.guard import RunCrashed, run_guarded
from cosim.engine.simulation import Simulation, run_scenario
from cosim.scenario import parse_scenario


def run_then_abort_in_round_two(scenario, out_dir, on_round=None):
    """Runs in the spawned child: the engine aborts the process during round 2."""
    original = Simulation._train_and_exchange

    def train_and_exchange(self, r, *args):
        if r == 2:
            os.abort()
        return (yield from original(self, r, *args))

    Simulation._train_and_exchange = train_and_exchange
    return run_scenario(scenario, out_dir, on_round=on_round)


def test_an_aborted_run_is_marked_interrupted(tiny_scenario, tmp_path) -> None:
    scenario = parse_scenario(tiny_scenario)
    rounds_seen = []
    with pytest.raises(RunCrashed, match="SIGABRT"):
        run_guarded(
            scenario,
            tmp_path / "run",
            on_round=lambda info: rounds_seen.append(info.round),
            target=run_then_abort_in_round_two,
        )
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert "SIGABRT" in manifest["reason"]
    assert rounds_seen == [0, 1]
    assert not list((tmp_path / "run").glob("*.parquet"))


def test_a_guarded_run_equals_an_in_process_run(tiny_scenario, tmp_path) -> None:
    scenario = parse_scenario(tiny_scenario)
    guarded = run_guarded(scenario, tmp_path / "a")
    direct = run_scenario(scenario, tmp_path / "b")
    assert guarded == direct
    for table in ("rounds", "transfers", "events", "evaluations"):
        assert (tmp_path / "a" / f"{table}.parquet").read_bytes() == (
            tmp_path / "b" / f"{table}.parquet"
        ).read_bytes()
