"""The slot learner: batched training against PEFT and against one device at a time, mixing, evaluation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cosim.graph import metropolis_hastings
from cosim.learning.reference import train_one_by_one_peft


def _rngs(devices, seed: int = 0) -> dict[int, np.random.Generator]:
    return {d: np.random.default_rng([seed, d]) for d in devices}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[n].detach() - b[n].detach()).abs().max()) for n in a)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    ("optimizer", "mu"), [("adam", 0.0), ("sgd", 0.0), ("adam", 1.0)], ids=["adam", "sgd", "adam-prox"]
)
def test_batched_step_equals_one_by_one_peft_training(make_learner, random_views, optimizer, mu):
    learner = make_learner(optimizer=optimizer, slot_dropout=0.0)
    random_views(learner, seed=3)
    # A first round gives Adam a state and mixing gives every device a different view of every slot.
    learner.train([0, 1, 2, 3], 2, _rngs(range(4), seed=1))
    learner.mix([0, 1, 2, 3], metropolis_hastings(~np.eye(4, dtype=bool)), np.ones((4, 4), dtype=bool))
    devices = [0, 1, 3]  # device 2 sits this round out
    rngs = _rngs(devices, seed=2)
    start = {d: {n: p.detach().clone() for n, p in learner.own[d].items()} for d in devices}
    untouched = {n: c[2].clone() for n, c in learner.copies.items()}

    reference = {d: train_one_by_one_peft(learner, d, 3, copy.deepcopy(rngs[d]), mu=mu) for d in devices}
    learner.train(devices, 3, rngs, mu=mu)

    for d in devices:
        assert _max_diff(learner.own[d], start[d]) > 1e-3  # the step did something
        assert _max_diff(learner.own[d], reference[d]) < 1e-5
        slot = learner.slot_of[d]
        assert _max_diff({n: c[d, slot] for n, c in learner.copies.items()}, reference[d]) < 1e-5
    for name, copies in learner.copies.items():
        assert torch.equal(copies[2], untouched[name])


@pytest.mark.parametrize("group_steps", [(3, 1), (0, 2), (3, 3)])
def test_group_steps_train_each_layer_group_for_its_own_count(make_learner, random_views, group_steps):
    learner = make_learner(optimizer="adam", slot_dropout=0.0)
    random_views(learner, seed=4)
    learner.train([0, 1, 2, 3], 2, _rngs(range(4), seed=1))  # Adam has a state for every group
    devices = [0, 3]
    rngs = _rngs(devices, seed=6)
    start = {d: {n: p.detach().clone() for n, p in learner.own[d].items()} for d in devices}
    reference = {
        d: train_one_by_one_peft(learner, d, 3, copy.deepcopy(rngs[d]), group_steps=group_steps)
        for d in devices
    }
    learner.train(devices, 3, rngs, group_steps=group_steps)
    for d in devices:
        assert _max_diff(learner.own[d], reference[d]) < 1e-5
        for name, p in learner.own[d].items():
            moved = not torch.equal(p.detach(), start[d][name])
            assert moved == (group_steps[learner.group_of[name]] > 0), name


def test_group_steps_need_one_count_per_group_within_the_steps(make_learner):
    learner = make_learner()
    for bad in [(1,), (1, 4), (-1, 1)]:
        with pytest.raises(ValueError, match=r"group_steps needs one count per layer group \(2\)"):
            learner.train([0], 3, _rngs([0]), group_steps=bad)


@pytest.mark.parametrize("scale", [0.25, 1.0 / 6.0])
def test_step_scale_keeps_that_fraction_of_each_devices_displacement(make_learner, random_views, scale):
    full, scaled = make_learner(slot_dropout=0.2), make_learner(slot_dropout=0.2)
    for learner in (full, scaled):
        random_views(learner, seed=7)
    devices = [0, 2, 3]
    start = {d: {n: p.detach().clone() for n, p in full.own[d].items()} for d in devices}
    rngs_full, rngs_scaled = _rngs(devices, seed=8), _rngs(devices, seed=8)
    losses = full.train(devices, 3, rngs_full, group_steps=(3, 1))
    assert scaled.train(devices, 3, rngs_scaled, group_steps=(3, 1), step_scale=scale) == losses
    for d in devices:
        slot = scaled.slot_of[d]
        for name, p in scaled.own[d].items():
            expected = start[d][name] + scale * (full.own[d][name].detach() - start[d][name])
            assert float((full.own[d][name].detach() - start[d][name]).abs().max()) > 1e-3
            torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
            torch.testing.assert_close(scaled.copies[name][d, slot], expected, rtol=0, atol=1e-6)
    for d in devices:  # the same draws either way
        assert rngs_full[d].random() == rngs_scaled[d].random()


def test_lr_trains_as_a_learner_of_that_rate_and_gives_the_optimizers_their_own_back(
    make_learner, random_views
):
    # The proximal step shrinks by the steps' own rate times mu: mu 1.0 makes that visible.
    slow, fast = make_learner(slot_dropout=0.0), make_learner(slot_dropout=0.0, learning_rate=0.04)
    for learner in (slow, fast):
        random_views(learner, seed=5)
    devices = [0, 1, 3]
    start = {d: {n: p.detach().clone() for n, p in slow.own[d].items()} for d in devices}
    rngs_slow, rngs_fast = _rngs(devices, seed=9), _rngs(devices, seed=9)
    losses = fast.train(devices, 3, rngs_fast, mu=1.0)
    assert slow.train(devices, 3, rngs_slow, mu=1.0, lr=0.04) == losses
    for d in devices:
        assert _max_diff(slow.own[d], start[d]) > 1e-2
        assert _max_diff(slow.own[d], fast.own[d]) == 0.0
        assert [g["lr"] for g in slow.optimizers[d].param_groups] == [0.01]
    # The next steps go at the learner's own rate, from the state the fast steps left.
    rngs_next = _rngs(devices, seed=10)
    slow.train(devices, 2, rngs_next)
    fast.train(devices, 2, _rngs(devices, seed=10), lr=0.01)
    for d in devices:
        assert _max_diff(slow.own[d], fast.own[d]) == 0.0
    with pytest.raises(ValueError, match=r"lr must be > 0 \(got -0.1\)"):
        slow.train(devices, 1, rngs_next, lr=-0.1)


def test_teacher_logits_are_each_device_s_centred_answer_logits_on_its_training_samples(
    make_learner, random_views
):
    learner = make_learner()
    random_views(learner, seed=5)
    teacher = learner.teacher_logits([1, 3])
    values = torch.as_tensor(learner.task.value_tokens)
    for d in (1, 3):
        inputs = torch.as_tensor(learner.task.train[d].inputs)
        logits = learner.device_logits(d, inputs)[:, -1, values]
        assert teacher[d].shape == (len(inputs), len(values))
        torch.testing.assert_close(teacher[d], logits - logits.mean(dim=1, keepdim=True))
    assert not torch.allclose(teacher[1][0], teacher[3][0])  # each device's own model


def test_a_teacher_step_descends_the_squared_distance_of_the_centred_logits(make_learner, random_views):
    learner = make_learner(optimizer="sgd", slot_dropout=0.0)
    random_views(learner, seed=6)
    other = make_learner(optimizer="sgd", slot_dropout=0.0)
    random_views(other, seed=7)
    teacher = other.teacher_logits([0, 2])  # another model's logits: a distance to close
    devices, rngs = [0, 2], _rngs([0, 2], seed=3)
    eta = learner.training.learning_rate
    expected, value = {}, {}
    for d in devices:
        idx = copy.deepcopy(rngs[d]).integers(0, len(learner.task.train[d]), size=learner.training.batch_size)
        params = list(learner.own[d].values())
        learner._set_views([d], train=True)
        logits = learner._answer_logits(torch.as_tensor(learner.task.train[d].inputs[idx]))
        learner._clear_views()
        loss = (logits - logits.mean(dim=1, keepdim=True) - teacher[d][idx]).pow(2).mean()
        grads = torch.autograd.grad(loss, params)
        expected[d] = {
            n: (p - eta * g).detach() for (n, p), g in zip(learner.own[d].items(), grads, strict=True)
        }
        value[d] = float(loss.detach())
    losses = learner.train(devices, 1, rngs, teacher=teacher)
    for d in devices:
        assert losses[d] == pytest.approx(value[d], rel=1e-5)
        assert _max_diff(learner.own[d], expected[d]) < 1e-6
    before = {d: float((learner.teacher_logits([d])[d] - teacher[d]).pow(2).mean()) for d in devices}
    learner.train(devices, 20, _rngs(devices, seed=4), teacher=teacher)
    after = {d: float((learner.teacher_logits([d])[d] - teacher[d]).pow(2).mean()) for d in devices}
    assert all(after[d] < before[d] for d in devices)


def test_teacher_steps_need_a_teacher_for_every_device(make_learner):
    learner = make_learner()
    with pytest.raises(ValueError, match=r"teacher: no teacher logits for device\(s\) \[3\]"):
        learner.train([0, 3], 1, _rngs([0, 3]), teacher=learner.teacher_logits([0]))


def test_step_scale_must_lie_in_the_unit_interval(make_learner):
    learner = make_learner()
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"step_scale must lie in \(0, 1\]"):
            learner.train([0], 1, _rngs([0]), step_scale=bad)


def test_peft_reference_needs_slot_dropout_off(make_learner):
    learner = make_learner(slot_dropout=0.2)
    with pytest.raises(ValueError, match="slot_dropout: the peft reference needs 0"):
        train_one_by_one_peft(learner, 0, 1, np.random.default_rng(0))


@pytest.mark.parametrize("slot_dropout", [0.0, 0.4])
def test_batched_devices_equal_each_device_trained_alone(make_learner, random_views, slot_dropout):
    together, alone = make_learner(slot_dropout=slot_dropout), make_learner(slot_dropout=slot_dropout)
    random_views(together, seed=5)
    random_views(alone, seed=5)
    devices = [0, 1, 2]
    rngs_together, rngs_alone = _rngs(devices), _rngs(devices)

    losses = together.train(devices, 3, rngs_together)
    for d in devices:
        loss = alone.train([d], 3, rngs_alone)
        assert loss[d] == pytest.approx(losses[d], abs=1e-6)

    for d in devices:
        assert _max_diff(together.own[d], alone.own[d]) < 1e-5
    for name in together.copies:
        torch.testing.assert_close(together.copies[name], alone.copies[name], rtol=0, atol=1e-5)
    # Both paths drew the same numbers from every device's generator.
    for d in devices:
        assert rngs_together[d].random() == rngs_alone[d].random()


# --------------------------------------------------------------------------- mixing


def test_mix_of_all_delivered_is_w_times_copies_owners_keep_their_slot(make_learner, random_views):
    learner = make_learner()
    random_views(learner, seed=11)
    devices = [0, 1, 2, 3]
    path = np.zeros((4, 4), dtype=bool)
    for i in range(3):
        path[i, i + 1] = path[i + 1, i] = True
    weights = metropolis_hastings(path)
    before = {n: c.clone() for n, c in learner.copies.items()}

    learner.mix(devices, weights, np.ones((4, 4), dtype=bool))

    w = torch.as_tensor(weights, dtype=torch.float32)
    for name, copies in learner.copies.items():
        expected = torch.einsum("ij,jkor->ikor", w, before[name])
        for d, slot in learner.slot_of.items():
            expected[d, slot] = before[name][d, slot]
        torch.testing.assert_close(copies, expected, rtol=0, atol=1e-6)
        assert (copies - before[name]).abs().max() > 1e-3


def test_an_undelivered_message_leaves_its_weight_with_the_receiver(make_learner):
    learner = make_learner()
    # Hand-set copies: slot of device 1 (owned inside the mix) and of device 3 (outside it).
    s1, s3 = learner.slot_of[1], learner.slot_of[3]
    values = {s1: [1.0, 4.0, 10.0], s3: [3.0, 6.0, 12.0]}  # by device 0, 1, 2
    with torch.no_grad():
        for name, copies in learner.copies.items():
            for slot, by_device in values.items():
                for d, v in enumerate(by_device):
                    copies[d, slot] = v
            learner.own[1][name].fill_(4.0)
    third = np.full((3, 3), 1 / 3)  # Metropolis-Hastings weights of a triangle
    delivered = np.ones((3, 3), dtype=bool)
    delivered[0, 1] = False  # device 1's message did not reach device 0

    learner.mix([0, 1, 2], third, delivered)

    # device 0: (1/3 + 1/3) of its own copy + 1/3 of device 2's; devices 1 and 2: the mean.
    expected = {s1: [2 / 3 * 1 + 10 / 3, 4.0, (1 + 4 + 10) / 3], s3: [2 / 3 * 3 + 12 / 3, 7.0, 7.0]}
    assert expected[s1][0] == pytest.approx(4.0) and expected[s3][0] == pytest.approx(6.0)
    for copies in learner.copies.values():
        for slot, by_device in expected.items():
            for d, v in enumerate(by_device):
                torch.testing.assert_close(copies[d, slot], torch.full_like(copies[d, slot], v))
        assert torch.count_nonzero(copies[3]) == 0  # device 3 took no part


def test_a_tombstoned_slot_stays_zero_after_mixing(make_learner, random_views):
    learner = make_learner()
    random_views(learner, seed=13)
    slot = learner.slot_of[2]
    learner.apply_tombstone(0, slot)

    learner.mix([0, 1, 2, 3], np.full((4, 4), 0.25), np.ones((4, 4), dtype=bool))

    for copies in learner.copies.values():
        assert torch.count_nonzero(copies[0, slot]) == 0
        assert copies[1, slot].abs().max() > 1e-3  # the others still hold it


# --------------------------------------------------------------------------- evaluation


def test_evaluate_matches_a_recomputation_from_device_logits(make_learner, random_views):
    learner = make_learner()
    random_views(learner, seed=17, scale=0.5)
    value_tokens = torch.as_tensor(learner.task.value_tokens)

    rows = learner.evaluate([0, 1, 3])

    assert {(r.device, r.split) for r in rows} == {(d, s) for d in (0, 1, 3) for s in learner.task.splits}
    for split_name, split in learner.task.splits.items():
        (row,) = [r for r in rows if r.device == 1 and r.split == split_name]
        logits = learner.device_logits(1, torch.as_tensor(split.inputs))[:, -1, value_tokens]
        answers = torch.as_tensor(split.answers - int(value_tokens[0]))
        correct = int((logits.argmax(dim=1) == answers).sum())
        assert row.n == len(split)
        assert row.accuracy == pytest.approx(correct / len(split), abs=1e-6)  # a float32 mean
        assert row.loss == pytest.approx(float(F.cross_entropy(logits, answers)), abs=1e-5)


def test_links_owe_each_slot_and_layer_group_that_changed_since_it_last_arrived(make_learner):
    learner = make_learner()
    live = sorted(learner.slot_of.values())
    groups = list(range(learner.model_spec.layer_groups))
    assert len(groups) >= 2
    none_owed: dict[int, list[int]] = {g: [] for g in groups}
    v0 = learner.versions(0)
    assert learner.owed(0, 1, v0, live, groups) == dict.fromkeys(groups, live)  # nothing arrived yet
    learner.mark_delivered(0, 1, v0, live, groups)
    assert learner.owed(0, 1, v0, live, groups) == none_owed

    # Two writes to slot 2 of one module of group 0 between reads: one change, of (2, 0) only.
    name = next(n for n, g in learner.group_of.items() if g == 0)
    with torch.no_grad():
        learner.copies[name][0, 2] += 1.0
        learner.copies[name][0, 2] *= 2.0
    v1 = learner.versions(0)
    expected = np.zeros_like(v0)
    expected[2, 0] = 1
    assert (v1 - v0).tolist() == expected.tolist()
    assert learner.versions(0).tolist() == v1.tolist()  # unchanged since
    assert learner.owed(0, 1, v1, live, groups) == {**none_owed, 0: [2]}

    # A message lost is not marked; one with the other groups only does not pay group 0's debt.
    learner.mark_delivered(0, 1, v1, live, groups[1:])
    assert learner.owed(0, 1, v1, live, groups) == {**none_owed, 0: [2]}
    assert learner.owed(0, 2, v1, live, groups) == dict.fromkeys(groups, live)  # another link
    learner.mark_delivered(0, 1, v1, live, groups)
    assert learner.owed(0, 1, v1, live, groups) == none_owed

    # A pull brings the newcomer the source's copies as they are; the other way nothing arrived.
    learner.pull(3, 0)
    assert learner.owed(0, 3, learner.versions(0), live, groups) == none_owed
    assert learner.owed(3, 0, learner.versions(3), live, groups) == dict.fromkeys(groups, live)
    # A device that leaves takes its links' records with it.
    learner.remove_device(1)
    rest = sorted(learner.slot_of.values())
    assert learner.owed(0, 1, learner.versions(0), rest, groups) == dict.fromkeys(groups, rest)
