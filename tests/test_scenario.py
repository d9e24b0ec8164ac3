"""Scenario files: defaults, --set overrides, every kind of bad input, hashing, event ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cosim.scenario import (
    BuiltinNetwork,
    JoinEvent,
    LeaveEvent,
    LogDistancePropagation,
    Ns3Network,
    Scenario,
    ScenarioError,
    SilentLeaveEvent,
    apply_overrides,
    load_scenario,
    parse_scenario,
    scenario_hash,
)


def error_of(raw: Any) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(raw)
    return str(caught.value)


# --------------------------------------------------------------------------- defaults


def test_defaults_fill_every_section() -> None:
    spec = parse_scenario({"name": "bare"})
    assert spec.seed == 0
    assert spec.network.backend == "builtin"
    assert (spec.network.area.width_m, spec.network.area.height_m) == (200.0, 200.0)
    assert spec.network.mobility.kind == "static"
    assert spec.network.slot_s == 1.0
    assert spec.network.radio.min_rate_bps == 6e6
    assert spec.devices.count == 8
    assert (spec.model.rank, spec.model.slot_capacity, spec.model.alpha) == (8, 16, 16.0)
    assert spec.model.tiny.hidden_size == 128
    assert (spec.training.rounds, spec.training.local_steps, spec.training.silence_timeout_s) == (30, 5, 2.0)
    assert spec.data.samples_per_device == 12
    assert spec.events == ()
    assert spec.device_ids == tuple(range(8))


def test_a_file_with_only_a_name_equals_the_defaults(write_yaml) -> None:
    assert load_scenario(write_yaml("name: bare\n")) == Scenario(name="bare")


def test_quickstart_loads_with_its_values(quickstart) -> None:
    spec = load_scenario(quickstart)
    assert (spec.name, spec.seed, spec.devices.count, spec.training.rounds) == ("quickstart", 7, 8, 45)
    assert isinstance(spec.network, Ns3Network)
    assert (spec.network.backend, spec.network.fidelity, spec.network.routing.model) == (
        "ns3",
        "analytic",
        "none",
    )
    assert spec.network.slot_s == 4.0
    assert spec.network.area.width_m == 80.0
    assert spec.resolved_events() == (
        LeaveEvent(kind="leave", device=3, round=20),
        JoinEvent(kind="join", device=8, round=30),
    )
    assert spec.device_ids == tuple(range(9))


def test_the_builtin_quickstart_is_the_quickstart_on_the_builtin_network(quickstart) -> None:
    spec = load_scenario(quickstart)
    builtin = load_scenario(quickstart.with_name("quickstart_builtin.yaml"))
    assert isinstance(builtin.network, BuiltinNetwork)
    assert builtin.network.area.width_m == 120.0
    assert builtin.model_copy(update={"name": spec.name, "network": spec.network}) == spec


def test_a_scenario_is_frozen() -> None:
    spec = Scenario(name="x")
    with pytest.raises(ValidationError):
        spec.seed = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- overrides


def test_overrides_reach_nested_fields_and_list_items(quickstart) -> None:
    spec = load_scenario(
        quickstart,
        [
            "training.rounds=10",
            "network.tx_power_dbm=20",
            "events.0.round=3",
            "events.1.round=5",
            "model.tiny.num_heads=8",
        ],
    )
    assert spec.training.rounds == 10
    assert isinstance(spec.network, Ns3Network)
    assert spec.network.tx_power_dbm == 20.0
    assert (spec.model.tiny.num_heads, spec.model.tiny.hidden_size) == (8, 128)
    assert spec.resolved_events() == (
        LeaveEvent(kind="leave", device=3, round=3),
        JoinEvent(kind="join", device=8, round=5),
    )
    # Untouched neighbours of an overridden field keep the file's values.
    assert spec.network.propagation == LogDistancePropagation(exponent=3.0)
    assert spec.training.local_steps == 5


def test_override_values_are_parsed_as_yaml() -> None:
    raw = {"name": "x", "training": {"rounds": 4}}
    out = apply_overrides(
        raw,
        [
            "training.rounds=7",
            "training.learning_rate=0.5",
            "training.optimizer=sgd",
            "model.target_modules=[q_proj, v_proj]",
            "events=[{kind: join, round: 1}]",
            "data.flag=true",
            "data.nothing=null",
            "data.empty=",
            "data.text=hello world",
            "data.mapping=a: 1",
        ],
    )
    assert out == {
        "name": "x",
        "training": {"rounds": 7, "learning_rate": 0.5, "optimizer": "sgd"},
        "model": {"target_modules": ["q_proj", "v_proj"]},
        "events": [{"kind": "join", "round": 1}],
        "data": {"flag": True, "nothing": None, "empty": "", "text": "hello world", "mapping": {"a": 1}},
    }
    assert raw == {"name": "x", "training": {"rounds": 4}}, "the input must not be modified"


def test_yaml_typed_overrides_validate_to_typed_fields(quickstart) -> None:
    spec = load_scenario(
        quickstart,
        ["model.target_modules=[q_proj, v_proj]", "training.optimizer=sgd", "devices.heterogeneity=0"],
    )
    assert spec.model.target_modules == ("q_proj", "v_proj")
    assert spec.training.optimizer == "sgd"
    assert spec.devices.heterogeneity == 0.0


def test_an_override_creates_missing_sections() -> None:
    assert apply_overrides({"name": "x"}, ["network.radio.fading=none"]) == {
        "name": "x",
        "network": {"radio": {"fading": "none"}},
    }


def test_a_later_override_wins(quickstart) -> None:
    spec = load_scenario(quickstart, ["training.rounds=10", "training.rounds=60"])
    assert spec.training.rounds == 60


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("events.5.round=1", "--set 'events.5.round=1': events.5 needs an index 0..1"),
        ("events.x.round=1", "--set 'events.x.round=1': events.x needs an index 0..1"),
        ("events.2=1", "--set 'events.2=1': events.2 needs an index 0..1"),
        ("seed.x=1", "--set 'seed.x=1': seed is a value, not a section"),
        ("training..rounds=1", "--set 'training..rounds=1': empty field name in 'training..rounds'"),
        ("=1", "--set '=1': empty field name in ''"),
        ("training.rounds", "--set 'training.rounds': expected the form a.b.c=value"),
        ("training.rounds=[1", "--set 'training.rounds=[1': the value is not valid YAML"),
    ],
)
def test_bad_overrides_say_what_is_wrong(quickstart, override: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(quickstart, [override])
    assert str(caught.value).startswith(message)


# --------------------------------------------------------------------------- bad input


def test_every_bad_input_raises_a_scenario_error_naming_the_field(bad_input) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(bad_input.path, bad_input.overrides)
    message = str(caught.value)
    for fragment in bad_input.fragments:
        assert fragment in message
    assert message.startswith((f"{bad_input.path}: ", f"{bad_input.path} with --set ", "--set "))


def test_an_override_of_an_aliased_item_changes_that_item_only(write_yaml) -> None:
    path = write_yaml("name: t\ntraining: {rounds: 8}\nevents: [&j {kind: join, round: 2}, *j]\n")
    spec = load_scenario(path, ["events.1.round=4"])
    assert [(e.kind, e.round) for e in spec.events] == [("join", 2), ("join", 4)]


def test_a_top_level_that_is_not_a_mapping_is_rejected(write_yaml) -> None:
    path = write_yaml("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match=r": the top level must be a mapping of sections, got list$"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match=r"the top level must be a mapping of sections"):
        load_scenario(path, ["seed=1"])


def test_a_path_that_cannot_be_read_is_named(tmp_path, monkeypatch) -> None:
    too_long = tmp_path / ("a" * 300 + ".yaml")
    with pytest.raises(ScenarioError, match=r"aaa\.yaml: cannot be read \(File name too long\)$"):
        load_scenario(too_long)
    path = tmp_path / "s.yaml"
    path.write_text("name: s\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ScenarioError, match=r"s\.yaml: cannot be read \(Permission denied\)$"):
        load_scenario(path)


def test_a_directory_is_not_a_scenario_file(tmp_path) -> None:
    with pytest.raises(ScenarioError, match=r": is a directory, not a scenario file$"):
        load_scenario(tmp_path)


def test_a_comment_only_file_is_empty(write_yaml) -> None:
    with pytest.raises(ScenarioError, match=r"the file is empty"):
        load_scenario(write_yaml("# nothing here\n"))


def test_a_binary_file_is_not_a_scenario(tmp_path) -> None:
    path = tmp_path / "blob.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ScenarioError, match=r"not a text file \(UTF-8 expected\)"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (
            {"name": "x", "events": [{"kind": "leave", "device": 1}]},
            "give exactly one of 'round' or 'time_s'",
        ),
        (
            {
                "name": "x",
                "events": [
                    {"kind": "leave", "device": 1, "round": 1},
                    {"kind": "leave_silent", "device": 1, "time_s": 2.0},
                ],
            },
            "events: a device leaves once; device 1 in events.0, events.1",
        ),
        (
            {
                "name": "x",
                "devices": {"count": 3},
                "network": {"backend": "builtin", "placement": {"kind": "explicit", "positions_m": [[0, 0]]}},
            },
            "network.placement.positions_m: 1 positions for 3 devices; give one [x, y] per device",
        ),
        (
            {
                "name": "x",
                "network": {"backend": "builtin", "placement": {"kind": "grid", "positions_m": [[0, 0]]}},
            },
            "network.placement: positions_m is only allowed with kind 'explicit', not 'grid'",
        ),
        ({"name": "x", "model": {"layer_groups": 3}}, "layer_groups (3) must be <= the number of blocks (2)"),
        (
            {"name": "x", "model": {"tiny": {"hidden_size": 32, "num_heads": 3}, "slot_capacity": 4}},
            "model.tiny: hidden_size (32) must be divisible by num_heads (3)",
        ),
        ({"name": "bad name!"}, "name: a name is also a directory name; allowed: letters, digits"),
        (
            {"name": "x", "training": {"learning_rate": float("nan")}},
            "training.learning_rate: Input should be a finite number",
        ),
        ({"name": "x", "devices": {"count": 2.5}}, "devices.count: Input should be a valid integer"),
        (
            {"name": "x", "events": [{"kind": "explode", "round": 1}]},
            "events.0.kind: unknown kind; allowed: 'join', 'leave', 'leave_silent' (got 'explode')",
        ),
        ({"seed": 1}, "name: Field required"),
    ],
    ids=[
        "no-trigger",
        "leaves-twice",
        "too-few-positions",
        "positions-without-explicit",
        "layer-groups",
        "heads",
        "name-pattern",
        "nan",
        "fractional-count",
        "unknown-event-kind",
        "missing-name",
    ],
)
def test_contradictions_are_rejected(raw: dict[str, Any], fragment: str) -> None:
    assert fragment in error_of(raw)


def test_a_join_with_the_right_explicit_id_is_accepted() -> None:
    spec = parse_scenario(
        {"name": "x", "devices": {"count": 3}, "events": [{"kind": "join", "device": 3, "round": 1}]}
    )
    assert spec.resolved_events() == (JoinEvent(kind="join", device=3, round=1),)


def test_a_newcomer_may_leave_later() -> None:
    spec = parse_scenario(
        {
            "name": "x",
            "devices": {"count": 3},
            "events": [{"kind": "join", "round": 1}, {"kind": "leave", "device": 3, "round": 2}],
        }
    )
    assert spec.device_ids == (0, 1, 2, 3)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"name": "x", "events": [{"kind": "leave", "device": 1, "round": 1, "time_s": 2.0}]},
            "events.0: give exactly one of 'round' or 'time_s'",
        ),
        (
            {"name": "x", "events": [{"kind": "join", "round": 1, "time_s": 2.0}]},
            "events.0: give exactly one of 'round' or 'time_s'",
        ),
        (
            {
                "name": "x",
                "network": {
                    "backend": "builtin",
                    "mobility": {"kind": "random_waypoint", "speed_min_mps": 2.0, "speed_max_mps": 1.0},
                },
            },
            "network.mobility: speed_max_mps (1.0) must be >= speed_min_mps (2.0)",
        ),
    ],
    ids=["leave", "join", "random-waypoint"],
)
def test_the_union_tag_is_dropped_from_a_path_that_ends_with_it(raw: dict[str, Any], expected: str) -> None:
    assert error_of(raw).splitlines()[1] == expected


@pytest.mark.parametrize(
    ("raw", "allowed"),
    [
        ({"name": "x", "network": {"area": {"width_m": 30.0, "height_m": 30.0}}}, "'builtin'"),
        ({"name": "x", "network": {"backend": "builtin", "mobility": {}}}, "'static'"),
    ],
    ids=["network", "mobility"],
)
def test_a_section_without_its_tag_uses_the_default_or_lists_the_allowed_tags(
    raw: dict[str, Any], allowed: str
) -> None:
    try:
        spec = parse_scenario(raw)
    except ScenarioError as err:
        assert allowed in str(err)
    else:
        assert spec.network.backend == "builtin"
        assert spec.network.mobility.kind == "static"


# --------------------------------------------------------------------------- hashing


def test_the_hash_is_sha256_of_the_canonical_resolved_json() -> None:
    spec = Scenario(name="x")
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert scenario_hash(spec) == hashlib.sha256(text.encode()).hexdigest()


def test_equal_scenarios_hash_equal(tiny_scenario: dict[str, Any], write_yaml) -> None:
    from_dict = parse_scenario(tiny_scenario)
    from_file = load_scenario(write_yaml(tiny_scenario))
    explicit_defaults = dict(tiny_scenario, seed=3, correction={"policy": "none"}, events=[])
    assert scenario_hash(from_dict) == scenario_hash(from_file)
    assert scenario_hash(from_dict) == scenario_hash(parse_scenario(explicit_defaults))
    assert scenario_hash(Scenario(name="x")) == scenario_hash(parse_scenario({"name": "x", "seed": 0}))


@pytest.mark.parametrize(
    "override",
    ["seed=4", "network.radio.tx_power_dbm=15", "training.rounds=5", "events=[{kind: join, round: 1}]"],
)
def test_a_changed_field_changes_the_hash(tiny_scenario: dict[str, Any], override: str) -> None:
    changed = parse_scenario(apply_overrides(tiny_scenario, [override]))
    assert scenario_hash(changed) != scenario_hash(parse_scenario(tiny_scenario))


# --------------------------------------------------------------------------- events


def test_newcomers_get_the_next_ids_in_file_order() -> None:
    spec = parse_scenario(
        {
            "name": "x",
            "devices": {"count": 4},
            "training": {"rounds": 10},
            "events": [
                {"kind": "join", "round": 5},
                {"kind": "leave", "device": 1, "round": 2},
                {"kind": "leave_silent", "device": 2, "time_s": 0.5},
                {"kind": "join", "round": 3},
            ],
        }
    )
    assert spec.resolved_events() == (
        JoinEvent(kind="join", device=4, round=5),
        LeaveEvent(kind="leave", device=1, round=2),
        SilentLeaveEvent(kind="leave_silent", device=2, time_s=0.5),
        JoinEvent(kind="join", device=5, round=3),
    )
    assert spec.device_ids == (0, 1, 2, 3, 4, 5)
    assert [e.device for e in spec.joins] == [None, None], "resolving must not change the scenario"


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("model.target_modules=[foo_proj]", "model.target_modules.0: Input should be 'q_proj', 'k_proj'"),
        (
            "allocation.precisions_bits=[3]",
            "allocation.precisions_bits.0: Input should be 4, 8, 16 or 32 (got 3)",
        ),
    ],
)
def test_a_sequence_whose_item_fails_is_reported_once(tiny_file, override: str, line: str) -> None:
    with pytest.raises(ScenarioError) as err:
        load_scenario(tiny_file, [override])
    header, *lines = str(err.value).splitlines()
    assert header.endswith("invalid scenario")
    assert len(lines) == 1 and lines[0].startswith(line)
