"""Orthogonal slots: the frozen projections, contribution coordinates and index, exact deletion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosim.learning.model import build_tiny_base, target_linear_modules
from cosim.learning.slots import contribution_coordinates, contribution_index, slot_projection


def _blocks(projection: torch.Tensor, rank: int) -> list[torch.Tensor]:
    return list(projection.view(-1, rank, projection.shape[1]))


# --------------------------------------------------------------------------- projections


def test_every_module_has_orthonormal_slot_projections(make_learner):
    learner = make_learner()
    rank, capacity = learner.rank, learner.capacity
    eye = torch.eye(rank)
    assert len(learner.projections) == 2 * 7  # every adaptable module of both blocks
    for name, projection in learner.projections.items():
        assert projection.shape == (capacity * rank, learner.layers[name].d_in)
        a = _blocks(projection, rank)
        for k in range(capacity):
            for j in range(capacity):
                expected = eye if k == j else torch.zeros(rank, rank)
                torch.testing.assert_close(a[k] @ a[j].T, expected, rtol=0, atol=1e-6)


def test_same_seed_gives_the_same_projections(make_learner):
    first, second = make_learner(), make_learner()
    for name in first.projections:
        assert torch.equal(first.projections[name], second.projections[name])

    a = slot_projection(32, 8, 4, torch.Generator().manual_seed(7))
    b = slot_projection(32, 8, 4, torch.Generator().manual_seed(7))
    c = slot_projection(32, 8, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.1


def test_capacity_beyond_the_input_width_is_rejected():
    with pytest.raises(ValueError, match="slot_capacity \\* rank = 12 exceeds the input width 8"):
        slot_projection(8, 3, 4, torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- contribution coordinates


@pytest.mark.parametrize("d_in", [32, 64])  # K r = d_in (square Q) and K r < d_in
def test_contribution_coordinates_recover_every_slot(d_in):
    capacity, rank, d_out, scaling = 8, 4, 24, 2.5
    generator = torch.Generator().manual_seed(1)
    projection = slot_projection(d_in, capacity, rank, generator)
    b = torch.randn(capacity, d_out, rank, generator=generator)
    a = projection.view(capacity, rank, d_in)
    delta_w = scaling * sum(b[k] @ a[k] for k in range(capacity))

    coords = contribution_coordinates(delta_w, projection, rank, scaling)

    assert coords.shape == (capacity, d_out, rank)
    torch.testing.assert_close(coords, b, rtol=0, atol=1e-5)


def test_contribution_index_matches_a_hand_computation():
    # module 1: |B_0|^2 = 1 + 4 = 5, |B_1|^2 = 0, |B_2|^2 = 9; module 2: 4, 1, 0.
    module_1 = torch.tensor([[[1.0], [2.0]], [[0.0], [0.0]], [[3.0], [0.0]]])  # (K=3, d_out=2, r=1)
    module_2 = torch.tensor([[[2.0]], [[1.0]], [[0.0]]])  # (K=3, d_out=1, r=1)

    phi = contribution_index([module_1, module_2])

    torch.testing.assert_close(phi, torch.tensor([9 / 19, 1 / 19, 9 / 19]), rtol=0, atol=1e-7)
    assert float(phi.sum()) == pytest.approx(1.0, abs=1e-7)
    assert torch.equal(contribution_index([torch.zeros(3, 2, 1)]), torch.zeros(3))


def test_contribution_index_of_a_trained_view_sums_to_one_over_the_live_slots(make_learner):
    learner = make_learner()
    learner.train([0, 1, 2], 2, {d: np.random.default_rng(d) for d in range(3)})
    views = [copies[0] for copies in learner.copies.values()]  # device 0 has trained its own slot only

    phi = contribution_index(views)

    assert float(phi.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(phi[learner.slot_of[0]]) == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- exact deletion


def _plain_logits(learner, inputs: torch.Tensor, delta_w: dict[str, torch.Tensor] | None = None):
    """Logits of a plain base model, with ``W0 + dW`` on the adapted modules when ``delta_w`` is given."""
    spec = learner.model_spec
    base = build_tiny_base(spec.tiny, learner.task.vocab_size, seed=spec.seed)
    with torch.no_grad():
        for name, linear in target_linear_modules(base, spec.target_modules):
            if delta_w is not None:
                linear.weight += delta_w[name].to(linear.weight.dtype)
        return base(input_ids=inputs).logits


def _merged_update(learner, device: int, drop: int | None = None) -> dict[str, torch.Tensor]:
    """``dW = s sum_k B_k A_k`` of ``device``'s view in float64, leaving slot ``drop`` out."""
    out = {}
    for name, projection in learner.projections.items():
        a = projection.double().view(learner.capacity, learner.rank, -1)
        b = learner.copies[name][device].double()
        out[name] = learner.scaling * sum(b[k] @ a[k] for k in range(learner.capacity) if k != drop)
    return out


def _questions(learner) -> torch.Tensor:
    return torch.as_tensor(np.concatenate([s.inputs for s in learner.task.splits.values()]))


def test_deleting_the_only_trained_slot_gives_the_base_model(make_learner):
    learner = make_learner()
    learner.train([0], 3, {0: np.random.default_rng(0)})
    learner.pull(1, 0)  # device 1 now holds device 0's slot; its own slot and all others are zero
    slot = learner.slot_of[0]
    for copies in learner.copies.values():
        assert copies[1, slot].abs().max() > 0
        assert torch.count_nonzero(copies[1]) == torch.count_nonzero(copies[1, slot])
    x = _questions(learner)
    base = _plain_logits(learner, x)
    assert (learner.device_logits(1, x) - base).abs().max() > 1e-3  # the slot did change the model

    learner.apply_tombstone(1, slot)

    torch.testing.assert_close(learner.device_logits(1, x), base, rtol=0, atol=1e-6)


def test_deleting_one_of_several_slots_equals_the_model_of_the_others(make_learner):
    learner = make_learner()
    devices = [0, 1, 2, 3]
    rngs = {d: np.random.default_rng(d) for d in devices}
    learner.train(devices, 3, rngs)
    uniform = np.full((4, 4), 0.25)
    learner.mix(devices, uniform, np.ones((4, 4), dtype=bool))  # every view now holds every slot
    viewer, slot = 3, learner.slot_of[0]
    x = _questions(learner)
    full = _merged_update(learner, viewer)
    remaining = _merged_update(learner, viewer, drop=slot)
    for name, projection in learner.projections.items():
        a_k = projection.double()[slot * learner.rank : (slot + 1) * learner.rank]
        deleted = full[name] @ (torch.eye(a_k.shape[1], dtype=torch.float64) - a_k.T @ a_k)
        torch.testing.assert_close(deleted, remaining[name], rtol=0, atol=1e-6)
    before = learner.device_logits(viewer, x)
    torch.testing.assert_close(before, _plain_logits(learner, x, full), rtol=0, atol=1e-5)

    learner.apply_tombstone(viewer, slot)

    after = learner.device_logits(viewer, x)
    torch.testing.assert_close(after, _plain_logits(learner, x, remaining), rtol=0, atol=1e-5)
    assert (after - before).abs().max() > 1e-3
    for name in learner.copies:
        assert torch.equal(learner.copies[name][viewer, slot], torch.zeros_like(learner.copies[name][0, 0]))
