"""From a decision to one round's actions: priority, single actions and their minimum doses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cosim.engine.correction import (
    Plan,
    RoundCost,
    allocation_weights,
    fit_plan,
    parallel_step_scale,
    plan_round,
    settling_terms,
    tolerances_of,
    waiting_rate,
)
from cosim.policy.priority import Action, Budget, Tolerances, decide
from cosim.scenario import Correction


class Terms:
    def __init__(self, learn, drift, consensus, *, gamma=0.5, n_components=1, disagreement=None) -> None:
        self.learn = np.asarray(learn, dtype=float)
        self.drift = np.asarray(drift, dtype=float)
        self.consensus = np.asarray(consensus, dtype=float)
        self.disagreement = self.consensus if disagreement is None else np.asarray(disagreement, dtype=float)
        self.kappa = np.full(len(self.learn), 0.1)
        self.magnitude = np.full(len(self.learn), 1e9)  # large copies: the consensus share never binds
        self.gamma, self.n_components, self.eta, self.tau = gamma, n_components, 0.01, 4
        self.loss_devices = np.zeros(0)  # no measured loss: the drift term's level has no floor


SPEC = Correction(
    policy="priority",
    tolerances={"learn": 1.0, "drift": 1.0, "consensus": 1.0, "gamma_min": 0.0},
    budget={"rounds": 50, "max_local_steps": 30, "max_links": 2, "max_syncs": 3},
)
TOL = Tolerances(learn=1.0, drift=1.0, consensus=1.0)


def decision(terms: Terms):
    return decide(terms, TOL, Budget(rounds=50, max_local_steps=30))


def test_priority_acts_per_group_on_the_dominant_term() -> None:
    d = decision(Terms(learn=[50.0, 0.1, 0.2], drift=[0.1, 9.0, 0.1], consensus=[0.1, 0.1, 0.5]))
    plan = plan_round("priority", d, SPEC, eta=0.01, tau=4)
    assert plan.actions == (Action.LOCAL_CORRECTION, Action.PROXIMAL_DAMPING, Action.NONE)
    assert plan.extra_steps == min(d.local_steps[0], 30) > 0
    assert plan.extra_group_steps == (plan.extra_steps, 0, 0)  # the damped group is not trained on
    assert plan.mu[0] == 0 and plan.mu[1] == pytest.approx(d.mu[1]) and plan.mu[2] == 0
    assert plan.syncs == 0 and plan.links == 0


def test_priority_refines_a_split_graph_and_still_acts_per_group() -> None:
    d = decision(Terms(learn=[50.0, 0.1], drift=[0.1, 0.1], consensus=[0.1, 4.0], gamma=0.0, n_components=2))
    assert d.topology and set(d.actions) == {Action.TOPOLOGY_REFINEMENT}
    plan = plan_round("priority", d, SPEC, eta=0.01, tau=4)
    assert plan.links == 2
    assert plan.actions == (Action.LOCAL_CORRECTION, Action.SYNC_SCHEDULING)
    assert plan.syncs == 3 and plan.sync_groups == (1,)  # gamma 0: no count suffices, so the cap


def test_single_actions_act_where_priority_would_and_take_a_minimum_dose() -> None:
    d = decision(Terms(learn=[50.0, 0.1], drift=[0.1, 0.1], consensus=[0.1, 0.2]))
    local = plan_round("local", d, SPEC, eta=0.01, tau=4)
    assert local.actions == (Action.LOCAL_CORRECTION, Action.NONE)
    # Sized by its own term; a proximal-only policy, whose term is within tolerance, takes mu = 1/(eta tau).
    proximal = plan_round("proximal", d, SPEC, eta=0.01, tau=4)
    assert proximal.mu == (pytest.approx(1 / 0.04), 0.0)
    sync = plan_round("sync", d, SPEC, eta=0.01, tau=4)
    assert sync.syncs == 1 and sync.sync_groups == (0,)
    topology = plan_round("topology", d, SPEC, eta=0.01, tau=4)
    assert topology.links == 2 and not topology.extra_steps


def test_local_correction_sizes_each_group_on_its_own() -> None:
    # Learn terms 1.5 and 50 times their tolerance: with rho = eta kappa = 0.001 the steps
    # ceil(log(R / tol) / -log(1 - rho)) are about 400 and 3900.
    terms = Terms(learn=[1.5, 50.0], drift=[0.1, 0.1], consensus=[0.1, 0.1])
    expected = [math.ceil(math.log(r) / -math.log1p(-0.01 * 0.1)) for r in (1.5, 50.0)]
    for cap, steps in [(5000, tuple(expected)), (500, (expected[0], 500))]:  # the cap applies per group
        spec = SPEC.model_copy(update={"budget": SPEC.budget.model_copy(update={"max_local_steps": cap})})
        d = decide(terms, TOL, Budget(rounds=50, max_local_steps=cap))
        plan = plan_round("priority", d, spec, eta=0.01, tau=4)
        assert plan.extra_group_steps == steps and plan.extra_steps == max(steps)
    # The single action `local` on a group whose own learn term is within tolerance takes tau steps.
    d = decision(Terms(learn=[0.5, 50.0], drift=[9.0, 0.1], consensus=[0.1, 0.1]))
    local = plan_round("local", d, SPEC, eta=0.01, tau=4)
    assert local.actions == (Action.LOCAL_CORRECTION, Action.LOCAL_CORRECTION)
    assert local.extra_group_steps == (4, 30) and local.extra_steps == 30


def test_nothing_to_do_is_an_idle_plan() -> None:
    d = decision(Terms(learn=[0.5, 0.1], drift=[0.1, 0.1], consensus=[0.1, 0.2]))
    for policy in ("priority", "local", "proximal", "sync", "topology"):
        assert plan_round(policy, d, SPEC, eta=0.01, tau=4).idle
    assert Plan().idle


def test_allocation_weights_add_the_normalised_terms() -> None:
    d = decision(Terms(learn=[2.0, 0.5], drift=[1.0, 0.25], consensus=[0.5, 3.0]))
    assert allocation_weights(d) == pytest.approx([3.5, 3.75])


def test_relative_tolerances_divide_each_term_by_its_pre_event_level() -> None:
    from cosim.engine.correction import decide_for

    # learn_devices: one row per device; the sums are the learn terms.
    before = Terms(learn=[2.0, 4.0], drift=[0.5, 0.0], consensus=[1.0, 2.0])
    before.learn_devices = np.array([[0.5, 1.0], [1.5, 1.0], [0.0, 2.0]])
    after = Terms(learn=[10.0, 4.0], drift=[0.5, 0.3], consensus=[1.0, 9.0])
    after.learn_devices = np.array([[6.0, 1.0], [3.0, 1.0], [1.0, 2.0]])
    spec = Correction(
        policy="priority", tolerances={"mode": "relative", "learn": 2.0, "drift": 2.0, "consensus": 2.0}
    )
    # Three devices before, the same three after: the total is compared as it is (10 / 2,
    # 4 / 4); the largest device's term against the largest before (6 / 1.5, 2 / 2) is no larger.
    d = decide_for(after, spec, rounds_left=5, baseline=before, n_before=3, n_after=3)
    assert d.normalised_learn == pytest.approx((10.0 / 2.0 / 2.0, 4.0 / 4.0 / 2.0))
    # A group whose level was 0 is measured against the largest level of the others.
    assert d.normalised_drift == pytest.approx((0.5 / 0.5 / 2.0, 0.3 / 0.5 / 2.0))
    assert d.normalised_consensus == pytest.approx((1.0 / 1.0 / 2.0, 9.0 / 2.0 / 2.0))
    assert d.actions == (Action.LOCAL_CORRECTION, Action.SYNC_SCHEDULING)
    # R_learn is a sum over the affected devices: one device after the event, three before.
    d = decide_for(after, spec, rounds_left=5, baseline=before, n_before=3, n_after=1)
    assert d.normalised_learn == pytest.approx((10.0 / (2.0 / 3) / 2.0, 4.0 / (4.0 / 3) / 2.0))
    with pytest.raises(ValueError, match="baseline"):
        decide_for(after, spec, rounds_left=5)


def test_the_drift_level_is_at_least_the_float32_resolution_of_the_loss() -> None:
    from cosim.engine.correction import LOSS_RESOLUTION, drift_level

    assert LOSS_RESOLUTION == 2.0**-23
    loss = np.array([0.004, 0.008])  # a mean of 0.006: a floor of 0.006 * 2^-23, about 7.2e-10
    floor = 0.006 * 2.0**-23
    # Group 0 below the floor is raised to it; group 1 above it keeps its own level.
    assert drift_level(np.array([1e-13, 1e-6]), loss) == pytest.approx([floor, 1e-6], rel=1e-12)
    # A level of 0 takes the largest other level (here below the floor, so the floor).
    assert drift_level(np.array([0.0, 1e-12]), loss) == pytest.approx([floor, floor], rel=1e-12)
    # Without a measured loss there is no floor.
    assert drift_level(np.array([1e-13, 1e-12]), np.zeros(0)) == pytest.approx([1e-13, 1e-12])


@pytest.mark.parametrize("floor", [True, False])
def test_a_drift_far_below_the_loss_s_resolution_is_no_drift(floor: bool) -> None:
    """A converged model: the drift level 1e-13 on a loss of 0.006; the event multiplies it by 40."""
    from cosim.engine.correction import decide_for

    before = Terms(learn=[1.0], drift=[1e-13], consensus=[1.0])
    before.learn_devices = np.array([[0.5], [0.5]])
    before.loss_devices = np.array([0.004, 0.008])
    after = Terms(learn=[1.0], drift=[4e-12], consensus=[1.0])
    after.learn_devices = before.learn_devices
    spec = Correction(policy="priority", tolerances={"mode": "relative", "drift_floor": floor})
    d = decide_for(after, spec, rounds_left=5, baseline=before, n_before=2, n_after=2)
    level = 0.006 * 2.0**-23 if floor else 1e-13
    assert d.normalised_drift == pytest.approx((4e-12 / level / 2.0,), rel=1e-9)
    assert d.actions == ((Action.NONE,) if floor else (Action.PROXIMAL_DAMPING,))


def test_relative_tolerances_keep_the_consensus_share_of_the_copies_size() -> None:
    from cosim.engine.correction import decide_for

    # The share compares R_cons with the copies' size, in the same units whatever the level.
    before = Terms(learn=[1.0, 1.0], drift=[1.0, 1.0], consensus=[4.0, 4.0])
    before.learn_devices = np.array([[1.0, 1.0]])
    after = Terms(learn=[1.0, 1.0], drift=[1.0, 1.0], consensus=[3.0, 3.0])
    after.learn_devices = np.array([[1.0, 1.0]])
    after.magnitude = np.array([100.0, 10.0])
    tolerances = {"learn": 2.0, "drift": 2.0, "consensus": 2.0, "consensus_share": 0.1}
    relative = Correction(policy="priority", tolerances={"mode": "relative", **tolerances})
    d = decide_for(after, relative, rounds_left=5, baseline=before, n_before=1, n_after=1)
    # Group 0: 3 / 4 / 2 against 3 / (0.1 * 100); group 1: 3 / 4 / 2 against 3 / (0.1 * 10).
    assert d.normalised_consensus == pytest.approx((0.375, 3.0))
    assert d.actions == (Action.NONE, Action.SYNC_SCHEDULING)
    absolute = Correction(policy="priority", tolerances={"mode": "absolute", **tolerances})
    d = decide_for(after, absolute, rounds_left=5)
    # Group 0: 3 / 2 (the share, 10, is the looser); group 1: 3 / 1 (the share is the tighter).
    assert d.normalised_consensus == pytest.approx((1.5, 3.0))


def test_one_device_s_gap_is_not_diluted_by_the_number_of_affected_devices() -> None:
    """A newcomer with 4x a device's learning residual among 7 unchanged devices calls for correction."""
    from cosim.engine.correction import decide_for

    rows = np.full((7, 1), 1.0)
    before = Terms(learn=[7.0], drift=[1.0], consensus=[1.0])
    before.learn_devices = rows
    after = Terms(learn=[11.0], drift=[1.0], consensus=[1.0])
    after.learn_devices = np.vstack([rows, [[4.0]]])
    spec = Correction(policy="priority", tolerances={"mode": "relative", "learn": 2.0})
    d = decide_for(after, spec, rounds_left=5, baseline=before, n_before=7, n_after=8)
    # The sum rose 11 / 8 = 1.4 fold per device, under the 2x tolerance; the newcomer's own term 4 fold.
    assert d.normalised_learn == pytest.approx((4.0 / 1.0 / 2.0,))
    assert d.actions == (Action.LOCAL_CORRECTION,)


def test_the_measured_loss_ratio_sums_the_known_devices_and_takes_each_newcomer_alone() -> None:
    from cosim.engine.correction import loss_ratio

    before = {0: 0.5, 1: 1.0, 2: 1.5}
    # After a leave of device 2: devices 0 and 1, on the same samples, (0.75 + 2.25) / (0.5 + 1.0).
    assert loss_ratio({0: 0.75, 1: 2.25}, before) == pytest.approx(2.0)
    # After a join: the neighbours are unchanged (ratio 1); newcomer 5 against the mean 1.0.
    assert loss_ratio({0: 0.5, 1: 1.0, 5: 3.0}, before) == pytest.approx(3.0)
    assert loss_ratio({0: 0.5, 1: 1.0, 5: 0.5}, before) == pytest.approx(1.0)
    assert loss_ratio({}, before) == 0.0
    with pytest.raises(ValueError, match=r"device 1: .* nan, not finite"):
        loss_ratio({0: 0.5, 1: float("nan")}, before)


def test_the_accuracy_drop_averages_the_devices_measured_before_and_after() -> None:
    from cosim.engine.correction import accuracy_drop

    before = {0: 0.75, 1: 0.5, 2: 1.0}
    # After a leave of device 2: devices 0 and 1 fell by 0.25 and rose by 0.25: no drop.
    assert accuracy_drop({0: 0.5, 1: 0.75}, before) == pytest.approx(0.0)
    # Both fell: ((0.75 - 0.5) + (0.5 - 0.25)) / 2.
    assert accuracy_drop({0: 0.5, 1: 0.25}, before) == pytest.approx(0.25)
    # A device not measured before (a newcomer) does not count; none measured both times: None.
    assert accuracy_drop({0: 0.75, 5: 0.0}, before) == pytest.approx(0.0)
    assert accuracy_drop({5: 0.0}, before) is None


def test_accuracy_drop_needs_relative_tolerances() -> None:
    with pytest.raises(ValueError, match=r"accuracy_drop: 0.01 compares with the pre-event accuracy"):
        Correction(policy="priority", tolerances={"mode": "absolute", "accuracy_drop": 0.01})
    assert Correction(policy="priority", tolerances={"accuracy_drop": 0.01}).tolerances.accuracy_drop == 0.01


def test_with_measured_loss_the_loss_ratio_counts_as_a_third_learning_ratio() -> None:
    from cosim.engine.correction import decide_for

    rows = np.full((7, 2), 1.0)
    before = Terms(learn=[7.0, 7.0], drift=[1.0, 1.0], consensus=[1.0, 1.0])
    before.learn_devices = rows
    after = Terms(learn=[8.0, 8.0], drift=[1.0, 1.0], consensus=[1.0, 1.0])
    after.learn_devices = np.vstack([rows, [[1.0, 1.0]]])  # the newcomer's E looks like anyone's
    tolerances = {"mode": "relative", "learn": 2.0, "drift": 2.0, "consensus": 2.0}
    plain = Correction(policy="priority", tolerances={**tolerances, "measured_loss": False})
    measured = Correction(policy="priority", tolerances=tolerances)  # on by default
    # Its loss is 3 times the devices' mean: only counted with measured_loss.
    d = decide_for(after, plain, rounds_left=5, baseline=before, n_before=7, n_after=8, measured_loss=3.0)
    assert d.normalised_learn == pytest.approx((0.5, 0.5))
    assert d.actions == (Action.NONE, Action.NONE)
    d = decide_for(after, measured, rounds_left=5, baseline=before, n_before=7, n_after=8, measured_loss=3.0)
    assert d.normalised_learn == pytest.approx((1.5, 1.5))
    assert d.actions == (Action.LOCAL_CORRECTION, Action.LOCAL_CORRECTION)
    # The ratios are compared, not added: a smaller loss ratio leaves the larger E ratio.
    d = decide_for(after, measured, rounds_left=5, baseline=before, n_before=7, n_after=8, measured_loss=0.2)
    assert d.normalised_learn == pytest.approx((0.5, 0.5))


def test_measured_loss_needs_relative_tolerances() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"measured_loss .* needs mode: relative"):
        Correction(policy="priority", tolerances={"mode": "absolute", "measured_loss": True})


@pytest.mark.parametrize(
    ("policy", "mode", "expected"),
    [
        *[(p, "relative", True) for p in ("priority", "local", "proximal", "sync", "topology")],
        *[(p, "relative", False) for p in ("none", "retrain", "federaser")],
        ("priority", "absolute", False),
    ],
)
def test_measured_loss_defaults_to_on_where_a_policy_reads_relative_residuals(policy, mode, expected) -> None:
    spec = Correction(policy=policy, tolerances={"mode": mode})
    assert spec.tolerances.measured_loss is expected
    # The resolved scenario states it, and a choice made in the file is kept.
    assert spec.model_dump()["tolerances"]["measured_loss"] is expected
    if mode == "relative":
        kept = Correction(policy=policy, tolerances={"mode": mode, "measured_loss": not expected})
        assert kept.tolerances.measured_loss is (not expected)


def test_the_policies_split_into_residual_readers_and_the_rest() -> None:
    from typing import get_args

    from cosim.scenario import RESIDUAL_POLICIES, SHARED_POLICIES

    policies = set(get_args(Correction.model_fields["policy"].annotation))
    assert set(RESIDUAL_POLICIES) | set(SHARED_POLICIES) == policies
    assert not set(RESIDUAL_POLICIES) & set(SHARED_POLICIES)


def test_measured_loss_resolves_from_a_tolerances_object_and_from_null() -> None:
    from cosim.scenario import CorrectionTolerances

    unset = CorrectionTolerances(learn=3.0)
    assert unset.measured_loss is None
    spec = Correction(policy="priority", tolerances=unset)
    assert spec.tolerances.measured_loss is True and spec.tolerances.learn == 3.0
    assert Correction(policy="local", tolerances={"measured_loss": None}).tolerances.measured_loss is True
    chosen = CorrectionTolerances(measured_loss=False)
    assert Correction(policy="priority", tolerances=chosen).tolerances.measured_loss is False


def test_a_plan_s_extra_steps_are_its_largest_group_count() -> None:
    assert Plan(extra_steps=5, extra_group_steps=(5, 2)).extra_steps == 5
    for counts in [(), (4, 2)]:
        with pytest.raises(ValueError, match="the largest count must be extra_steps"):
            Plan(extra_steps=5, extra_group_steps=counts)


@pytest.mark.parametrize("m", [1, 2, 6])
def test_the_parallel_step_closes_a_common_gap_once(m: int) -> None:
    # m blocks whose sum must meet a target: f = |sum_i x_i - t|^2 / 2.  Each block's own
    # best step (the others held) closes the whole gap; taken together they close it m
    # times, and keeping 1/m of each closes it exactly.
    rng = np.random.default_rng(m)
    x, t = rng.normal(size=(m, 5)), rng.normal(size=5)
    own_step = np.tile(t - x.sum(axis=0), (m, 1))
    whole = (x + own_step).sum(axis=0) - t
    np.testing.assert_allclose(whole, (m - 1) * (t - x.sum(axis=0)), atol=1e-12)
    scaled = (x + parallel_step_scale(m) * own_step).sum(axis=0) - t
    np.testing.assert_allclose(scaled, 0.0, atol=1e-12)
    assert parallel_step_scale(m) == pytest.approx(1.0 / m)


def test_the_parallel_step_needs_a_trainee_and_leaves_newcomers_their_whole_step() -> None:
    with pytest.raises(ValueError, match="trainees: a local correction needs at least one device"):
        parallel_step_scale(0)
    # Newcomers joining together each learn their own facts: nothing is shared to overshoot.
    assert parallel_step_scale(3, "join") == 1.0
    assert parallel_step_scale(3, "leave") == pytest.approx(1.0 / 3)


def test_priority_plans_the_term_acted_on_and_the_single_actions_where_it_acts() -> None:
    # Copies of size 10 with a share of 0.05: the consensus tolerance is 0.5.  Group 0's
    # consensus term (0.9) is 1.8x the share, within its own tolerance (1.0); its learn term
    # (1.5) is past its tolerance, below the consensus term's 1.8.  With event_first the group
    # is trained, without it synced.
    terms = Terms(learn=[1.5, 0.1], drift=[0.1, 0.1], consensus=[0.9, 0.1])
    terms.magnitude = np.full(2, 10.0)
    shared = Tolerances(learn=1.0, drift=1.0, consensus=1.0, consensus_share=0.05)
    first = decide(terms, shared, Budget(rounds=50, max_local_steps=30))
    last = decide(terms, Tolerances(**{**shared.__dict__, "event_first": False}), Budget(rounds=50))
    assert first.dominant == last.dominant == ("consensus", "consensus")
    assert first.acted == ("learn", "consensus") and last.acted == last.dominant
    plan = plan_round("priority", first, SPEC, eta=0.01, tau=4)
    assert plan.actions == (Action.LOCAL_CORRECTION, Action.NONE)
    assert plan.extra_group_steps == (min(first.local_steps[0], 30), 0) and plan.syncs == 0
    plan = plan_round("priority", last, SPEC, eta=0.01, tau=4)
    assert plan.actions == (Action.SYNC_SCHEDULING, Action.NONE)
    assert plan.syncs == 1 and plan.sync_groups == (0,) and not plan.extra_steps  # 0.9 / 4 <= 0.5
    # A single action acts on the same groups either way.
    assert plan_round("sync", first, SPEC, eta=0.01, tau=4).sync_groups == (0,)
    assert plan_round("sync", last, SPEC, eta=0.01, tau=4).sync_groups == (0,)


def test_the_scenario_option_reaches_the_policy() -> None:
    assert tolerances_of(Correction(policy="priority")).event_first
    off = Correction(policy="priority", tolerances={"event_first": False})
    assert not tolerances_of(off).event_first


# --------------------------------------------------------------------------- the budget

ASKED = Plan(
    actions=(Action.LOCAL_CORRECTION, Action.SYNC_SCHEDULING, Action.PROXIMAL_DAMPING),
    extra_steps=40,
    extra_group_steps=(40, 0, 0),
    mu=(0.0, 0.0, 3.0),
    syncs=3,
    sync_groups=(1,),
    links=2,
)
COST = RoundCost(seconds=0.25, bits=1e6, step_s=0.02)


@pytest.mark.parametrize(
    ("left_s", "left_bits", "syncs", "steps"),
    [
        (math.inf, math.inf, 3, 40),  # no limit: as asked
        # 0.25 round + 3 x 0.25 syncs + 0.25 exchange + 40 x 0.02 = 2.05 s, 5 Mbit
        (2.05, 5e6, 3, 40),
        (2.0, 5e6, 3, 37),  # 2.0 - 1.25 = 0.75 s left for steps: 37 of 0.02 s
        (1.25, math.inf, 3, 0),  # the steps' exchange fits, no step does
        (1.2, math.inf, 3, 0),  # the steps' exchange does not fit
        (0.9, math.inf, 2, 0),  # 0.9 - 0.25 round: two syncs of 0.25
        (math.inf, 4.5e6, 3, 0),  # a round and three syncs fit the bits, the steps' exchange not
        (math.inf, 3e6, 2, 0),
        (math.inf, 0.5e6, 0, 0),  # not even the round itself
    ],
)
def test_a_plan_is_cut_to_the_seconds_and_bits_left(left_s, left_bits, syncs, steps) -> None:
    plan = fit_plan(ASKED, left_s, left_bits, COST)
    assert plan.syncs == syncs and plan.sync_groups == ((1,) if syncs else ())
    assert plan.extra_steps == steps and plan.extra_group_steps == ((steps, 0, 0) if steps else ())
    # Damping and links cost nothing: they stay.
    assert plan.mu == ASKED.mu and plan.links == ASKED.links and plan.actions == ASKED.actions


def test_a_cut_keeps_each_group_s_steps_below_the_new_count() -> None:
    asked = Plan(actions=(Action.LOCAL_CORRECTION,) * 2, extra_steps=30, extra_group_steps=(30, 12))
    plan = fit_plan(asked, 0.25 + 0.25 + 20 * 0.02, math.inf, COST)
    assert plan.extra_steps == 20 and plan.extra_group_steps == (20, 12)
    plan = fit_plan(asked, 0.25 + 0.25 + 10 * 0.02, math.inf, COST)
    assert plan.extra_steps == 10 and plan.extra_group_steps == (10, 10)


# --------------------------------------------------------------------------- settling


def _rounds_by_stepping(rate: float, now: float) -> float:
    """Brute force: step the term down by its rate a round until it is within tolerance."""
    value, k = now, 0
    while value > 1.0 and k < 10_000:
        value *= rate
        k += 1
    return k if value <= 1.0 else math.inf


def test_the_waiting_rate_is_the_mean_factor_a_round() -> None:
    rate = waiting_rate(np.array([[8.0, 2.0, 0.0, 3.0]]), np.array([[2.0, 3.0, 1.0, 0.0]]), 2)
    assert rate.tolist() == [[0.5, math.sqrt(1.5), math.inf, 0.0]]  # 8 -> 2 in two rounds: halved each
    with pytest.raises(ValueError, match="at least one round"):
        waiting_rate(np.array([2.0]), np.array([1.5]), 0)


def test_a_term_settles_when_its_waiting_rate_brings_it_within_tolerance_in_the_rounds_left() -> None:
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(2000):
        first, waited, now = (float(v) for v in rng.uniform(0.5, 8.0, size=3))
        rounds, left = int(rng.integers(1, 4)), int(rng.integers(0, 8))
        rate = float(waiting_rate(np.array([first]), np.array([waited]), rounds)[0])
        if now > 1.0 and rate < 1.0 and abs(math.log(now) / -math.log(rate) - left) < 1e-9:
            continue  # on the boundary rounding decides
        settles = bool(settling_terms(np.array([rate]), np.array([now]), left)[0])
        # Whole rounds at the waiting rate, stepped by the brute force; "never" for a term that did not fall.
        needed = _rounds_by_stepping(rate, now) if rate < 1.0 else (0 if now <= 1.0 else math.inf)
        assert settles == (now > 1.0 and needed <= left), (first, waited, now, rounds, left)
        checked += now > 1.0 and rate < 1.0
    assert checked > 500
    # Closed form: halved a round, 2 is within tolerance one round on; 4 needs two.
    mask = settling_terms(np.array([[0.5, 0.5, 0.5, 1.5, 0.0]]), np.array([[2.0, 4.0, 0.4, 3.0, 5.0]]), 1)
    assert mask.tolist() == [[True, False, False, False, True]]  # within tolerance now / rising: no
    assert settling_terms(np.array([0.5]), np.array([4.0]), 2)[0]
