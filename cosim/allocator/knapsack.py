"""Layer-group communication allocation as a multiple-choice knapsack (method.md section 7).

Per link and round the sender has ``budget_bits = rate * (1 - loss) * T_slot``.  Each
item ``g`` -- a layer group, or one slot's share of it -- is sent at one precision ``q``
or skipped; sending costs ``n_g(q)`` bits and is worth ``U_g(q)``.  Maximise ``sum_g
U_g`` subject to ``sum_g n_g <= budget``, at most one precision per item.  The solvers
call items groups.

Skipping is always possible and is implicit: it costs 0 bits, is worth 0, and shows as
precision 0 in an :class:`Allocation`.  :class:`GroupOptions` lists only the precisions
at which a group can be sent.  An item of the knapsack need not be a whole layer group:
:func:`slot_options` makes one item per adapter slot of a group, its value the share of
the group's weight that delivering that slot earns (the engine's ``priority``
allocation); :func:`layer_group_options` makes one per group.

Solvers (all pure; none mutates its input):

* :func:`solve_hull_greedy` -- the practical algorithm: upper convex hull per group,
  then greedy by incremental value per incremental bit.  Also returns the LP bound.
* :func:`solve_exact_dp` -- exact dynamic programme over a discretised budget; the
  reference in tests.
* baselines :func:`uniform`, :func:`proportional`, :func:`random`, :func:`full`.

:func:`allocate` picks one by name.  Costs are integers (bits); values are finite and
non-negative.  numpy only: the allocator knows nothing of tensors or time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from types import MappingProxyType

import numpy as np

__all__ = [
    "METHODS",
    "PRECISIONS_BITS",
    "Allocation",
    "GroupOptions",
    "allocate",
    "full",
    "layer_group_options",
    "proportional",
    "quantized_value",
    "random",
    "slot_options",
    "solve_exact_dp",
    "solve_hull_greedy",
    "uniform",
    "upper_hull",
]

PRECISIONS_BITS: tuple[int, ...] = (4, 8, 16, 32)
"""Precisions a layer group can be sent at (skip, precision 0, is implicit)."""

MAX_DP_CELLS = 50_000_000
"""Largest ``groups * (budget / resolution + 1)`` table :func:`solve_exact_dp` builds."""


@dataclass(frozen=True)
class GroupOptions:
    """The ways one layer group can be sent: ``precisions_bits[k]`` costs ``costs_bits[k]`` bits
    and is worth ``values[k]``.

    Precisions are distinct positive integers (they label the options; nothing here
    assumes cost grows with precision).  Skip (precision 0, 0 bits, value 0) is always
    available and must not be listed.
    """

    precisions_bits: tuple[int, ...]
    costs_bits: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        precisions = tuple(int(q) for q in self.precisions_bits)
        costs = tuple(int(c) for c in self.costs_bits)
        values = tuple(float(v) for v in self.values)
        if not len(precisions) == len(costs) == len(values):
            raise ValueError(
                f"precisions_bits, costs_bits and values must have the same length, got "
                f"{len(precisions)}, {len(costs)} and {len(values)}"
            )
        if any(q <= 0 for q in precisions):
            raise ValueError(f"precisions_bits must be positive (skip is implicit), got {precisions}")
        if len(set(precisions)) != len(precisions):
            raise ValueError(f"precisions_bits must be distinct, got {precisions}")
        integral = all(c == c_in for c, c_in in zip(costs, self.costs_bits, strict=True))
        if not integral or any(c < 0 for c in costs):
            raise ValueError(f"costs_bits must be non-negative integers, got {self.costs_bits}")
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"values must be finite and non-negative, got {values}")
        object.__setattr__(self, "precisions_bits", precisions)
        object.__setattr__(self, "costs_bits", costs)
        object.__setattr__(self, "values", values)

    def cost_of(self, precision_bits: int) -> int:
        """Bits of sending at ``precision_bits`` (0 for skip)."""
        return 0 if precision_bits == 0 else self.costs_bits[self.precisions_bits.index(precision_bits)]

    def value_of(self, precision_bits: int) -> float:
        """Value of sending at ``precision_bits`` (0 for skip)."""
        return 0.0 if precision_bits == 0 else self.values[self.precisions_bits.index(precision_bits)]


@dataclass(frozen=True)
class Allocation:
    """The precision chosen for each group (0 = skip), in the order the groups were given.

    ``value`` and ``bits`` are the totals of the chosen options.  ``upper_bound`` is an
    upper bound on the optimum when the solver knows one (the LP bound of
    :func:`solve_hull_greedy`), else None.
    """

    precisions_bits: tuple[int, ...]
    value: float
    bits: int
    upper_bound: float | None = None


def quantized_value(weight: float, precision_bits: int) -> float:
    """``U(q) = weight * (1 - 2^(-2q))``: the share of a group's residual removed by sending it at ``q`` bits.

    The quantization error's energy shrinks like ``2^(-2q)`` (method.md section 7), so
    the residual left after delivery at ``q`` bits is that fraction of the undelivered
    one.  ``U(0) = 0``.  (cosim's quantizer has ``2^(q-1) - 1`` levels per sign, so its
    error per entry is about ``2^(-2q) / 3`` of the peak squared, ``2^(-2q) / 12`` of the
    range squared: :func:`cosim.learning.quantize.expected_slice_error`; either way
    almost all of the value arrives at 4 bits, and higher precisions buy little.)
    """
    if precision_bits == 0:
        return 0.0
    return float(weight) * (1.0 - 2.0 ** (-2 * precision_bits))


def layer_group_options(
    *,
    weight: float,
    elements: int,
    header_bits: int,
    precisions_bits: Sequence[int] = PRECISIONS_BITS,
) -> GroupOptions:
    """The options of one layer group on one link.

    ``elements = r * sum_{l in g} d_out_l * |slots sent|`` is the number of ``B`` entries
    to send (``SlotLearner.slot_bits(1)[g] * len(slots)``).  Sending at ``q`` bits costs
    ``n_g(q) = q * elements + header_bits`` and is worth :func:`quantized_value`
    ``(weight, q)``.
    """
    if elements < 0 or header_bits < 0:
        raise ValueError(f"elements and header_bits must be non-negative, got {elements} and {header_bits}")
    if weight < 0:
        raise ValueError(f"weight must be non-negative, got {weight}")
    return GroupOptions(
        precisions_bits=tuple(precisions_bits),
        costs_bits=tuple(q * elements + header_bits for q in precisions_bits),
        values=tuple(quantized_value(weight, q) for q in precisions_bits),
    )


def slot_options(
    *,
    weight: float,
    distance: Sequence[float],
    errors: Mapping[int, Sequence[float]],
    mixing: Sequence[float],
    costs_bits: Mapping[int, int],
) -> list[GroupOptions]:
    """The options of one layer group's slots on one link: one knapsack item per slot.

    The receiver's copy of slot ``s`` is ``distance[s]`` (squared Frobenius distance)
    from the sender's; it mixes what arrives with weight ``a = mixing[s]``, and a copy
    sent at ``q`` bits carries the quantization error ``errors[q][s]`` (squared; 0 at 32
    bits).  With ``x`` the sender's copy, ``y`` the receiver's and ``e`` the error, the
    receiver ends at ``y + a (x + e - y)``, so delivery shrinks its squared distance to
    ``x`` by ``(2a - a^2) D - a^2 E_q - 2 a (1 - a) <y - x, e>``.  The cross term, zero
    on average over the rounding, is dropped::

        reduced_s(q) = (2a - a^2) D_s - a^2 E_q,s
        U_s(q) = weight * reduced_s(q) / sum_s' (2a - a^2) D_s'

    so the slots are together worth ``weight`` at full precision (a whole group's
    :func:`quantized_value` at 32 bits, up to ``2^-64``) and the slot that lags most gets
    the most of it.  A precision whose ``reduced`` is not positive (its error outweighs
    what it brings) is not offered; a group whose copies all agree offers nothing.
    Sending one slot at ``q`` bits costs ``costs_bits[q]``.
    """
    d = np.asarray(distance, dtype=float)
    a = np.asarray(mixing, dtype=float)
    if d.shape != a.shape or d.ndim != 1:
        raise ValueError(f"distance and mixing must be 1-D of the same length, got {d.shape} and {a.shape}")
    if weight < 0 or (d < 0).any() or ((a < 0) | (a > 1)).any():
        raise ValueError("weight and distance must be non-negative and mixing in [0, 1]")
    # Plain floats from here: a handful of slots and precisions, called for every message.
    pull = ((2 * a - a * a) * d).tolist()
    noise = (a * a).tolist()
    total = float(np.sum(pull))
    offered = [(q, costs_bits[q], np.asarray(errors[q], dtype=float).tolist()) for q in costs_bits]
    options = []
    for s in range(len(pull)):
        precisions, costs, values = [], [], []
        if total > 0:
            for q, cost, err in offered:
                reduced = pull[s] - noise[s] * err[s]
                if reduced > 0:
                    precisions.append(q)
                    costs.append(cost)
                    values.append(float(weight) * reduced / total)
        options.append(GroupOptions(tuple(precisions), tuple(costs), tuple(values)))
    return options


# --------------------------------------------------------------------------- helpers


def _check_budget(budget_bits: float) -> float:
    budget = float(budget_bits)
    if not math.isfinite(budget) or budget < 0:
        raise ValueError(f"budget_bits must be finite and non-negative, got {budget_bits}")
    return budget


def _allocation(
    groups: Sequence[GroupOptions], precisions: Sequence[int], upper_bound: float | None = None
) -> Allocation:
    chosen = tuple(int(q) for q in precisions)
    return Allocation(
        precisions_bits=chosen,
        value=float(sum(g.value_of(q) for g, q in zip(groups, chosen, strict=True))),
        bits=int(sum(g.cost_of(q) for g, q in zip(groups, chosen, strict=True))),
        upper_bound=upper_bound,
    )


def upper_hull(costs_bits: Sequence[float], values: Sequence[float]) -> list[int]:
    """Indices of the options on the upper concave hull of ``(cost, value)``, cheapest first.

    First drops dominated options (another costs no more and is worth at least as much;
    among equal options the first listed stays), leaving costs and values both strictly
    increasing; then drops every point on or below the segment joining its neighbours,
    so that the slopes ``dvalue / dcost`` strictly decrease along the result.
    """
    order = sorted(range(len(costs_bits)), key=lambda k: (costs_bits[k], -values[k], k))
    kept: list[int] = []
    for k in order:
        if not kept or values[k] > values[kept[-1]]:
            kept.append(k)
    hull: list[int] = []
    for k in kept:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b on or below the segment a -> k
            if (values[b] - values[a]) * (costs_bits[k] - costs_bits[a]) <= (values[k] - values[a]) * (
                costs_bits[b] - costs_bits[a]
            ):
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


# --------------------------------------------------------------------------- solvers


def solve_hull_greedy(groups: Sequence[GroupOptions], budget_bits: float) -> Allocation:
    """Convex-hull greedy for the multiple-choice knapsack, with its LP upper bound.

    1. Per group, options that cost more than the whole budget are dropped; skip and the
       rest are reduced to their upper convex hull (:func:`upper_hull`).  Every hull
       starts at cost 0.  The steps between consecutive hull points are *upgrades*
       ``(dcost, dvalue)`` whose slopes decrease along each group.
    2. All upgrades are sorted by slope ``dvalue / dcost``, highest first (ties: group
       order).  The LP relaxation takes them in this order and a fraction of the first
       one that does not fit: that is its optimum, returned as ``upper_bound`` (>= OPT).
    3. The greedy takes upgrades in the same order while they fit; a group whose upgrade
       does not fit is frozen (any later hull point of it costs at least that upgrade
       more, and the remaining budget only shrinks), and the others go on filling.
    4. The answer is the better of that and the best single option of any one group
       (all others at their hull start), which covers options that lie under the hull.

    Guarantees (values non-negative): the greedy contains the LP solution without its
    fractional upgrade, so ``value >= LP - max upgrade value >= OPT - max_g max_q U_g(q)``;
    step 4 adds ``value >= OPT / 2``; and ``value <= LP``.  It is exact with one group
    (step 4 sees every option), when the budget covers every group's best option, and
    whenever ``value == upper_bound``.  It is *not* monotone in the budget in general: a
    larger budget can admit a dear option that hides a cheaper one under the hull, or an
    upgrade that leaves a remainder too small to fill (the exact DP is monotone).

    Cost ``O(N log N)`` for ``N`` options in all.
    """
    budget = _check_budget(budget_bits)
    base: list[int] = []  # precision at each group's hull start
    moves: list[tuple[float, int, int, int, float]] = []  # (slope, group, to precision, dcost, dvalue)
    for gi, g in enumerate(groups):
        fits = [k for k, c in enumerate(g.costs_bits) if c <= budget]
        precisions = [0] + [g.precisions_bits[k] for k in fits]
        costs = [0] + [g.costs_bits[k] for k in fits]
        values = [0.0] + [g.values[k] for k in fits]
        hull = upper_hull(costs, values)
        base.append(precisions[hull[0]])
        for a, b in pairwise(hull):
            dcost, dvalue = costs[b] - costs[a], values[b] - values[a]
            moves.append((dvalue / dcost, gi, precisions[b], dcost, dvalue))
    moves.sort(key=lambda m: -m[0])  # stable: ties keep group order and each group's order

    chosen = list(base)
    frozen = [False] * len(groups)
    left = budget
    lp = sum(g.value_of(q) for g, q in zip(groups, base, strict=True))
    lp_open = True
    for _, gi, to_precision, dcost, dvalue in moves:
        if dcost <= left:
            if lp_open:
                lp += dvalue
            if not frozen[gi]:
                chosen[gi] = to_precision
                left -= dcost
        else:
            if lp_open:
                lp += dvalue * left / dcost
                lp_open = False
            frozen[gi] = True
    best = _allocation(groups, chosen, upper_bound=lp)

    base_value = [g.value_of(q) for g, q in zip(groups, base, strict=True)]
    base_total = sum(base_value)
    single: tuple[float, int, int] | None = None
    for gi, g in enumerate(groups):
        for q, c, v in zip(g.precisions_bits, g.costs_bits, g.values, strict=True):
            gain = v - base_value[gi]
            if c <= budget and (single is None or gain > single[0]):
                single = (gain, gi, q)
    if single is not None and base_total + single[0] > best.value:
        alone = list(base)
        alone[single[1]] = single[2]
        candidate = _allocation(groups, alone, upper_bound=lp)
        if candidate.value > best.value:
            best = candidate
    return best


def solve_exact_dp(
    groups: Sequence[GroupOptions], budget_bits: float, resolution_bits: int = 1
) -> Allocation:
    """Exact dynamic programme over the budget in units of ``resolution_bits``.

    Costs are rounded *up* to whole units and the capacity down, so the result never
    exceeds ``budget_bits``; it is optimal for the rounded problem, hence exactly optimal
    with ``resolution_bits = 1`` (costs are integers).  ``value`` and ``bits`` report the
    true costs.  Ties keep the earlier choice (skip first, then the listed order).

    Time ``O(N * C)`` and memory ``O(G * C)`` for ``N`` options, ``G`` groups and
    ``C = budget / resolution`` units; ValueError beyond :data:`MAX_DP_CELLS` cells.
    """
    budget = _check_budget(budget_bits)
    if int(resolution_bits) != resolution_bits or resolution_bits < 1:
        raise ValueError(f"resolution_bits must be a positive integer, got {resolution_bits}")
    res = int(resolution_bits)
    capacity = math.floor(budget / res)
    if len(groups) * (capacity + 1) > MAX_DP_CELLS:
        raise ValueError(
            f"exact DP would need {len(groups)} x {capacity + 1} cells (> {MAX_DP_CELLS}); "
            f"raise resolution_bits (now {res}) to at least {math.ceil(len(groups) * budget / MAX_DP_CELLS)}"
        )
    # best[c]: highest value of the groups so far within c units; choice[g, c]: the option
    # group g takes there (-1 = skip).
    best = np.zeros(capacity + 1)
    choice = np.full((len(groups), capacity + 1), -1, dtype=np.int32)
    for gi, g in enumerate(groups):
        new = best.copy()
        for k, (c, v) in enumerate(zip(g.costs_bits, g.values, strict=True)):
            units = -(-c // res)
            if units > capacity:
                continue
            candidate = best[: capacity + 1 - units] + v
            better = candidate > new[units:]
            new[units:][better] = candidate[better]
            choice[gi, units:][better] = k
        best = new
    precisions = [0] * len(groups)
    c = capacity
    for gi in range(len(groups) - 1, -1, -1):
        k = int(choice[gi, c])
        if k >= 0:
            precisions[gi] = groups[gi].precisions_bits[k]
            c -= -(-groups[gi].costs_bits[k] // res)
    return _allocation(groups, precisions)


# --------------------------------------------------------------------------- baselines


def uniform(groups: Sequence[GroupOptions], budget_bits: float) -> Allocation:
    """Every group at the same precision: the highest whose total cost fits (else all skip).

    All groups must offer the same precisions.
    """
    budget = _check_budget(budget_bits)
    if not groups:
        return _allocation(groups, [])
    levels = set(groups[0].precisions_bits)
    if any(set(g.precisions_bits) != levels for g in groups):
        raise ValueError("uniform needs every group to offer the same precisions_bits")
    for q in sorted(levels, reverse=True):
        if sum(g.cost_of(q) for g in groups) <= budget:
            return _allocation(groups, [q] * len(groups))
    return _allocation(groups, [0] * len(groups))


def proportional(groups: Sequence[GroupOptions], budget_bits: float) -> Allocation:
    """Split the budget in proportion to group size; each group takes the highest precision within its share.

    A group's size is the cost of its highest precision (for :func:`layer_group_options`
    that is ``q_max * elements + header_bits``, proportional to the group's payload up
    to the header).  Shares add up to the budget, so the total fits.
    """
    budget = _check_budget(budget_bits)
    sizes = [g.cost_of(max(g.precisions_bits)) if g.precisions_bits else 0 for g in groups]
    total = sum(sizes)
    precisions = []
    for g, size in zip(groups, sizes, strict=True):
        share = budget * size / total if total > 0 else budget
        fits = [q for q, c in zip(g.precisions_bits, g.costs_bits, strict=True) if c <= share]
        precisions.append(max(fits, default=0))
    return _allocation(groups, precisions)


def random(groups: Sequence[GroupOptions], budget_bits: float, rng: np.random.Generator) -> Allocation:
    """Groups in a random order; each picks uniformly among skip and its options that still fit."""
    budget = _check_budget(budget_bits)
    precisions = [0] * len(groups)
    left = budget
    for gi in rng.permutation(len(groups)):
        g = groups[int(gi)]
        fits = [0] + [q for q, c in zip(g.precisions_bits, g.costs_bits, strict=True) if c <= left]
        q = fits[int(rng.integers(len(fits)))]
        precisions[int(gi)] = q
        left -= g.cost_of(q)
    return _allocation(groups, precisions)


def full(groups: Sequence[GroupOptions], budget_bits: float) -> Allocation:
    """Every group at its highest precision (32 bits by default), ignoring the budget."""
    _check_budget(budget_bits)
    return _allocation(groups, [max(g.precisions_bits, default=0) for g in groups])


# --------------------------------------------------------------------------- dispatch

_Solver = Callable[[Sequence[GroupOptions], float, np.random.Generator | None, int], Allocation]


def _needs_rng(groups: Sequence[GroupOptions], budget: float, rng: np.random.Generator | None) -> Allocation:
    if rng is None:
        raise ValueError("method 'random' needs rng (a numpy Generator)")
    return random(groups, budget, rng)


METHODS: MappingProxyType[str, _Solver] = MappingProxyType(
    {
        "hull_greedy": lambda groups, budget, rng, res: solve_hull_greedy(groups, budget),
        "exact_dp": lambda groups, budget, rng, res: solve_exact_dp(groups, budget, res),
        "uniform": lambda groups, budget, rng, res: uniform(groups, budget),
        "proportional": lambda groups, budget, rng, res: proportional(groups, budget),
        "random": lambda groups, budget, rng, res: _needs_rng(groups, budget, rng),
        "full": lambda groups, budget, rng, res: full(groups, budget),
    }
)
"""Allocation method name -> solver."""


def allocate(
    method: str,
    groups: Sequence[GroupOptions],
    budget_bits: float,
    rng: np.random.Generator | None = None,
    *,
    resolution_bits: int = 1,
) -> Allocation:
    """Allocate ``budget_bits`` across ``groups`` with the named method (see :data:`METHODS`).

    ``rng`` is used by ``"random"`` only (required there); ``resolution_bits`` by
    ``"exact_dp"`` only.
    """
    solver = METHODS.get(method)
    if solver is None:
        raise ValueError(f"unknown allocation method {method!r}; known: {', '.join(METHODS)}")
    return solver(groups, budget_bits, rng, resolution_bits)
