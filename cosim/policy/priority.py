"""The priority-aware correction policy (method.md section 6): which action, and how much.

Every residual term of a layer group is divided by its tolerance.  Topology refinement
comes first, for the whole graph, when the graph is split, when its spectral gap is
below ``gamma_min``, or when the rounds to consensus ``log(sum_g R_cons_g / eps) / gamma``
exceed the correction budget.  Otherwise each group gets the action of its dominant
normalised term (learn -> local correction, drift -> proximal damping, consensus ->
synchronisation scheduling), or none when every term is within its tolerance; with
``event_first`` a consensus term only the share holds waits (below).

The sizes, computed for every group whatever its action (0 where the term is within
tolerance), come from the same simple models that define the terms:

* **local steps** ``n = ceil(log(R_learn / tol_learn) / -log(1 - rho))`` with
  ``rho = min(eta kappa, 1/2)``: the gradient steps that shrink a loss gap ``R_learn``
  to its tolerance at the linear rate of a ``kappa``-PL function with step ``eta`` (the
  steps' own rate, ``correction.learning_rate``, where set)
  (the same model that makes ``E / (2 kappa)`` a loss gap), capped at
  ``Budget.max_local_steps``.  With Adam the real rate is faster than ``eta kappa``
  suggests, so in practice the cap decides.
* **proximal strength** ``mu``: the term ``mu/2 |B - B_start|^2`` is applied by its
  proximal step after each gradient step, ``B <- (B + eta mu B_start) / (1 + eta mu)``
  (:meth:`cosim.learning.learner.SlotLearner.train`), so a device's displacement after
  ``tau`` steps of a constant gradient is ``eta |g| h(mu)``, with the horizon
  ``h(mu) = (1 - (1 + eta mu)^-tau) / (eta mu)`` (``h(0) = tau``), and the drift term
  scales as ``(h(mu) / tau)^2``.  ``mu`` solves ``R_drift (h(mu) / tau)^2 = tol_drift``
  (bisection; ``h`` falls from ``tau`` towards 0 as ``eta mu`` grows, so any drift can
  be brought to its tolerance).
* **exchanges** ``u_g``: the fewest with ``(1 - gamma)^(2 u) D_g <= tol_cons``;
  ``None`` when ``gamma = 0`` (no number of exchanges converges on a split graph).

The consensus term has a second tolerance, ``consensus_share`` (off when ``None``): the
copies' disagreement may be at most that share of the squared size ``M_g`` of their
mean.  The term's normalised value is the larger of ``R_cons / tol_cons`` and
``R_cons / (share M_g)``, and the exchanges are sized to meet both.  The first
tolerance sees what an event adds (with relative tolerances it is a multiple of the
pre-event level); the second sees a disagreement that stood before the event (a link
budget too small for the copies to agree), which no multiple of its own level can.

With ``event_first`` a consensus term that only the share holds (within ``tol_cons``
itself: with relative tolerances, the event did not raise it, the disagreement stood
before; with absolute ones, it is below the level) yields to a learning or drift term
past its own tolerance whose action has a size (local steps, or ``mu > 0``): the group
gets the action of the larger of those, and the exchanges come once no such term is
left.  ``Decision.acted`` names the term acted on; ``Decision.dominant`` stays the
largest.  The rule switches at the consensus term's own tolerance: just past it, the
term ranks by its share-normalised value again.

A term marked as settling (``decide``'s ``settling``: the regular rounds left bring it
within tolerance at the rate it fell while the correction waited, see
:func:`cosim.engine.correction.settling_terms`) counts as within tolerance for the
per-group choice; the decision still records its value, and the reason names it.  The
topology test (split, gap, rounds to consensus) reads the terms as they are.

The rounds-to-consensus test keeps the spec's ``log(sum R_cons / eps) / gamma``, about
twice the ``log(.) / (-2 log(1 - gamma))`` that the exchange count uses: conservative
on purpose, since it decides whether the graph itself must change.  Its ``eps`` is the
level tolerance (``consensus_total``, or ``tol_cons`` per group) and ignores
``consensus_share``: when the share is the tighter tolerance the exchanges may need
more rounds than the test counts, and are capped per round (``max_syncs``) instead of
calling for new links.  The share asks the copies to agree; whether the graph mixes
fast enough stays the question of the spectral gap and the split.

numpy only: the terms arrive as any object with the attributes of
:class:`ResidualTerms` (``cosim.learning.residuals.Residuals`` has them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

from cosim.graph import components, metropolis_hastings, spectral_gap

__all__ = [
    "TERMS",
    "Action",
    "Budget",
    "Decision",
    "ResidualTerms",
    "Tolerances",
    "consensus_tolerance",
    "damped_horizon",
    "decide",
    "exchanges_needed",
    "local_steps_needed",
    "proximal_strength",
    "refine_topology",
    "rounds_to_consensus",
]


class Action(StrEnum):
    NONE = "none"
    LOCAL_CORRECTION = "local_correction"
    PROXIMAL_DAMPING = "proximal_damping"
    SYNC_SCHEDULING = "sync_scheduling"
    TOPOLOGY_REFINEMENT = "topology_refinement"


# Term name -> the action it calls for; the order breaks ties (the first wins).
TERMS: dict[str, Action] = {
    "learn": Action.LOCAL_CORRECTION,
    "drift": Action.PROXIMAL_DAMPING,
    "consensus": Action.SYNC_SCHEDULING,
}


class ResidualTerms(Protocol):
    """What :func:`decide` reads: per-group arrays and the graph's connectivity."""

    @property
    def learn(self) -> np.ndarray: ...
    @property
    def drift(self) -> np.ndarray: ...
    @property
    def consensus(self) -> np.ndarray: ...
    @property
    def disagreement(self) -> np.ndarray: ...
    @property
    def magnitude(self) -> np.ndarray: ...
    @property
    def kappa(self) -> np.ndarray: ...
    @property
    def gamma(self) -> float: ...
    @property
    def n_components(self) -> int: ...
    @property
    def eta(self) -> float: ...
    @property
    def tau(self) -> int: ...


@dataclass(frozen=True)
class Tolerances:
    """The level below which each residual term needs no action (per layer group)."""

    learn: float  # on R_learn_g (predicted excess loss, summed over devices)
    drift: float  # on R_drift_g
    consensus: float  # on R_cons_g and on D_g when sizing exchanges
    gamma_min: float = 0.0  # a graph whose spectral gap is below this is refined first
    consensus_total: float | None = None  # eps of the rounds test; None: consensus * groups
    consensus_share: float | None = None  # on R_cons_g / M_g (None: off)
    # Terms past their own tolerance act before a consensus term only the share holds.
    event_first: bool = True

    def __post_init__(self) -> None:
        for name in ("learn", "drift", "consensus"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"tolerances.{name} must be > 0 (got {value})")
        if self.consensus_share is not None and not self.consensus_share > 0:
            raise ValueError(f"tolerances.consensus_share must be > 0 (got {self.consensus_share})")
        if not 0.0 <= self.gamma_min < 1.0:
            raise ValueError(f"tolerances.gamma_min must lie in [0, 1) (got {self.gamma_min})")
        if self.consensus_total is not None and not self.consensus_total > 0:
            raise ValueError(f"tolerances.consensus_total must be > 0 (got {self.consensus_total})")


@dataclass(frozen=True)
class Budget:
    """What one correction may spend, as far as the decision needs it."""

    rounds: int  # gossip rounds available for the correction
    max_local_steps: int | None = None  # cap on the local correction steps of one group
    local_eta: float | None = None  # the local correction steps' learning rate (None: terms.eta)

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"budget.rounds must be >= 0 (got {self.rounds})")
        if self.max_local_steps is not None and self.max_local_steps < 0:
            raise ValueError(f"budget.max_local_steps must be >= 0 (got {self.max_local_steps})")
        if self.local_eta is not None and not self.local_eta > 0:
            raise ValueError(f"correction.learning_rate must be > 0 (got {self.local_eta})")


@dataclass(frozen=True)
class Decision:
    """The policy's choice per layer group, why, and how much (tuples indexed by group)."""

    actions: tuple[Action, ...]
    reasons: tuple[str, ...]
    dominant: tuple[str, ...]  # the term with the largest normalised value
    dominant_value: tuple[float, ...]  # that value (term / tolerance)
    # The term whose action the group gets and its value: the dominant one, unless
    # ``event_first`` puts a term past its own tolerance before a standing disagreement.
    acted: tuple[str, ...]
    acted_value: tuple[float, ...]
    normalised_learn: tuple[float, ...]
    normalised_drift: tuple[float, ...]
    normalised_consensus: tuple[float, ...]
    topology: bool  # topology refinement comes first
    topology_reason: str  # empty when not
    rounds_to_consensus: float
    local_steps: tuple[int, ...]
    mu: tuple[float, ...]
    exchanges: tuple[int | None, ...]  # None: gamma = 0, no count suffices

    @property
    def n_groups(self) -> int:
        return len(self.actions)


# --------------------------------------------------------------------------- sizes


def rounds_to_consensus(total: float, eps: float, gamma: float) -> float:
    """``log(total / eps) / gamma``; 0 when ``total <= eps``, infinite when ``gamma <= 0``."""
    if total <= eps:
        return 0.0
    if gamma <= 0:
        return math.inf
    return math.log(total / eps) / gamma


def exchanges_needed(disagreement: float, tol: float, gamma: float) -> int | None:
    """Fewest ``u`` with ``(1 - gamma)^(2 u) disagreement <= tol``; None when ``gamma <= 0``."""
    if disagreement <= tol:
        return 0
    if gamma <= 0:
        return None
    if gamma >= 1:
        return 1
    u = max(1, math.ceil(math.log(disagreement / tol) / (-2.0 * math.log1p(-gamma))))
    # Guard the ceiling against rounding either way.
    while u > 1 and (1 - gamma) ** (2 * (u - 1)) * disagreement <= tol:
        u -= 1
    while (1 - gamma) ** (2 * u) * disagreement > tol:
        u += 1
    return u


def local_steps_needed(r_learn: float, tol: float, eta: float, kappa: float, cap: int | None = None) -> int:
    """``ceil(log(R / tol) / -log(1 - rho))`` with ``rho = min(eta kappa, 1/2)``; 0 when ``R <= tol``."""
    if r_learn <= tol:
        return 0
    rho = min(max(eta * kappa, 1e-12), 0.5)
    steps = math.ceil(math.log(r_learn / tol) / -math.log1p(-rho))
    return steps if cap is None else min(steps, cap)


def damped_horizon(eta: float, mu: float, tau: int) -> float:
    """``h(mu) = sum_{s=1..tau} (1 + eta mu)^-s``: the steps' worth of displacement after ``tau``
    gradient steps, each followed by the proximal step of ``mu/2 |B - B_start|^2``."""
    a = eta * mu
    if a == 0:
        return float(tau)
    return (1.0 - (1.0 + a) ** -tau) / a


def proximal_strength(r_drift: float, tol: float, eta: float, tau: int) -> float:
    """The ``mu`` with ``r_drift (h(mu) / tau)^2 = tol`` (0 when ``r_drift <= tol``).

    The proximal step follows every gradient step, the first included, so even one local
    step is damped: ``h(mu) = 1 / (1 + eta mu)`` at ``tau = 1``."""
    if r_drift <= tol:
        return 0.0
    target = tau * math.sqrt(tol / r_drift)
    # h < 1 / (eta mu) everywhere, so at eta mu = 1 / target the horizon is below the target.
    lo, hi = 0.0, 1.0 / (eta * target)  # h(lo) > target >= h(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if damped_horizon(eta, mid, tau) > target:
            lo = mid
        else:
            hi = mid
    return hi


# --------------------------------------------------------------------------- decision


def consensus_tolerance(tolerances: Tolerances, magnitude: np.ndarray) -> np.ndarray:
    """Per group, the level ``R_cons_g`` (and ``D_g`` when sizing exchanges) must come down to.

    ``tol_cons``, or ``consensus_share * M_g`` where that is smaller; a group whose mean
    copy is zero (nothing learnt yet) has no size to take a share of and keeps ``tol_cons``.
    """
    m = np.asarray(magnitude, dtype=float)
    tol = np.full(m.shape, tolerances.consensus)
    if tolerances.consensus_share is not None:
        share = tolerances.consensus_share * m
        tol = np.where(share > 0, np.minimum(tol, share), tol)
    return tol


def decide(
    terms: ResidualTerms, tolerances: Tolerances, budget: Budget, settling: np.ndarray | None = None
) -> Decision:
    """Topology refinement first when its condition holds; per group the action of the term acted on.

    That term is the dominant one, unless ``tolerances.event_first`` puts a learning or
    drift term past its tolerance, whose action has a size, before a consensus term that
    only the share holds.  ``settling`` (terms in ``TERMS`` order x groups; see
    :func:`settling_terms`) marks terms the regular rounds left bring within tolerance:
    they count as within tolerance for the choice, and the decision records their values.
    """
    n_groups = len(np.asarray(terms.learn))
    size = np.asarray(terms.magnitude, dtype=float)
    lengths = [len(np.asarray(terms.drift)), len(np.asarray(terms.consensus))]
    if any(n != n_groups for n in lengths) or size.size not in (1, n_groups):
        raise ValueError("learn, drift, consensus and magnitude must have one entry per layer group")
    cons_tol = consensus_tolerance(tolerances, np.broadcast_to(size, (n_groups,)))
    normalised = {
        "learn": np.asarray(terms.learn, dtype=float) / tolerances.learn,
        "drift": np.asarray(terms.drift, dtype=float) / tolerances.drift,
        "consensus": np.asarray(terms.consensus, dtype=float) / cons_tol,
    }
    stacked = np.stack([normalised[t] for t in TERMS])  # (terms, groups)
    names = list(TERMS)
    top = stacked.argmax(axis=0)
    dominant = tuple(names[i] for i in top)
    dominant_value = tuple(float(stacked[i, g]) for g, i in enumerate(top))
    # What the choice sees: a settling term counts as within tolerance (0).
    settles = np.zeros(stacked.shape, dtype=bool) if settling is None else np.asarray(settling, dtype=bool)
    if settles.shape != stacked.shape:
        raise ValueError(f"settling must have shape {stacked.shape} (terms x groups), got {settles.shape}")
    chosen = np.where(settles, 0.0, stacked)
    effective = {t: chosen[i] for i, t in enumerate(names)}
    picked = chosen.argmax(axis=0)

    gamma = float(terms.gamma)
    eps = tolerances.consensus_total or tolerances.consensus * n_groups
    rounds = rounds_to_consensus(float(np.sum(terms.consensus)), eps, gamma)
    topology_reason = ""
    if terms.n_components > 1:
        topology_reason = f"graph split into {terms.n_components} components"
    elif gamma < tolerances.gamma_min:
        topology_reason = f"gamma {gamma:.3g} < gamma_min {tolerances.gamma_min:.3g}"
    elif rounds > budget.rounds:
        topology_reason = f"rounds to consensus {rounds:.3g} > budget {budget.rounds}"

    kappa = np.asarray(terms.kappa, dtype=float)
    d_g = np.asarray(terms.disagreement, dtype=float)
    local_eta = terms.eta if budget.local_eta is None else budget.local_eta
    local_steps = tuple(
        local_steps_needed(float(r), tolerances.learn, local_eta, float(kappa[g]), budget.max_local_steps)
        for g, r in enumerate(terms.learn)
    )
    mu = tuple(proximal_strength(float(r), tolerances.drift, terms.eta, terms.tau) for r in terms.drift)
    # The size each deferring term's action would take (0: it can do nothing, so it cannot go first).
    sizes = {"learn": local_steps, "drift": mu}

    actions: list[Action] = []
    reasons: list[str] = []
    acted: list[str] = []
    acted_value: list[float] = []
    # Where the share of the copies' size is the tighter consensus tolerance, say so.
    share_binds = cons_tol < tolerances.consensus
    # The consensus term against its own tolerance alone (without the share).
    cons_own = np.asarray(terms.consensus, dtype=float) / tolerances.consensus
    for g, i in enumerate(picked):
        term, value = names[i], float(chosen[i, g])
        by_share = term == "consensus" and bool(share_binds[g])
        share = f"{tolerances.consensus_share:.3g} of the copies' size" if by_share else ""
        deferred = ""
        if tolerances.event_first and by_share and value > 1.0 and cons_own[g] <= 1.0:
            # Only the share holds the consensus term: the disagreement stood before the
            # event.  A term past its own tolerance (what the event raised) acts first;
            # max keeps the first of equal values, so learn wins a tie as in TERMS.
            past = [
                (float(effective[t][g]), t)
                for t in ("learn", "drift")
                if effective[t][g] > 1.0 and sizes[t][g] > 0
            ]
            if past:
                first_value, first = max(past, key=lambda vt: vt[0])
                deferred = (
                    f"{first} at {first_value:.3g}x its tolerance comes first; consensus at "
                    f"{value:.3g}x ({share}; {cons_own[g]:.3g}x its own tolerance) stood before the event"
                )
                term, value = first, first_value
        acted.append(term)
        acted_value.append(value)
        settled = [
            f"{t} at {stacked[k, g]:.3g}x"
            for k, t in enumerate(names)
            if settles[k, g] and stacked[k, g] > 1.0
        ]
        left = f"; left to the regular rounds: {', '.join(settled)}" if settled else ""
        if value > 1.0:  # a deferred-to term is past its tolerance too
            action = TERMS[term]
            by = f" ({share})" if by_share else ""
            reason = (deferred or f"{term} dominates at {value:.3g}x its tolerance{by}") + left
        else:
            action = Action.NONE
            of = f"; tolerance {share}" if by_share else ""
            if settled:
                reason = f"every term within tolerance or settling{left}"
            else:
                reason = f"all terms within tolerance (largest: {term} at {value:.3g}x{of})"
        if topology_reason:
            # The group's own term still decides what priority does with it in the same
            # round (after the links), so the reason names both.
            action = Action.TOPOLOGY_REFINEMENT
            reason = f"topology: {topology_reason}; {reason}"
        actions.append(action)
        reasons.append(reason)

    return Decision(
        actions=tuple(actions),
        reasons=tuple(reasons),
        dominant=dominant,
        dominant_value=dominant_value,
        acted=tuple(acted),
        acted_value=tuple(acted_value),
        normalised_learn=tuple(float(v) for v in normalised["learn"]),
        normalised_drift=tuple(float(v) for v in normalised["drift"]),
        normalised_consensus=tuple(float(v) for v in normalised["consensus"]),
        topology=bool(topology_reason),
        topology_reason=topology_reason,
        rounds_to_consensus=rounds,
        local_steps=local_steps,
        mu=mu,
        exchanges=tuple(
            exchanges_needed(float(d), float(t), gamma) for d, t in zip(d_g, cons_tol, strict=True)
        ),
    )


# --------------------------------------------------------------------------- topology


def _score(adjacency: np.ndarray) -> tuple[int, float]:
    """Higher is better: fewer components first, then a larger spectral gap."""
    n_comp = len(components(adjacency))
    gamma = spectral_gap(metropolis_hastings(adjacency)) if n_comp == 1 else 0.0
    return -n_comp, gamma


def refine_topology(adjacency: np.ndarray, feasible: np.ndarray, k: int, shortlist: int = 3) -> np.ndarray:
    """Greedily add up to ``k`` feasible links that most raise the spectral gap; returns the new adjacency.

    ``feasible[i, j]`` says the link's rate clears the threshold; the candidates are
    the feasible pairs not yet in the graph.  Each round ranks them by
    ``|v_i - v_j|`` with ``v`` the Fiedler vector of the Metropolis-Hastings Laplacian
    ``I - W`` (to first order, a link of weight ``w`` raises ``lambda_2(I - W)`` by
    ``w (v_i - v_j)^2``), links that join two components first; it then recomputes the
    score (components, then gamma) of the ``shortlist`` best ranked and adds the best of
    them if it improves on the current graph.  It stops early when none does: adding a
    link changes the degrees and so every Metropolis-Hastings weight, and can lower gamma.
    A split graph is reconnected whenever a feasible bridge exists (bridges rank first
    and fewer components always score higher).

    Against a brute force over every single feasible link (tests/policy/test_priority.py,
    300 random connected graphs of 4-12 nodes): with ``shortlist=3`` the chosen link is
    the best in 95.8 % of graphs and its gamma at most 4.5 % below the best (1: 82 %,
    16 %; 5: 99 %, 3.1 %); on paths of 3-15 nodes it is always the best.
    """
    adj = np.asarray(adjacency, dtype=bool).copy()
    feas = np.asarray(feasible, dtype=bool)
    n = len(adj)
    if adj.shape != (n, n) or not np.array_equal(adj, adj.T):
        raise ValueError("adjacency must be a square symmetric matrix")
    if feas.shape != (n, n) or not np.array_equal(feas, feas.T):
        raise ValueError(f"feasible must be a symmetric {n} x {n} matrix (got shape {feas.shape})")
    if k < 0 or shortlist < 1:
        raise ValueError(f"k must be >= 0 and shortlist >= 1 (got k={k}, shortlist={shortlist})")
    np.fill_diagonal(adj, False)
    for _ in range(k):
        cand = np.argwhere(np.triu(feas & ~adj, k=1))
        if len(cand) == 0:
            break
        label = np.empty(n, dtype=np.int64)
        for c, members in enumerate(components(adj)):
            label[members] = c
        laplacian = np.eye(n) - metropolis_hastings(adj)
        fiedler = np.linalg.eigh(laplacian)[1][:, 1]
        bridges = label[cand[:, 0]] != label[cand[:, 1]]
        spread = np.abs(fiedler[cand[:, 0]] - fiedler[cand[:, 1]])
        order = np.lexsort((-spread, ~bridges))  # bridges first, then the largest spread
        best, best_score = None, _score(adj)
        for i, j in cand[order[:shortlist]]:
            adj[i, j] = adj[j, i] = True
            score = _score(adj)
            adj[i, j] = adj[j, i] = False
            if score > best_score:
                best, best_score = (int(i), int(j)), score
        if best is None:
            break
        adj[best[0], best[1]] = adj[best[1], best[0]] = True
    return adj
