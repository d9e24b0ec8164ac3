"""Membership-inference AUC, per-slice quantization, quantized and skipped groups in the mix,
per-group proximal strength, reset, and the heldout facts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cosim.graph import metropolis_hastings
from cosim.learning.data import build_facts_task
from cosim.learning.privacy import mia_auc
from cosim.learning.quantize import expected_slice_error, quantize_dequantize, quantize_slices


def test_mia_auc_equals_the_pairwise_brute_force_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        members = rng.integers(0, 6, size=rng.integers(1, 12)).astype(float)
        others = rng.integers(0, 6, size=rng.integers(1, 12)).astype(float)
        wins = sum(1.0 if m < o else 0.5 if m == o else 0.0 for m, o in itertools.product(members, others))
        assert mia_auc(members, others) == pytest.approx(wins / (len(members) * len(others)), abs=1e-12)
    assert mia_auc(np.array([0.1, 0.2]), np.array([1.0, 2.0])) == 1.0
    assert mia_auc(np.array([3.0]), np.array([1.0, 2.0])) == 0.0
    assert np.isnan(mia_auc(np.array([]), np.array([1.0])))


@pytest.mark.parametrize("bits", [4, 8, 16, 32])
def test_quantize_slices_equals_quantizing_each_slice_alone(bits: int) -> None:
    x = torch.randn(3, 5, 6, 4, generator=torch.Generator().manual_seed(bits))
    x[1, 2] = 0.0  # an all-zero slice stays zero
    got = quantize_slices(x, bits)
    for i in range(3):
        for k in range(5):
            want = quantize_dequantize(x[i, k], bits, stochastic=False, generator=None)
            assert torch.equal(got[i, k], want)


def test_a_skipped_group_stays_stale_and_a_quantized_one_mixes_the_quantized_values(
    make_learner, random_views
) -> None:
    learner = make_learner()
    devices = [0, 1, 2, 3]
    random_views(learner, seed=4)
    before = {n: c.clone() for n, c in learner.copies.items()}
    weights = metropolis_hastings(~np.eye(4, dtype=bool))
    delivered = np.ones((4, 4), dtype=bool)
    precision = np.zeros((4, 4, 2), dtype=np.int64)
    precision[:, :, 1] = 8  # group 0 skipped on every link, group 1 at 8 bits
    learner.mix(devices, weights, delivered, precision=precision)
    own = {d: learner.slot_of[d] for d in devices}
    for name, copies in learner.copies.items():
        if learner.group_of[name] == 0:
            assert torch.equal(copies[devices], before[name][devices])  # stale: nothing arrived
            continue
        q = quantize_slices(before[name][devices], 8)
        w = torch.as_tensor(weights, dtype=torch.float32)
        off = w - torch.diag(torch.diag(w))
        want = torch.diag(1 - off.sum(1)).mm(before[name][devices].flatten(1)) + off.mm(q.flatten(1))
        want = want.view_as(q)
        for i, d in enumerate(devices):
            want[i, own[d]] = before[name][d, own[d]]  # the owner's copy stays authoritative
        assert torch.allclose(copies[devices], want, atol=1e-6)
        assert not torch.allclose(copies[devices], before[name][devices])


def test_full_precision_everywhere_is_the_plain_mix(make_learner, random_views) -> None:
    a, b = make_learner(), make_learner()
    random_views(a, seed=9)
    random_views(b, seed=9)
    weights = metropolis_hastings(~np.eye(4, dtype=bool))
    delivered = np.random.default_rng(1).random((4, 4)) < 0.7
    a.mix([0, 1, 2, 3], weights, delivered, adopt_owner=True)
    b.mix([0, 1, 2, 3], weights, delivered, adopt_owner=True, precision=np.full((4, 4, 2), 32))
    for name in a.copies:
        assert torch.equal(a.copies[name], b.copies[name])


def test_one_proximal_strength_per_group_equal_to_a_scalar_one(make_learner) -> None:
    a, b = make_learner(), make_learner()
    rngs = lambda: {d: np.random.default_rng(d) for d in range(4)}  # noqa: E731
    a.train([0, 1, 2, 3], 3, rngs(), mu=5.0)
    b.train([0, 1, 2, 3], 3, rngs(), mu=(5.0, 5.0))
    for name in a.copies:
        assert torch.equal(a.copies[name], b.copies[name])
    with pytest.raises(ValueError, match="one value per layer group"):
        a.train([0], 1, rngs(), mu=(1.0, 2.0, 3.0))


def test_a_proximal_term_on_one_group_holds_that_group_back(make_learner) -> None:
    """SGD with ``eta mu = 1``: the proximal step halves the displacement after every step, so a
    damped slot moves ``1 - 2^-steps`` steps' worth in total instead of ``steps`` of them."""
    eta, steps = 0.05, 4
    free = make_learner(learning_rate=eta, optimizer="sgd")
    damped = make_learner(learning_rate=eta, optimizer="sgd")
    rngs = lambda: {d: np.random.default_rng(d) for d in range(4)}  # noqa: E731
    free.train([0, 1, 2, 3], steps, rngs())
    damped.train([0, 1, 2, 3], steps, rngs(), mu=(0.0, 1.0 / eta))
    moved = {0: [0.0, 0.0], 1: [0.0, 0.0]}
    for name in free.copies:
        g = free.group_of[name]
        moved[g][0] += float(free.copies[name].norm())
        moved[g][1] += float(damped.copies[name].norm())
    assert moved[1][1] < 0.5 * moved[1][0]  # group 1 damped: about 1/steps of the free path
    assert moved[0][1] > 0.8 * moved[0][0]  # group 0 undamped


def test_proximal_damping_leaves_the_optimizer_state_to_the_loss(make_learner, random_views) -> None:
    """Damping as strong as ``eta mu = 1e8`` holds every slot at its start (to float32 rounding),
    and Adam's moments are those of the loss alone at the start: equal to a learner's whose
    learning rate is too small to move (through the gradient, the term would put
    ``mu (B - B_start)`` in them)."""
    eta, steps = 0.01, 3
    damped = make_learner(learning_rate=eta, optimizer="adam", slot_dropout=0.0)
    still = make_learner(learning_rate=1e-12, optimizer="adam", slot_dropout=0.0)
    random_views(damped, seed=5)
    random_views(still, seed=5)
    devices = [0, 1, 2, 3]
    start = damped.own_state(devices)
    rngs = lambda: {d: np.random.default_rng(d) for d in devices}  # noqa: E731
    damped.train(devices, steps, rngs(), mu=1e8 / eta)
    still.train(devices, steps, rngs())
    for d in devices:
        for name, p in damped.own[d].items():
            torch.testing.assert_close(p.detach(), start[d][name], rtol=0, atol=1e-8)
            moments, reference = damped.optimizers[d].state[p], still.optimizers[d].state[still.own[d][name]]
            assert float(reference["exp_avg_sq"].max()) > 0
            for key in ("exp_avg", "exp_avg_sq"):
                scale = float(reference[key].abs().max())
                torch.testing.assert_close(moments[key], reference[key], rtol=0, atol=1e-4 * scale)


def test_reset_gives_every_device_the_base_model(make_learner) -> None:
    learner = make_learner()
    learner.train([0, 1, 2, 3], 3, {d: np.random.default_rng(d) for d in range(4)})
    learner.reset()
    assert all(float(c.abs().sum()) == 0.0 for c in learner.copies.values())
    # No link holds anything any more: every live slot is owed on every link.
    live = sorted(learner.slot_of.values())
    assert learner.owed(0, 1, learner.versions(0), live, [0]) == {0: live}
    assert all(float(p.detach().abs().sum()) == 0.0 for d in learner.own for p in learner.own[d].values())


def test_heldout_facts_are_about_entities_no_device_trains_on_and_change_no_other_split() -> None:
    kwargs = dict(
        device_ids=[0, 1, 2],
        newcomers=set(),
        samples_per_device=6,
        shared_facts=3,
        rule_examples_per_device=4,
        test_questions=16,
        num_values=8,
        num_relations=3,
        num_attributes=4,
        seed=5,
    )
    with_leaver = build_facts_task(leavers={1}, **kwargs)
    without = build_facts_task(leavers=set(), **kwargs)
    heldout = with_leaver.splits["heldout"]
    assert "heldout" not in without.splits
    assert len(heldout) >= len(with_leaver.splits["forget"])
    trained = set(np.concatenate([t.inputs[:, 1] for t in with_leaver.train.values()]).tolist())
    assert not set(heldout.inputs[:, 1].tolist()) & trained
    assert len({tuple(row) for row in heldout.inputs.tolist()}) == len(heldout)  # distinct questions
    for d in (0, 1, 2):
        assert np.array_equal(with_leaver.train[d].inputs, without.train[d].inputs)


def test_per_slot_precision_equal_across_slots_is_the_per_group_mix(make_learner, random_views) -> None:
    a, b = make_learner(), make_learner()
    random_views(a, seed=5)
    random_views(b, seed=5)
    weights = metropolis_hastings(~np.eye(4, dtype=bool))
    delivered = np.random.default_rng(3).random((4, 4)) < 0.8
    per_group = np.random.default_rng(4).choice([0, 4, 8, 32], size=(4, 4, 2))
    a.mix([0, 1, 2, 3], weights, delivered, adopt_owner=True, precision=per_group)
    per_slot = np.repeat(per_group[:, :, None, :], a.capacity, axis=2)
    b.mix([0, 1, 2, 3], weights, delivered, adopt_owner=True, precision=per_slot)
    for name in a.copies:
        assert torch.allclose(a.copies[name], b.copies[name], atol=1e-7)


@pytest.mark.parametrize("adopt_owner", [False, True])
def test_per_slot_precision_mixes_each_slot_at_its_own(make_learner, random_views, adopt_owner: bool) -> None:
    learner = make_learner()
    devices = [0, 1, 2, 3]
    random_views(learner, seed=6)
    before = {n: c.clone() for n, c in learner.copies.items()}
    weights = metropolis_hastings(~np.eye(4, dtype=bool))
    rng = np.random.default_rng(7)
    delivered = rng.random((4, 4)) < 0.75
    precision = rng.choice([0, 4, 8, 16, 32], size=(4, 4, learner.capacity, 2))
    learner.mix(devices, weights, delivered, adopt_owner=adopt_owner, precision=precision)
    own = {d: learner.slot_of[d] for d in devices}
    owner_of = {slot: d for d, slot in own.items()}
    adopted = 0
    for name, copies in learner.copies.items():
        g = learner.group_of[name]
        x = before[name][devices]
        for i, d in enumerate(devices):
            for s in range(learner.capacity):
                if s == own[d]:
                    assert torch.equal(copies[d, s], x[i, s])  # the owner keeps its own slot
                    continue
                arrived = {
                    j: int(precision[i, j, s, g])
                    for j in range(4)
                    if j != i and delivered[i, j] and precision[i, j, s, g]
                }
                j = owner_of.get(s)
                if adopt_owner and j is not None and j in arrived:  # the owner's copy replaces the mix
                    want = quantize_slices(x[j : j + 1, s : s + 1], arrived[j])[0, 0]
                    adopted += 1
                else:  # what did not arrive leaves its weight on the receiver's own copy
                    want = x[i, s].clone()
                    for j, q in arrived.items():
                        got = quantize_slices(x[j : j + 1, s : s + 1], q)[0, 0]
                        want += float(weights[i, j]) * (got - x[i, s])
                assert torch.allclose(copies[d, s], want, atol=1e-6)
    assert (adopted > 0) == adopt_owner


def test_pair_disagreement_against_the_copies(make_learner, random_views) -> None:
    learner = make_learner()
    random_views(learner, seed=8)
    src, dst = [3, 1, 2, 0, 1], [1, 3, 2, 2, 0]
    live = sorted(learner.slot_of.values())
    slots = live[:-1]  # the last live slot left out: zero there
    d = learner.pair_disagreement(src, dst, slots)
    assert d.shape == (5, learner.capacity, learner.model_spec.layer_groups)
    want = np.zeros_like(d)
    for name, copies in learner.copies.items():
        for s in slots:
            for p, (a, b) in enumerate(zip(src, dst, strict=True)):
                want[p, s, learner.group_of[name]] += float(((copies[a, s] - copies[b, s]) ** 2).sum())
    np.testing.assert_allclose(d, want, rtol=1e-5, atol=1e-12)
    assert (d[[0, 1, 3, 4]][:, slots] > 0).all()  # live slots differ between devices
    assert not d[2].any()  # a device agrees with itself
    assert np.array_equal(d[0], d[1])  # one pair both ways


@pytest.mark.parametrize("kind", ["normal", "uniform", "laplace"])
def test_expected_slice_error_matches_the_measured_rounding_error(kind: str) -> None:
    generator = torch.Generator().manual_seed(3)
    if kind == "normal":
        x = torch.randn(200, 128, 8, generator=generator)
    elif kind == "uniform":
        x = torch.rand(200, 128, 8, generator=generator) * 2 - 1
    else:  # heavier tails: a larger peak for the same spread
        u = torch.rand(200, 128, 8, generator=generator) - 0.5
        x = -torch.sign(u) * torch.log1p(-2 * u.abs())
    for bits in (4, 8, 16):
        measured = (quantize_slices(x[None], bits)[0] - x).pow(2).sum(dim=(-2, -1)).double()
        expected = expected_slice_error(x.abs().amax(dim=(-2, -1)), 128 * 8, bits)
        ratio = measured / expected
        assert abs(float(ratio.mean()) - 1) < 0.05  # over 200 slices of 1024 entries
        assert float(ratio.min()) > 0.85 and float(ratio.max()) < 1.15  # and slice by slice
    assert not expected_slice_error(x.abs().amax(dim=(-2, -1)), 1024, 32).any()


def test_quantization_error_sums_the_expected_error_of_each_module(make_learner, random_views) -> None:
    learner = make_learner()
    random_views(learner, seed=9)
    devices, slots = [2, 0], sorted(learner.slot_of.values())
    errors = learner.quantization_error(devices, slots, (4, 8, 32))
    assert set(errors) == {4, 8, 32} and not errors[32].any()
    for bits in (4, 8):
        want = np.zeros_like(errors[bits])
        for name, copies in learner.copies.items():
            for i, d in enumerate(devices):
                for s in slots:
                    x = copies[d, s]
                    want[i, s, learner.group_of[name]] += float(
                        expected_slice_error(x.abs().max(), x.numel(), bits)
                    )
        np.testing.assert_allclose(errors[bits], want, rtol=1e-6)
    np.testing.assert_allclose(errors[8][errors[4] > 0] / errors[4][errors[4] > 0], (7 / 127) ** 2)
