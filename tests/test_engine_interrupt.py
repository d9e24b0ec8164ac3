"""An interrupted run keeps what it wrote and says so."""

import json

import pyarrow.parquet as pq
import pytest

from cosim.engine.simulation import RoundInfo, run_scenario
from cosim.scenario import parse_scenario


def test_an_interrupted_run_is_marked_and_keeps_its_rows(tiny_scenario, tmp_path) -> None:
    scenario = parse_scenario(tiny_scenario | {"training": tiny_scenario["training"] | {"rounds": 5}})

    def stop_after_two(info: RoundInfo) -> None:
        if info.round == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_scenario(scenario, tmp_path / "run", on_round=stop_after_two)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").column("round").to_pylist()
    assert sorted(set(rounds)) == [0, 1]
    assert not (tmp_path / "run" / "state.safetensors").exists()
