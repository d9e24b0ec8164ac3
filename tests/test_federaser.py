"""Shared (non-orthogonal) adapters and the FedEraser-style unlearning baseline in the engine."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

SHARED = "model.adapters=shared"
LEAVE = "events=[{kind: leave, device: 1, round: 3}]"


def test_with_shared_adapters_a_leave_removes_nothing_from_the_others_models(run_tiny) -> None:
    run = run_tiny(SHARED, LEAVE)
    at = {
        stage: {
            (e["device"], e["split"]): (e["accuracy"], e["loss"])
            for e in run.rows("evaluations")
            if e["round"] == 3 and e["stage"] == stage and e["device"] is not None
        }
        for stage in ("before_event", "after_event")
    }
    assert {d for d, _ in at["after_event"]} == {0, 2, 3}
    for key, value in at["after_event"].items():
        assert value == at["before_event"][key]  # no tombstone: the leaver's updates stay mixed in
    (leave,) = [e for e in run.rows("events") if e["kind"] == "leave"]
    assert json.loads(leave["detail"])["tombstone_from"] == []
    assert not [e for e in run.rows("events") if e["kind"] == "tombstone"]


@pytest.mark.parametrize("interval", [1, 2])
def test_federaser_stores_updates_and_replays_them_calibrated_without_the_leaver(tmp_path, interval) -> None:
    from cosim.engine.simulation import Simulation
    from cosim.scenario import apply_overrides, parse_scenario
    from tests.conftest import TINY_SCENARIO

    overrides = [
        SHARED,
        LEAVE,
        "correction.policy=federaser",
        f"correction.federaser.interval_rounds={interval}",
    ]
    spec = parse_scenario(apply_overrides(TINY_SCENARIO, overrides))
    stored: dict[tuple[int, int], dict[str, float]] = {}

    def snapshot(info: Any) -> None:
        if info.round == 2:  # the last round before the leave
            for entry in sim._history.entries:  # type: ignore[union-attr]
                for d, update in entry.updates.items():
                    stored[(entry.round, d)] = {n: float(t.norm()) for n, t in update.items()}

    sim = Simulation(spec, tmp_path, on_round=snapshot)
    summary = sim.run()
    history = sim._history
    assert history is not None

    stored_rounds = [r for r in range(3) if r % interval == 0]
    assert sorted({r for r, _ in stored}) == stored_rounds
    # Memory: every device's B of every module, float32, per stored round.
    per_device_round = sum(c.shape[2] * c.shape[3] * 4 for c in sim.learner.copies.values())
    # The peak: 4 devices before the leave; 3 devices with the rounds stored since then at the end.
    final = len(history.entries)
    assert final == len(stored_rounds) + sum(1 for r in range(3, 4) if r % interval == 0)
    expected_total = max(4 * len(stored_rounds), 3 * final) * per_device_round
    assert summary["history_bytes"] == expected_total
    assert summary["history_bytes_per_device"] == final * per_device_round
    events = [json.loads(e["detail"]) | {"kind": e["kind"]} for e in sim.trace.rows["events"]]
    (start,) = [e for e in events if e["kind"] == "correction"]
    assert start["replay_rounds"] == len(stored_rounds)
    assert start["history_bytes"] == 4 * len(stored_rounds) * per_device_round
    steps = max(1, round(0.5 * spec.training.local_steps))
    assert start["calibration_steps"] == steps
    (end,) = [e for e in events if e["kind"] == "correction_end"]
    assert end["rounds"] == len(stored_rounds) and end["reason"] == "replayed every stored round"
    assert end["extra_local_steps"] == 3 * steps * len(stored_rounds)
    # The replayed rounds trained the calibration steps; the leaver is gone from the history.
    replayed = [row for row in sim.trace.rows["rounds"] if 3 <= row["round"] < 3 + len(stored_rounds)]
    assert {row["steps"] for row in replayed} == {steps}
    calibrated = {(e.round, d): u for e in history.entries if e.round < 3 for d, u in e.updates.items()}
    assert set(calibrated) == {(r, d) for r in stored_rounds for d in (0, 2, 3)}
    for key, update in calibrated.items():
        for name, t in update.items():
            assert math.isclose(float(t.norm()), stored[key][name], rel_tol=1e-5)
    # Calibration starts from the initial adapter, as retrain does.
    evals = sim.trace.rows["evaluations"]
    initial = {(e["device"], e["split"]): e["loss"] for e in evals if e["stage"] == "initial"}
    for e in evals:
        if e["stage"] == "after_event" and e["device"] is not None:
            assert e["loss"] == pytest.approx(initial[(e["device"], e["split"])], abs=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([SHARED, "correction.policy=priority"], "correction.policy: 'priority' needs orthogonal slots"),
        (["correction.policy=federaser"], "set model.adapters: shared"),
    ],
)
def test_policies_that_do_not_fit_the_adapters_are_refused(tiny_scenario, overrides, message) -> None:
    from cosim.scenario import ScenarioError, apply_overrides, parse_scenario

    with pytest.raises(ScenarioError, match=message):
        parse_scenario(apply_overrides(tiny_scenario, overrides))


def test_a_join_during_a_calibration_lets_it_finish(run_tiny) -> None:
    run = run_tiny(
        SHARED,
        "training.rounds=6",
        "events=[{kind: leave, device: 1, round: 3}, {kind: join, round: 4}]",
        "correction.policy=federaser",
        "correction.federaser.interval_rounds=1",
    )
    ends = [json.loads(e["detail"]) for e in run.rows("events") if e["kind"] == "correction_end"]
    assert [(e["reason"], e["rounds"]) for e in ends] == [("replayed every stored round", 3)]
    assert max(row["round"] for row in run.rows("rounds")) == 6 + 3 - 1


def test_a_second_leave_during_a_calibration_starts_it_over(run_tiny) -> None:
    run = run_tiny(
        SHARED,
        "training.rounds=6",
        "events=[{kind: leave, device: 1, round: 3}, {kind: leave, device: 2, round: 4}]",
        "correction.policy=federaser",
        "correction.federaser.interval_rounds=1",
    )
    starts = [json.loads(e["detail"]) for e in run.rows("events") if e["kind"] == "correction"]
    assert [s["replay_rounds"] for s in starts] == [3, 3]
    # Rounds 0-2 ordinary, round 3 the first calibration's only round, 4-6 the second's
    # three, then the three ordinary rounds left: six ordinary rounds in all.
    steps = {row["round"]: row["steps"] for row in run.rows("rounds") if row["device"] == 0}
    assert sorted(steps) == list(range(10))
    assert [r for r, n in steps.items() if n == 2] == [0, 1, 2, 7, 8, 9]  # training.local_steps
    assert [r for r, n in steps.items() if n == 1] == [3, 4, 5, 6]  # calibration steps
