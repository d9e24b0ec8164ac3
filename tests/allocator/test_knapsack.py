"""Layer-group allocation: hull greedy and baselines against an exact DP and a brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cosim.allocator.knapsack import (
    METHODS,
    GroupOptions,
    allocate,
    full,
    layer_group_options,
    proportional,
    quantized_value,
    random,
    slot_options,
    solve_exact_dp,
    solve_hull_greedy,
    uniform,
    upper_hull,
)

TOL = 1e-9


def _random_instance(
    rng: np.random.Generator, n_groups: int | None = None
) -> tuple[list[GroupOptions], float]:
    """2-6 groups of 5 options with random integer costs in [0, 60] and values in [0, 10); a random budget
    between 0 and the cost of everything at its dearest option, fractional half of the time."""
    n = int(rng.integers(2, 7)) if n_groups is None else n_groups
    groups = [
        GroupOptions(
            precisions_bits=(2, 4, 8, 16, 32),
            costs_bits=tuple(int(c) for c in rng.integers(0, 61, size=5)),
            values=tuple(float(v) for v in 10 * rng.random(5)),
        )
        for _ in range(n)
    ]
    ceiling = sum(max(g.costs_bits) for g in groups)
    budget = float(rng.integers(0, ceiling + 1))
    if rng.random() < 0.5:
        budget += float(rng.random())
    return groups, budget


def _brute_force(groups: list[GroupOptions], budget: float) -> float:
    choices = [[(0, 0.0), *zip(g.costs_bits, g.values, strict=True)] for g in groups]
    best = 0.0
    for combo in itertools.product(*choices):
        if sum(c for c, _ in combo) <= budget:
            best = max(best, sum(v for _, v in combo))
    return best


def _max_value(groups: list[GroupOptions]) -> float:
    return max((max(g.values) for g in groups if g.values), default=0.0)


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precisions_bits": (4, 8), "costs_bits": (1,), "values": (1.0, 2.0)}, "same length"),
        ({"precisions_bits": (0, 8), "costs_bits": (0, 8), "values": (0.0, 2.0)}, "skip is implicit"),
        ({"precisions_bits": (8, 8), "costs_bits": (1, 2), "values": (1.0, 2.0)}, "distinct"),
        ({"precisions_bits": (4, 8), "costs_bits": (-1, 2), "values": (1.0, 2.0)}, "non-negative integers"),
        ({"precisions_bits": (4, 8), "costs_bits": (1.5, 2), "values": (1.0, 2.0)}, "non-negative integers"),
        ({"precisions_bits": (4, 8), "costs_bits": (1, 2), "values": (-1.0, 2.0)}, "finite and non-negative"),
        ({"precisions_bits": (4,), "costs_bits": (1,), "values": (float("nan"),)}, "finite and non-negative"),
    ],
)
def test_group_options_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupOptions(**kwargs)


@pytest.mark.parametrize("budget", [-1.0, float("nan"), float("inf")])
def test_budget_must_be_finite_and_non_negative(budget):
    groups = [GroupOptions(precisions_bits=(4,), costs_bits=(1,), values=(1.0,))]
    for method in METHODS:
        with pytest.raises(ValueError, match="budget_bits must be finite and non-negative"):
            allocate(method, groups, budget, np.random.default_rng(0))


def test_layer_group_options_cost_and_value():
    g = layer_group_options(weight=2.0, elements=100, header_bits=64)
    assert g.precisions_bits == (4, 8, 16, 32)
    assert g.costs_bits == (464, 864, 1664, 3264)  # q * 100 + 64
    assert g.values == pytest.approx([2 * (1 - 2.0**-8), 2 * (1 - 2.0**-16), 2 * (1 - 2.0**-32), 2.0], abs=0)
    assert quantized_value(2.0, 0) == 0.0
    assert g.cost_of(0) == 0 and g.value_of(0) == 0.0


def test_upper_hull_drops_dominated_and_under_hull_options():
    # (0,0) (2,1) (4,5) (5,5) (6,4) (8,6) (10,9): (2,1) lies under (0,0)-(4,5); (5,5) and
    # (6,4) are dominated by (4,5); (8,6) lies under (4,5)-(10,9).
    costs = [0, 2, 4, 5, 6, 8, 10]
    values = [0.0, 1.0, 5.0, 5.0, 4.0, 6.0, 9.0]
    assert upper_hull(costs, values) == [0, 2, 6]
    # Equal options: the first listed stays; a costless option with value replaces skip.
    assert upper_hull([0, 3, 3], [0.0, 2.0, 2.0]) == [0, 1]
    assert upper_hull([0, 0, 1], [0.0, 1.0, 3.0]) == [1, 2]
    # Collinear middle point is dropped so the slopes strictly decrease.
    assert upper_hull([0, 1, 2], [0.0, 1.0, 2.0]) == [0, 2]


# --------------------------------------------------------------------------- exact DP


def test_exact_dp_equals_brute_force():
    rng = np.random.default_rng(11)
    for _ in range(400):
        groups, budget = _random_instance(rng, n_groups=int(rng.integers(2, 5)))
        dp = solve_exact_dp(groups, budget)
        assert dp.bits <= budget
        assert dp.value == pytest.approx(_brute_force(groups, budget), abs=TOL)
        # The reported totals are those of the reported choice.
        assert dp.bits == sum(g.cost_of(q) for g, q in zip(groups, dp.precisions_bits, strict=True))


def test_exact_dp_coarse_resolution_rounds_costs_up():
    two = [GroupOptions(precisions_bits=(8,), costs_bits=(5,), values=(1.0,))] * 2
    assert solve_exact_dp(two, 10, resolution_bits=1).precisions_bits == (8, 8)
    # In units of 4 bits each costs ceil(5/4) = 2 units and the capacity is floor(10/4) = 2: one fits.
    coarse = solve_exact_dp(two, 10, resolution_bits=4)
    assert coarse.value == 1.0 and coarse.bits == 5
    rng = np.random.default_rng(12)
    for _ in range(300):
        groups, budget = _random_instance(rng)
        exact = solve_exact_dp(groups, budget)
        for res in (3, 7, 16):
            rough = solve_exact_dp(groups, budget, resolution_bits=res)
            assert rough.bits <= budget
            assert rough.value <= exact.value + TOL


def test_exact_dp_refuses_a_huge_table():
    groups = [GroupOptions(precisions_bits=(4,), costs_bits=(1,), values=(1.0,))] * 4
    with pytest.raises(ValueError, match="raise resolution_bits"):
        solve_exact_dp(groups, 1e9)
    assert solve_exact_dp(groups, 1e9, resolution_bits=1000).value == 4.0


# --------------------------------------------------------------------------- hull greedy


def test_hull_greedy_hand_example():
    # A's hull (0,0) (4,4) (6,5): upgrades of slope 1 then 0.5; B: one upgrade of slope 1.5.
    a = GroupOptions(precisions_bits=(4, 8), costs_bits=(4, 6), values=(4.0, 5.0))
    b = GroupOptions(precisions_bits=(4,), costs_bits=(2,), values=(3.0,))
    result = solve_hull_greedy([a, b], 7)
    # B (2 bits), A to 4 (4 bits), A to 8 (2 bits) does not fit in the 1 bit left: LP adds 1 * 1/2.
    assert result.precisions_bits == (4, 4)
    assert (result.value, result.bits) == (7.0, 6)
    assert result.upper_bound == pytest.approx(7.5)
    assert solve_exact_dp([a, b], 7).value == 7.0


def test_hull_greedy_within_stated_bound_of_the_optimum():
    """3000 random instances: LP >= OPT >= greedy >= max(LP - max upgrade, OPT - max U, OPT / 2)."""
    rng = np.random.default_rng(7)
    exact = 0
    for _ in range(3000):
        groups, budget = _random_instance(rng)
        greedy = solve_hull_greedy(groups, budget)
        opt = solve_exact_dp(groups, budget).value
        assert greedy.upper_bound is not None
        assert greedy.bits <= budget
        assert greedy.value <= opt + TOL
        assert opt <= greedy.upper_bound + TOL
        assert greedy.value >= greedy.upper_bound - _max_value(groups) - TOL
        assert greedy.value >= opt - _max_value(groups) - TOL
        assert greedy.value >= opt / 2 - TOL
        if greedy.value >= greedy.upper_bound - TOL:
            assert greedy.value == pytest.approx(opt, abs=TOL)
        exact += greedy.value >= opt - TOL
    # Measured with this seed: 2570 of 3000 (86 %) exact; mean shortfall 1.0 % of OPT, worst 42 %;
    # the OPT - max U bound held with at least 0.17 max U to spare.
    assert exact >= 2400


def test_hull_greedy_exact_with_one_group_or_a_budget_for_everything():
    rng = np.random.default_rng(8)
    for _ in range(500):
        groups, budget = _random_instance(rng, n_groups=1)
        assert solve_hull_greedy(groups, budget).value == pytest.approx(
            solve_exact_dp(groups, budget).value, abs=TOL
        )
        groups, _ = _random_instance(rng)
        everything = float(sum(max(g.costs_bits) for g in groups))
        greedy = solve_hull_greedy(groups, everything)
        assert greedy.value == pytest.approx(sum(max(g.values) for g in groups), abs=TOL)
        assert greedy.value == pytest.approx(solve_exact_dp(groups, everything).value, abs=TOL)
        assert greedy.upper_bound == pytest.approx(greedy.value, abs=TOL)


def test_hull_greedy_sends_the_most_valuable_groups_first():
    weights = (5.0, 1.0, 3.0, 2.0)
    groups = [layer_group_options(weight=w, elements=1000, header_bits=64) for w in weights]
    budget = 2 * (4 * 1000 + 64) + 100  # room for two groups at 4 bits
    greedy = solve_hull_greedy(groups, budget)
    assert greedy.precisions_bits == (4, 0, 4, 0)
    assert greedy.value == pytest.approx(8 * (1 - 2.0**-8))
    assert solve_exact_dp(groups, budget).precisions_bits == (4, 0, 4, 0)


# --------------------------------------------------------------------------- budgets and monotonicity


def test_no_method_but_full_exceeds_the_budget():
    rng = np.random.default_rng(9)
    for i in range(500):
        groups, budget = _random_instance(rng)
        for method in METHODS:
            result = allocate(method, groups, budget, np.random.default_rng(i))
            assert result.bits == sum(
                g.cost_of(q) for g, q in zip(groups, result.precisions_bits, strict=True)
            )
            if method != "full":
                assert result.bits <= budget, method
    groups = [layer_group_options(weight=1.0, elements=10, header_bits=0)] * 3
    result = full(groups, 0.0)
    assert result.precisions_bits == (32, 32, 32) and result.bits == 960


def test_exact_dp_and_lp_bound_are_monotone_in_the_budget():
    # The greedy itself is not monotone (see the next test): on these 100 instances its value
    # dropped somewhere along the budget grid for 14 of them, so it is not asserted here.
    rng = np.random.default_rng(10)
    for _ in range(100):
        groups, _ = _random_instance(rng)
        ceiling = sum(max(g.costs_bits) for g in groups)
        dp_values, lp_values = [], []
        for budget in range(0, ceiling + 2, 4):
            dp_values.append(solve_exact_dp(groups, budget).value)
            bound = solve_hull_greedy(groups, budget).upper_bound
            assert bound is not None
            lp_values.append(bound)
        assert np.all(np.diff(dp_values) >= -TOL)
        assert np.all(np.diff(lp_values) >= -TOL)


def test_hull_greedy_is_not_monotone_in_the_budget():
    """Documented limitation: at 7 bits A's 7-bit option enters A's hull and hides the 2-bit one."""
    a = GroupOptions(precisions_bits=(4, 8), costs_bits=(2, 7), values=(2.0, 9.0))
    b = GroupOptions(precisions_bits=(4,), costs_bits=(1,), values=(8.0,))
    at_6 = solve_hull_greedy([a, b], 6)
    at_7 = solve_hull_greedy([a, b], 7)
    assert (at_6.precisions_bits, at_6.value) == ((4, 4), 10.0)
    assert (at_7.precisions_bits, at_7.value) == ((8, 0), 9.0)
    assert solve_exact_dp([a, b], 7).value == 10.0


# --------------------------------------------------------------------------- baselines and dispatch


def test_uniform_takes_the_highest_common_precision_that_fits():
    groups = [layer_group_options(weight=1.0, elements=e, header_bits=10) for e in (10, 30)]
    # Costs at q: (10q + 10) + (30q + 10) = 40q + 20.
    assert uniform(groups, 40 * 16 + 20).precisions_bits == (16, 16)
    assert uniform(groups, 40 * 16 + 19).precisions_bits == (8, 8)
    assert uniform(groups, 40 * 4 + 19).precisions_bits == (0, 0)
    mixed = [groups[0], layer_group_options(weight=1.0, elements=1, header_bits=0, precisions_bits=(8,))]
    with pytest.raises(ValueError, match="same precisions_bits"):
        uniform(mixed, 1000)


def test_proportional_splits_the_budget_by_group_size():
    groups = [layer_group_options(weight=1.0, elements=e, header_bits=0) for e in (10, 30)]
    # Sizes 320 and 960: shares 1/4 and 3/4 of 800 are 200 and 600 -> 16 bits (160) and 16 bits (480).
    result = proportional(groups, 800)
    assert result.precisions_bits == (16, 16) and result.bits == 640
    # Shares of 200: 50 and 150 -> 4 bits (40) and 4 bits (120).
    assert proportional(groups, 200).precisions_bits == (4, 4)
    assert proportional(groups, 30).precisions_bits == (0, 0)


def test_random_is_reproducible_from_its_generator():
    rng = np.random.default_rng(13)
    groups, budget = _random_instance(rng, n_groups=6)
    first = random(groups, budget, np.random.default_rng(1))
    assert random(groups, budget, np.random.default_rng(1)) == first
    draws = {random(groups, budget, np.random.default_rng(s)).precisions_bits for s in range(20)}
    assert len(draws) > 1


def test_allocate_dispatches_by_name():
    rng = np.random.default_rng(14)
    groups, budget = _random_instance(rng)
    assert allocate("hull_greedy", groups, budget) == solve_hull_greedy(groups, budget)
    assert allocate("exact_dp", groups, budget) == solve_exact_dp(groups, budget)
    assert allocate("exact_dp", groups, budget, resolution_bits=5) == solve_exact_dp(groups, budget, 5)
    assert allocate("uniform", groups, budget) == uniform(groups, budget)
    assert allocate("proportional", groups, budget) == proportional(groups, budget)
    assert allocate("full", groups, budget) == full(groups, budget)
    assert allocate("random", groups, budget, np.random.default_rng(3)) == random(
        groups, budget, np.random.default_rng(3)
    )
    with pytest.raises(ValueError, match="needs rng"):
        allocate("random", groups, budget)
    with pytest.raises(
        ValueError, match="unknown allocation method 'greedy'; known: hull_greedy, exact_dp, uniform"
    ):
        allocate("greedy", groups, budget)


def test_no_groups_allocates_nothing():
    for method in METHODS:
        result = allocate(method, [], 100.0, np.random.default_rng(0))
        assert (result.precisions_bits, result.value, result.bits) == ((), 0.0, 0)


def test_slot_options_value_is_the_mixed_distance_removed_net_of_the_cross_term():
    """Each offered value is the weight's share of how much closer delivery brings the receiver."""
    import torch

    from cosim.learning.quantize import quantize_slices

    rng = np.random.default_rng(11)
    for _ in range(20):
        n_slots = int(rng.integers(1, 6))
        x = torch.as_tensor(rng.normal(size=(n_slots, 6, 4)), dtype=torch.float32)  # sender
        y = x + torch.as_tensor(rng.normal(size=(n_slots, 6, 4)) * rng.uniform(0, 2, (n_slots, 1, 1)))
        y = y.to(torch.float32)
        a = rng.uniform(0.05, 1.0, n_slots)
        weight = float(rng.uniform(0.1, 3.0))
        quantized = {q: quantize_slices(x[None], q)[0] for q in (4, 8, 16, 32)}
        distance = ((x - y) ** 2).sum(dim=(1, 2)).double().numpy()
        errors = {q: ((quantized[q] - x) ** 2).sum(dim=(1, 2)).double().numpy() for q in quantized}
        costs = {4: 40, 8: 72, 16: 136, 32: 256}
        options = slot_options(weight=weight, distance=distance, errors=errors, mixing=a, costs_bits=costs)
        total = float(((2 * a - a * a) * distance).sum())
        for s, opt in enumerate(options):
            for q, cost, value in zip(opt.precisions_bits, opt.costs_bits, opt.values, strict=True):
                assert cost == costs[q]
                # Brute force: the receiver's squared distance to the sender before and after mixing.
                after = y[s] + float(a[s]) * (quantized[q][s] - y[s])
                removed = float(((x[s] - y[s]) ** 2).sum()) - float(((x[s] - after) ** 2).sum())
                cross = -2 * a[s] * (1 - a[s]) * float(((y[s] - x[s]) * (quantized[q][s] - x[s])).sum())
                assert value == pytest.approx(weight * (removed - cross) / total, rel=1e-4, abs=1e-9)
                assert value > 0
            # Offered exactly where the modelled reduction is positive; full precision always then.
            offered = {
                q for q in costs if (2 * a[s] - a[s] ** 2) * distance[s] - a[s] ** 2 * errors[q][s] > 0
            }
            assert set(opt.precisions_bits) == offered and 32 in offered
        # At full precision the slots are together worth the weight.
        assert sum(opt.value_of(32) for opt in options) == pytest.approx(weight, rel=1e-9)


def test_slot_options_skips_slots_that_agree_and_precisions_whose_error_outweighs():
    costs = {4: 10, 8: 20, 32: 80}
    errors = {4: [0.0, 1.0, 0.5], 8: [0.0, 0.01, 0.002], 32: [0.0, 0.0, 0.0]}
    options = slot_options(
        weight=2.0, distance=[0.0, 0.1, 4.0], errors=errors, mixing=[0.5] * 3, costs_bits=costs
    )
    assert options[0].precisions_bits == ()  # the copies agree: nothing to send
    assert options[1].precisions_bits == (8, 32)  # 0.75 * 0.1 < 0.25 * 1.0 at 4 bits
    assert options[2].precisions_bits == (4, 8, 32)
    assert options[2].value_of(32) == pytest.approx(2.0 * 4.0 / 4.1)
    assert options[1].value_of(8) == pytest.approx(2.0 * (0.75 * 0.1 - 0.25 * 0.01) / (0.75 * 4.1))
    agree = slot_options(
        weight=1.0, distance=[0.0, 0.0], errors={32: [0.0, 0.0]}, mixing=[1.0, 1.0], costs_bits={32: 8}
    )
    assert [o.precisions_bits for o in agree] == [(), ()]
    with pytest.raises(ValueError, match="mixing"):
        slot_options(weight=1.0, distance=[1.0], errors={32: [0.0]}, mixing=[1.5], costs_bits={32: 8})
