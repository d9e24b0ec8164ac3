"""Stored updates, FedEraser calibration and shared (non-orthogonal) adapters in the learner."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from cosim.graph import metropolis_hastings
from cosim.learning.history import UpdateHistory, calibrate, difference
from cosim.learning.learner import SlotLearner

# --------------------------------------------------------------------------- history, pure


def test_calibration_keeps_the_stored_length_and_takes_the_calibration_direction() -> None:
    g = torch.Generator().manual_seed(0)
    stored = {"a": torch.randn(5, 3, generator=g), "b": torch.randn(4, 2, generator=g)}
    fresh = {"a": torch.randn(5, 3, generator=g), "b": torch.zeros(4, 2)}
    out = calibrate(fresh, stored)
    assert float(out["a"].norm()) == pytest.approx(float(stored["a"].norm()), rel=1e-6)
    cosine = float((out["a"] * fresh["a"]).sum() / (out["a"].norm() * fresh["a"].norm()))
    assert cosine == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(out["b"], torch.zeros(4, 2))  # no direction: nothing applied


def test_history_counts_its_bytes_and_forgets_leavers_and_empty_rounds() -> None:
    history = UpdateHistory()
    one = {"q": torch.ones(6, 4), "v": torch.ones(3, 4)}  # 36 float32 entries = 144 bytes
    history.record(0, {0: one, 1: one})
    history.record(2, {1: one})
    assert history.nbytes() == 3 * 144
    assert history.nbytes_per_device() == {0: 144, 1: 2 * 144}
    history.forget({1})
    assert [e.round for e in history.entries] == [0]
    assert history.nbytes() == 144
    after = {0: {"q": torch.full((2,), 3.0)}}
    before = {0: {"q": torch.ones(2)}}
    assert torch.equal(difference(after, before)[0]["q"], torch.full((2,), 2.0))


# --------------------------------------------------------------------------- shared learner


def _shared_learner(small_scenario: Any) -> SlotLearner:
    scenario = small_scenario(model={"adapters": "shared"}, training={"batch_size": 4, "learning_rate": 0.01})
    learner = SlotLearner(
        model=scenario.model,
        data=scenario.data,
        training=scenario.training,
        device_ids=(0, 1, 2, 3),
        leavers=set(),
        newcomers=set(),
    )
    for d in range(4):
        learner.add_device(d, 0)
    return learner


def test_shared_adapters_average_every_copy_and_each_device_trains_on_from_its_mix(small_scenario) -> None:
    learner = _shared_learner(small_scenario)
    assert learner.capacity == 1 and set(learner.slot_of.values()) == {0}
    rngs = {d: np.random.default_rng([1, d]) for d in range(4)}
    learner.train([0, 1, 2, 3], 2, rngs)
    before = {n: c.clone() for n, c in learner.copies.items()}
    assert all(float((c[0] - c[1]).abs().max()) > 0 for c in before.values())  # each trained its own
    adjacency = np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]], dtype=bool)
    w = metropolis_hastings(adjacency)
    learner.mix([0, 1, 2, 3], w, np.ones((4, 4), dtype=bool), adopt_owner=True)
    for name, copies in learner.copies.items():
        expected = torch.einsum("ij,j...->i...", torch.as_tensor(w, dtype=torch.float32), before[name])
        assert float((copies - expected).abs().max()) < 1e-6  # no owner: every copy averaged
        for d in range(4):
            assert torch.equal(learner.own[d][name].detach(), copies[d, 0])


def test_a_shared_newcomer_starts_from_a_neighbours_adapter_and_the_others_keep_theirs(
    small_scenario,
) -> None:
    learner = _shared_learner(small_scenario)
    learner.train([0, 1, 2, 3], 1, {d: np.random.default_rng([2, d]) for d in range(4)})
    learner.remove_device(3)
    kept = {n: c[:3].clone() for n, c in learner.copies.items()}
    learner.add_device(3, 0)
    learner.pull(3, 1)
    for name, copies in learner.copies.items():
        assert torch.equal(copies[:3], kept[name])
        assert torch.equal(copies[3], copies[1])
        assert torch.equal(learner.own[3][name].detach(), copies[1, 0])
