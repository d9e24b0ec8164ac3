"""An interrupted run keeps what it wrote and says so."""

import json

import pyarrow.parquet as pq
import pytest

from cosim.engine.simulation import RoundInfo, Simulation, run_scenario
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


def test_a_run_stopped_while_saving_its_state_is_not_complete(tiny_scenario, tmp_path, monkeypatch) -> None:
    import safetensors.torch

    scenario = parse_scenario(tiny_scenario)
    saved = safetensors.torch.save_file

    def stop_half_way(tensors, path, *args, **kwargs):
        saved(dict(list(tensors.items())[:1]), path)  # part of the file, then the interrupt
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", stop_half_way)
    with pytest.raises(KeyboardInterrupt):
        run_scenario(scenario, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    # Nothing partial under the names cosim export reads.
    assert not (tmp_path / "run" / "state.safetensors").exists()
    assert not (tmp_path / "run" / "state.json").exists()

    monkeypatch.setattr(safetensors.torch, "save_file", saved)
    run_scenario(scenario, tmp_path / "again")
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert (tmp_path / "again" / "state.safetensors").is_file() and (
        tmp_path / "again" / "state.json"
    ).is_file()
    assert not list((tmp_path / "again").glob("*.partial"))


def test_a_run_interrupted_mid_round_counts_the_rounds_it_finished(
    tiny_scenario, tmp_path, monkeypatch
) -> None:
    scenario = parse_scenario(
        tiny_scenario
        | {
            "training": tiny_scenario["training"] | {"rounds": 5},
            "events": [{"kind": "leave", "device": 1, "round": 3}],
        }
    )
    original = Simulation._train_and_exchange

    def train_and_exchange(self, r, *args):
        if r == 2:
            raise KeyboardInterrupt  # Ctrl-C while round 2 trains
        return (yield from original(self, r, *args))

    monkeypatch.setattr(Simulation, "_train_and_exchange", train_and_exchange)
    with pytest.raises(KeyboardInterrupt):
        run_scenario(scenario, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").column("round").to_pylist()
    assert sorted(set(rounds)) == [0, 1]
    assert manifest["summary"]["rounds"] == 2  # not the round it was in
    # an interrupted run names the events of the rounds it did not reach
    assert manifest["summary"]["events_not_reached"] == [
        {"index": 0, "kind": "leave", "device": 1, "round": 3}
    ]
