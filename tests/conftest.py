"""Shared fixtures: a tiny scenario that runs in well under a second."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

# The tiny model gains nothing from intra-op threads, and on a busy machine the
# OpenMP workers spin-wait and make a half-second run take tens of seconds.  Set
# before torch is imported (here or in a `cosim` subprocess, which inherits it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_SCENARIO: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "network": {"backend": "builtin", "area": {"width_m": 30.0, "height_m": 30.0}},
    "devices": {"count": 4},
    "model": {
        "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2},
        "rank": 4,
        "slot_capacity": 8,
    },
    "data": {
        "samples_per_device": 4,
        "shared_facts": 2,
        "rule_examples_per_device": 4,
        "test_questions": 8,
    },
    "training": {"rounds": 4, "local_steps": 2, "batch_size": 4},
}

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
QUICKSTART_BUILTIN = REPO / "scenarios" / "quickstart_builtin.yaml"


def _builtin_network(width_m: float, height_m: float) -> str:
    """``network=...``: quickstart_builtin.yaml's network section in a smaller area, as a --set."""
    network = yaml.safe_load(QUICKSTART_BUILTIN.read_text(encoding="utf-8"))["network"]
    network["area"] = {"width_m": width_m, "height_m": height_m}
    return "network=" + yaml.safe_dump(network, default_flow_style=True, width=10_000).strip()


# The same, as `--set` overrides of scenarios/quickstart.yaml (whose events are a leave of
# device 3 and a join).  The quickstart's network is ns-3's; unmarked tests must not import
# ns-3, so its network section is replaced by quickstart_builtin.yaml's (same learning).
TINY_OVERRIDES: list[str] = [
    _builtin_network(30.0, 30.0),
    "devices.count=4",
    "model.tiny={hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2}",
    "model.rank=4",
    "model.slot_capacity=8",
    "data.samples_per_device=4",
    "data.shared_facts=2",
    "data.rule_examples_per_device=4",
    "data.test_questions=8",
    "training.rounds=4",
    "training.local_steps=2",
    "training.batch_size=4",
    "events.0.round=2",
    "events.1.round=3",
]


@pytest.fixture(scope="session")
def quickstart() -> Path:
    """scenarios/quickstart.yaml."""
    return QUICKSTART


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """--set overrides that make scenarios/quickstart.yaml tiny (leave at round 2, join at 3)."""
    return list(TINY_OVERRIDES)


@pytest.fixture
def tiny_scenario() -> dict[str, Any]:
    """A fresh copy of the tiny scenario (4 devices, 4 rounds, no events), as a raw dict."""
    return copy.deepcopy(TINY_SCENARIO)


@pytest.fixture
def write_yaml(tmp_path: Path):
    """``write_yaml(raw_or_text, name="scenario.yaml")`` writes a scenario file into tmp_path."""

    def write(content: dict[str, Any] | str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), encoding="utf-8")
        return path

    return write


@pytest.fixture
def tiny_file(write_yaml, tiny_scenario: dict[str, Any]) -> Path:
    """The tiny scenario written to a YAML file."""
    return write_yaml(tiny_scenario)


# --------------------------------------------------------------------------- bad inputs

# id -> (file: "tiny" for the tiny scenario, None for no file, else the file's text;
#        --set overrides; fragments the one error message must contain)
BAD_INPUTS: dict[str, tuple[str | None, list[str], list[str]]] = {
    "malformed_yaml": (
        "name: t\n  bad: indent\n",
        [],
        ["malformed YAML at line 2, column 6", "mapping values are not allowed here"],
    ),
    "unknown_field": (
        "tiny",
        ["training.epochs=3"],
        ["training.epochs: unknown field; allowed: rounds, local_steps", "(got 3)"],
    ),
    "wrong_type": (
        "tiny",
        ["training.rounds=abc"],
        ["training.rounds: Input should be a valid integer", "(got 'abc')"],
    ),
    "out_of_range": (
        "tiny",
        ["network.radio.per_target=1.5"],
        ["network.radio.per_target: Input should be less than 1 (got 1.5)"],
    ),
    "nonpositive_share": (
        "tiny",
        ["correction.tolerances.consensus_share=0"],
        ["correction.tolerances.consensus_share: Input should be greater than 0 (got 0)"],
    ),
    "unknown_backend": (
        "tiny",
        ["network.backend=ns4"],
        ["network.backend: unknown backend; allowed: 'builtin', 'ns3' (got 'ns4')"],
    ),
    "unknown_mobility": (
        "tiny",
        ["network.mobility={kind: teleport}"],
        ["network.mobility.kind: unknown kind; allowed: 'static', 'random_waypoint' (got 'teleport')"],
    ),
    "event_unknown_device": (
        "tiny",
        ["events=[{kind: leave, device: 7, round: 1}]"],
        ["events.0.device: device 7 does not exist; allowed: 0..3"],
    ),
    "join_wrong_id": (
        "tiny",
        ["events=[{kind: leave, device: 0, round: 1}, {kind: join, device: 9, round: 2}]"],
        ["events.1.device: a newcomer gets the next unused id; expected 4, got 9"],
    ),
    "event_round_past_end": (
        "tiny",
        ["events=[{kind: leave, device: 1, round: 4}]"],
        ["events.0.round: 4 is past the last round; allowed: 0..3"],
    ),
    "capacity_wider_than_layer": (
        "tiny",
        ["model.slot_capacity=9"],
        ["slot_capacity * rank = 9 * 4 = 36 exceeds the input width 32", "allowed: slot_capacity <= 8"],
    ),
    "too_few_slots": (
        "tiny",
        ["model.slot_capacity=3"],
        ["model.slot_capacity: 3 slots cannot hold the 4 devices", "allowed: >= 4"],
    ),
    "model_dir_missing": (
        "tiny",
        ["model.base=no/such/model"],
        [
            "model.base: no such model directory (looked for ",
            "no/such/model, from the scenario file's directory); allowed: 'tiny', 'smollm2-135m', or a "
            "local Hugging Face causal-LM directory",
        ],
    ),
    "smollm2_capacity": (
        "tiny",
        ["model.base=smollm2-135m", "model.slot_capacity=145"],
        ["slot_capacity * rank = 145 * 4 = 580 exceeds the input width 576", "allowed: slot_capacity <= 144"],
    ),
    "data_file_missing": (
        "tiny",
        ["data.task=file", "data.file={path: no/such/data.jsonl}"],
        ["data.file.path: no such data file (looked for ", "no/such/data.jsonl, from the scenario file's"],
    ),
    "data_file_needs_section": ("tiny", ["data.task=file"], ["data: task 'file' needs a 'file' section"]),
    "missing_file": (None, [], ["no such scenario file"]),
    "empty_file": ("", [], ["the file is empty; a scenario needs at least 'name'"]),
    "bad_override": ("tiny", ["training.rounds"], ["--set 'training.rounds': expected the form a.b.c=value"]),
    "boolean_for_a_count": (
        "tiny",
        ["training.rounds=true"],
        ["training.rounds: a number is needed, not a boolean (got True)"],
    ),
    "boolean_for_a_device": (
        "tiny",
        ["events=[{kind: leave, device: yes, round: 1}]"],
        ["events.0.device: a number is needed, not a boolean (got True)"],
    ),
    "duplicate_key": (
        "name: tiny\ntraining: {rounds: 3}\ntraining: {local_steps: 2}\n",
        [],
        ["malformed YAML at line 3, column 1: duplicate key 'training' (first given at line 2)"],
    ),
    "everyone_leaves": (
        "tiny",
        [
            "events=[{kind: leave, device: 0, round: 1}, {kind: leave, device: 1, round: 1}, "
            "{kind: leave, device: 2, round: 2}, {kind: leave, device: 3, round: 2}]"
        ],
        ["events: every one of the 4 devices leaves; at least one must stay to the end"],
    ),
    "nobody_left_before_a_join": (
        "tiny",
        [
            "events=[{kind: leave, device: 0, round: 1}, {kind: leave, device: 1, round: 1}, "
            "{kind: leave, device: 2, round: 1}, {kind: leave, device: 3, round: 1}, {kind: join, round: 2}]"
        ],
        ["events: no device is left after the events of round 1; at least one must stay"],
    ),
    "position_outside_the_area": (
        "tiny",
        ["network.placement={kind: explicit, positions_m: [[0, 0], [1000, 5], [3, 3], [4, 4]]}"],
        ["network.placement.positions_m.1: [1000, 5] lies outside the area; allowed: 0 <= x <= "],
    ),
    "override_named": (
        "tiny",
        ["training.rounds=abc"],
        ["bad.yaml with --set training.rounds=abc: invalid scenario"],
    ),
    "date_with_an_override": (
        "name: tiny\nseed: 2024-01-01\n",
        ["training.rounds=3"],
        ["seed: Input should be a valid integer (got 2024-01-01, which YAML reads as a date)"],
    ),
    "self_referring_alias_with_an_override": (
        "name: tiny\nnotes: &a [*a]\n",
        ["training.rounds=3"],
        ["notes.0: a YAML alias inside its own anchor makes a loop"],
    ),
    "bandwidth_without_an_mcs_table": (
        "tiny",
        ["network.radio.bandwidth_hz=20"],
        ["network.radio.bandwidth_hz: bandwidth_hz 20.0 has no 802.11ax MCS table; allowed: 20 MHz (2e+07)"],
    ),
    "frequency_in_ghz": (
        "tiny",
        ["network.radio.frequency_hz=5.18"],
        ["network.radio.frequency_hz: Input should be greater than or equal to 100000000 (got 5.18)"],
    ),
    "min_rate_above_every_mcs": (
        "tiny",
        ["network.radio.min_rate_bps=2e8"],
        ["min_rate_bps: 2e+08 is above the highest PHY rate at bandwidth_hz 2e+07 (1.43382e+08)"],
    ),
    "odd_head_size": (
        "tiny",
        ["model.tiny.hidden_size=12", "model.tiny.num_heads=4", "model.rank=2"],
        ["the head size hidden_size / num_heads = 12 / 4 = 3 must be even (rotary position embeddings"],
    ),
    "digits_for_a_name": (
        "tiny",
        ["name=007"],
        ["name: Input should be a valid string (got 7, which YAML reads as a number; put the value in"],
    ),
    "yes_for_a_name": (
        "name: yes\n",
        [],
        ["name: Input should be a valid string (got True, which YAML reads as true or false; put the value"],
    ),
    "number_for_a_section": (
        "tiny",
        ["training=5"],
        ["training: should be a section: a mapping of fields (got 5)"],
    ),
    "number_for_a_list": (
        "tiny",
        ["events=3"],
        ["events: should be a list (got 3)"],
    ),
    "name_not_a_directory_name": (
        "tiny",
        ["name=my run"],
        [
            "name: a name is also a directory name; allowed: letters, digits, '_', '.' and '-', starting "
            "with a letter or digit (got 'my run')"
        ],
    ),
    "leave_before_join": (
        "tiny",
        ["events=[{kind: join, round: 2}, {kind: leave, device: 4, round: 1}]"],
        ["events.1.round: device 4 leaves at round 1 but joins at round 2; allowed: >= 2"],
    ),
}


class BadInput:
    def __init__(self, path: Path, overrides: list[str], fragments: list[str]) -> None:
        self.path = path
        self.overrides = overrides
        self.fragments = fragments

    def set_args(self) -> list[str]:
        return [arg for text in self.overrides for arg in ("--set", text)]


@pytest.fixture(params=sorted(BAD_INPUTS))
def bad_input(request: pytest.FixtureRequest, tmp_path: Path) -> BadInput:
    """Every kind of bad input: a scenario file, its --set overrides and the expected message."""
    content, overrides, fragments = BAD_INPUTS[request.param]
    path = tmp_path / "bad.yaml"
    if content == "tiny":
        path.write_text(yaml.safe_dump(TINY_SCENARIO), encoding="utf-8")
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    return BadInput(path, overrides, fragments)


# --------------------------------------------------------------------------- runs


class TinyRun:
    """A finished run of the tiny scenario: its directory, the simulation and the tables as rows."""

    def __init__(self, out_dir: Path, sim: Any, summary: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.sim = sim
        self.summary = summary
        self._tables: dict[str, list[dict[str, Any]]] = {}

    def rows(self, table: str) -> list[dict[str, Any]]:
        import pyarrow.parquet as pq

        if table not in self._tables:
            self._tables[table] = pq.read_table(self.out_dir / f"{table}.parquet").to_pylist()
        return self._tables[table]


@pytest.fixture(scope="session")
def run_tiny(tmp_path_factory: pytest.TempPathFactory):
    """``run_tiny(*overrides, fresh=False)``: the tiny scenario with --set overrides, run once per
    session (or again into a new directory with ``fresh=True``)."""
    from cosim.engine.simulation import Simulation
    from cosim.scenario import apply_overrides, parse_scenario

    cache: dict[tuple[str, ...], TinyRun] = {}

    def run(*overrides: str, fresh: bool = False) -> TinyRun:
        if not fresh and overrides in cache:
            return cache[overrides]
        spec = parse_scenario(apply_overrides(TINY_SCENARIO, list(overrides)))
        out_dir = tmp_path_factory.mktemp("run")
        sim = Simulation(spec, out_dir)
        summary = sim.run()
        result = TinyRun(out_dir, sim, summary)
        if not fresh:
            cache[overrides] = result
        return result

    return run


# --------------------------------------------------------------------------- real-model stand-ins


def save_tiny_model_dir(directory: Path, *, safetensors: bool = True) -> Path:
    """A tiny Llama causal LM and a byte-level tokenizer saved as a Hugging Face model directory.

    The tokenizer is built offline with ``tokenizers`` (256 byte symbols, no merges), so every
    text encodes; the model has random weights (seed 0).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)} | {"<s>": 256, "</s>": 257}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=257,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if not safetensors:  # the same weights as a pickle file, as older checkpoints ship them
        from safetensors.torch import load_file

        weights = directory / "model.safetensors"
        torch.save(load_file(str(weights)), directory / "pytorch_model.bin")
        weights.unlink()
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny local Hugging Face model directory (see :func:`save_tiny_model_dir`), once per session."""
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))
