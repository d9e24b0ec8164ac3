"""From a residual estimate to one round's correction actions (method.md section 6).

The engine estimates the residuals after a join or a leave
(:func:`cosim.learning.residuals.compute_residuals`), asks
:func:`cosim.policy.priority.decide` for the priority-aware decision, and turns it
into a :class:`Plan` with :func:`plan_round`:

* ``priority``: topology refinement first when the graph calls for it (split, gap
  below ``gamma_min``, or too many rounds to consensus), then, in the same round, per
  layer group the action of the term the decision acts on (``Decision.acted``: the
  dominant normalised term, unless ``event_first`` defers a consensus term only the
  share holds) when it exceeds its tolerance, sized by the decision;
* a single-action policy (``local``, ``proximal``, ``sync``, ``topology``): that
  action on every group the priority policy would act on at all (some term above its
  tolerance, or the topology condition), sized by its own rule; where that size is 0
  (its own term is within tolerance) it takes a minimum dose: ``tau`` extra local
  steps, ``mu = 1 / (eta tau)``, one exchange, or one link.

With ``wait_rounds`` the first rounds pass as under ``none`` (the engine still decides,
to log the residuals), and from then on :func:`settling_terms` leaves to the regular
rounds a term that, at the rate it fell while the correction waited
(:func:`waiting_rate`), comes within tolerance in the rounds left.

Sizes are capped by the correction budget (``max_local_steps``, ``max_syncs``,
``max_links``), and :func:`fit_plan` cuts a round's extra exchanges and steps to what is
left of its seconds and bits.  Local correction sizes each of its groups on its own: the extra steps
train a group for that group's count and leave the groups of other actions as they are.
When several devices take the extra steps together after a leave (every retained
device), each keeps ``1 / m`` of its displacement (:func:`parallel_step_scale`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from cosim.engine.replay import ReplayCost
from cosim.policy.priority import TERMS, Action, Budget, Decision, Tolerances, decide
from cosim.scenario import Correction as CorrectionSpec

__all__ = [
    "LOSS_RESOLUTION",
    "SINGLE_ACTIONS",
    "CorrectionState",
    "Plan",
    "RoundCost",
    "accuracy_drop",
    "allocation_weights",
    "decide_for",
    "drift_level",
    "fit_plan",
    "normalised_terms",
    "parallel_step_scale",
    "plan_round",
    "settling_terms",
    "waiting_rate",
]

SINGLE_ACTIONS: dict[str, Action] = {
    "local": Action.LOCAL_CORRECTION,
    "proximal": Action.PROXIMAL_DAMPING,
    "sync": Action.SYNC_SCHEDULING,
    "topology": Action.TOPOLOGY_REFINEMENT,
}
"""Single-action policy name -> its action."""


@dataclass(frozen=True)
class Plan:
    """What a correction does in one round (the default does nothing)."""

    actions: tuple[Action, ...] = ()
    extra_steps: int = 0  # local steps before the regular ones (on CorrectionState.trains)
    # Per layer group, how many of those steps train it (the groups whose action is local
    # correction); the other groups stay as they are during them.
    extra_group_steps: tuple[int, ...] = ()
    mu: tuple[float, ...] = ()  # proximal strength per layer group (empty: none)
    syncs: int = 0  # extra exchanges at the start of the round
    sync_groups: tuple[int, ...] = ()  # the groups those exchanges carry
    links: int = 0  # links topology refinement may add now

    def __post_init__(self) -> None:
        if self.extra_steps and max(self.extra_group_steps, default=0) != self.extra_steps:
            raise ValueError(
                f"extra_group_steps {list(self.extra_group_steps)}: the largest count must be "
                f"extra_steps ({self.extra_steps})"
            )

    @property
    def idle(self) -> bool:
        return not self.extra_steps and not any(self.mu) and not self.syncs and not self.links


@dataclass(frozen=True)
class RoundCost:
    """What one round of a correction costs, as :func:`fit_plan` counts it."""

    seconds: float  # a regular round, its steps and its exchange; every extra exchange the same
    bits: float  # likewise
    step_s: float  # one extra local step on the slowest device that takes them


@dataclass
class CorrectionState:
    """A correction in progress and what it has spent so far."""

    kind: str  # the event that started it: leave (a silent one too, once detected) or join
    event_round: int
    start_s: float
    start_bits: int
    affected: list[int]  # whose residuals are estimated
    trains: list[int] = field(default_factory=list)  # who takes local correction's extra steps
    shock: dict[int, np.ndarray] | None = None  # per device: deletion shock per group, before the tombstone
    # The residuals just before the event and the devices they were measured on (relative
    # tolerances; None otherwise): every decision of this correction divides by them.
    baseline: tuple[Any, list[int]] | None = None
    rounds: int = 0
    local_steps: int = 0  # extra local steps, summed over devices
    syncs: int = 0
    links_added: int = 0
    acting_rounds: int = 0  # rounds in which it did something (steps, damping, exchanges or links)
    weights: np.ndarray | None = None  # allocation weight per group from the last decision
    replay_rounds: int | None = None  # retrain: the rounds before the event, replayed from scratch
    # local_target teacher, after a leave: per trainee its model's centred answer logits on its
    # training samples from before the tombstones (local correction's target).
    teacher: dict[int, Any] | None = None
    # tolerances.teacher_progress: the teacher distance before the last round of extra steps
    # (None when that round took none), and whether the steps towards the teacher are done.
    # wait_rounds: the event's decision's normalised terms (TERMS order x groups), and the
    # factor a round each fell by while the correction waited (waiting_rate).
    first_terms: np.ndarray | None = None
    wait_rate: np.ndarray | None = None
    teacher_before: float | None = None
    teacher_done: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    # What the correction may spend in all (budget.seconds and budget.bits, or their
    # replay_share if lower; None: no limit), and a round's cost as it plans (None: no
    # round before the event to take it from).
    limit_s: float | None = None
    limit_bits: float | None = None
    round_cost: RoundCost | None = None
    replay: ReplayCost | None = None  # the estimate of retrain's replay these come from

    @property
    def teacher_rows(self) -> int:
        """The samples the teacher pass ran on, over every trainee (0 without one)."""
        return sum(len(t) for t in self.teacher.values()) if self.teacher else 0

    def trainees(self, active: list[int]) -> list[int]:
        """The devices of ``trains`` still active: those that take local correction's extra steps now."""
        return [d for d in self.trains if d in active]


def parallel_step_scale(trainees: int, kind: str = "leave", share: str = "parallel") -> float:
    """The fraction of its extra steps' displacement each of ``trainees`` devices keeps (after ``kind``).

    After a leave ``1 / m``; after a join 1: the newcomers (several when they join in the
    same round) each train on their own facts, a gap no other device closes.  With
    ``share`` ``whole`` (``correction.step_share``) 1 after either.

    The ``m`` devices of a local correction train at the same time, each its own slot
    against copies of the others' slots that lack their corrections, and the slots add
    up in every device's model.  Where the gap is common to them (after a leave, what
    the leaver's slot did for data they all hold, and the directions the slots
    co-adapted in), each device's steps alone would close all of it, and the ``m``
    corrections together close it ``m`` times over.  That is the parallel block
    coordinate descent step: with ``m`` blocks updated at once on terms that each depend
    on all ``m``, the safe step is ``1 / m`` of each block's own (Richtarik and Takac,
    2016, Parallel coordinate descent methods for big data optimization, with
    ``tau = n = omega = m``).  A part of the gap only one device can close (its own
    facts) is then closed ``1 / m`` at a time; the policy re-decides every round.  The
    argument is for one gradient step; applied to a multi-step (Adam) displacement it is
    a heuristic, and with Adam the first moment still holds the whole correction's
    direction when the round's regular steps begin, so the fraction actually kept is
    somewhat above ``1 / m`` (the measurements below include that).

    Measured in the learning regime with the package at eea5b5a (``EXPERIMENTS.md`` section 1
    as of 2e00da7; the runs there have since been made again), leave seeds 2 and 3:
    retained accuracy at the end of the correction's first round 0.32 and 0.44 with the
    whole displacement, 0.78 and 0.74 with ``1 / m`` (no correction: 0.52 and 0.49).
    """
    if trainees < 1:
        raise ValueError(f"trainees: a local correction needs at least one device (got {trainees})")
    return 1.0 / trainees if kind != "join" and share != "whole" else 1.0


def tolerances_of(spec: CorrectionSpec) -> Tolerances:
    t = spec.tolerances
    return Tolerances(
        learn=t.learn,
        drift=t.drift,
        consensus=t.consensus,
        gamma_min=t.gamma_min,
        consensus_share=t.consensus_share,
        event_first=t.event_first,
    )


@dataclass(frozen=True)
class ScaledTerms:
    """Residual terms divided by their pre-event level (relative tolerances).

    ``decide`` only ever compares a term with its tolerance (and sizes actions from their
    ratio), so dividing a term and its tolerance by the same level changes nothing but
    the unit: the relative tolerance applies to the scaled term as it is.
    """

    learn: np.ndarray
    drift: np.ndarray
    consensus: np.ndarray
    disagreement: np.ndarray
    magnitude: np.ndarray
    kappa: np.ndarray
    gamma: float
    n_components: int
    eta: float
    tau: int


def _level(values: np.ndarray) -> np.ndarray:
    """A pre-event level to divide by: where a group's level is 0, the largest level (or 1)."""
    values = np.asarray(values, dtype=float)
    fallback = float(values.max()) if values.size and values.max() > 0 else 1.0
    return np.where(values > 0, values, fallback)


LOSS_RESOLUTION = float(np.finfo(np.float32).eps)
"""The share of a loss below which float32, the models' arithmetic, does not resolve a change of it."""


def drift_level(drift: np.ndarray, loss_devices: np.ndarray) -> np.ndarray:
    """The pre-event level the drift term is measured against: its own (:func:`_level`), but
    at least ``LOSS_RESOLUTION`` times the mean loss of the devices the pre-event residuals
    were measured on (every device active just before the event; for a leave, the leaver
    too).

    ``R_drift`` predicts the loss the devices' drift adds in a round.  The models compute in
    float32, which holds a loss ``L`` to about ``LOSS_RESOLUTION * L``: a predicted excess
    below that is none the model can show, and a level below it is rounding.  At a
    converged model the level can be far below it (consensus, leave at round 112 at a
    learning rate of 0.001: ``R_drift`` about 1e-13 on a mean loss of 0.004), and any
    disturbance of the gradients then reads as drift up to thousands of times its level.
    """
    loss = np.asarray(loss_devices, dtype=float)
    floor = LOSS_RESOLUTION * float(loss.mean()) if loss.size else 0.0
    return np.maximum(_level(drift), floor)


def _largest_device(learn_devices: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group, the largest device's ``R_learn`` (zeros when no device was measured)."""
    rows = np.asarray(learn_devices, dtype=float).reshape(-1, n_groups)
    return rows.max(axis=0) if len(rows) else np.zeros(n_groups)


def loss_ratio(loss: Mapping[int, float], before: Mapping[int, float]) -> float:
    """The affected devices' measured loss in units of its level before the event.

    ``loss`` and ``before`` map a device to its mean loss on its samples, after and before
    the event (the same samples of each device).  The devices measured before (after a
    leave, the retained ones) count together: their summed loss after over their summed
    loss before.  A device not measured before (a newcomer) counts alone: its loss over
    the devices' mean loss before.  Returns the largest of these ratios (0 with nothing
    to compare).  A loss that is not finite (training diverged) is an error.
    """
    for d, value in [*loss.items(), *before.items()]:
        if not np.isfinite(value):
            raise ValueError(f"device {d}: its mean loss on its residual samples is {value}, not finite")
    known = [d for d in loss if d in before]
    ratios = []
    if known:
        level = sum(before[d] for d in known)
        ratios.append(sum(loss[d] for d in known) / (level if level > 0 else 1.0))
    newcomers = [d for d in loss if d not in before]
    if newcomers and before:
        mean = float(np.mean(list(before.values())))
        level = mean if mean > 0 else 1.0
        ratios += [loss[d] / level for d in newcomers]
    return float(max(ratios, default=0.0))


def accuracy_drop(accuracy: Mapping[int, float], before: Mapping[int, float]) -> float | None:
    """How far the devices' accuracy on their residual samples fell since before the event.

    ``accuracy`` and ``before`` map a device to its accuracy on its samples now and just
    before the event (the same samples of each device).  Over the devices measured both
    times (after a leave, the retained ones), the mean of ``before - accuracy``: above 0
    when the event took accuracy off, below 0 when they are better than before.  ``None``
    when no device was measured both times.
    """
    known = [d for d in accuracy if d in before]
    if not known:
        return None
    return float(np.mean([before[d] - accuracy[d] for d in known]))


def relative_terms(
    terms: Any,
    baseline: Any,
    n_before: int,
    n_after: int,
    measured_loss: float | None = None,
    drift_floor: bool = False,
) -> ScaledTerms:
    """``terms`` in units of ``baseline`` (the same terms just before the event).

    ``R_learn`` is summed over the affected devices: its level is scaled from the
    ``n_before`` devices of the baseline to the ``n_after`` of the event.  The sum alone
    dilutes one device's gap by the number of devices (a newcomer with 4 times a
    device's term among seven unchanged neighbours raises the sum only 11 / 8 = 1.4
    fold), so ``R_learn`` is also compared device by device: the largest affected
    device's term over the largest device's term before the event.  The learn term is
    the larger of the two ratios: it calls for action when the event raised either the
    total or one device's residual past the tolerance.  Drift and consensus are means
    over devices and are compared as they are; the copies' size ``M_g`` is in the
    consensus term's units and is divided by the same level (``consensus_share`` compares
    the two, so its ratio is unchanged).  ``measured_loss`` (:func:`loss_ratio`,
    already in units of its pre-event level) counts as a third ratio for ``R_learn`` in
    every group.  With ``drift_floor`` the drift term's level is :func:`drift_level`, which
    reads the baseline's ``loss_devices``.
    """
    n_groups = len(np.asarray(terms.learn))
    total = np.asarray(terms.learn) / _level(np.asarray(baseline.learn) * n_after / max(n_before, 1))
    device = _largest_device(terms.learn_devices, n_groups) / _level(
        _largest_device(baseline.learn_devices, n_groups)
    )
    cons_level = _level(baseline.consensus)
    return ScaledTerms(
        learn=np.maximum(np.maximum(total, device), 0.0 if measured_loss is None else measured_loss),
        drift=np.asarray(terms.drift)
        / (drift_level(baseline.drift, baseline.loss_devices) if drift_floor else _level(baseline.drift)),
        consensus=np.asarray(terms.consensus) / cons_level,
        disagreement=np.asarray(terms.disagreement) / cons_level,
        magnitude=np.asarray(terms.magnitude) / cons_level,
        kappa=np.asarray(terms.kappa),
        gamma=float(terms.gamma),
        n_components=int(terms.n_components),
        eta=float(terms.eta),
        tau=int(terms.tau),
    )


def normalised_terms(decision: Decision) -> np.ndarray:
    """A decision's normalised terms, ``TERMS`` order x groups."""
    values = {
        "learn": decision.normalised_learn,
        "drift": decision.normalised_drift,
        "consensus": decision.normalised_consensus,
    }
    return np.array([values[t] for t in TERMS], dtype=float)


def waiting_rate(first: np.ndarray, waited: np.ndarray, rounds: int) -> np.ndarray:
    """The factor a round each term fell by while the correction waited.

    ``first`` and ``waited`` are normalised terms (term / tolerance, any shape) at the
    event's decision and ``rounds`` regular rounds later: ``q = (waited / first)^(1 / rounds)``.
    A term that was 0 at the event has no rate (``inf``: it does not settle).
    """
    if rounds < 1:
        raise ValueError(f"waiting_rate needs at least one round of waiting (got {rounds})")
    first = np.asarray(first, dtype=float)
    waited = np.asarray(waited, dtype=float)
    rate = np.full(first.shape, np.inf)
    known = first > 0
    rate[known] = (np.maximum(waited[known], 0.0) / first[known]) ** (1.0 / rounds)
    return rate


def settling_terms(rate: np.ndarray, now: np.ndarray, rounds_left: int) -> np.ndarray:
    """Which terms the regular rounds left bring within tolerance at the rate they fell while waiting.

    ``rate`` is :func:`waiting_rate`, ``now`` the normalised terms of this decision.  A term
    past its tolerance whose rate is below 1 is within it after ``log(now) / -log(rate)``
    more rounds at that rate, and settles when that is at most ``rounds_left`` (the rounds
    of the budget left, this one included).  A term that did not fall while waiting does
    not settle.
    """
    rate = np.asarray(rate, dtype=float)
    now = np.asarray(now, dtype=float)
    fell = (now > 1.0) & (rate < 1.0)
    needed = np.full(now.shape, np.inf)
    with np.errstate(divide="ignore"):
        needed[fell] = np.log(now[fell]) / -np.log(rate[fell])
    return fell & (needed <= rounds_left)


def decide_for(
    terms: Any,
    spec: CorrectionSpec,
    rounds_left: int,
    baseline: Any = None,
    n_before: int = 1,
    n_after: int = 1,
    measured_loss: float | None = None,
    settling: np.ndarray | None = None,
) -> Decision:
    """The priority-aware decision with the scenario's tolerances and what is left of the budget.

    With relative tolerances, ``baseline`` holds the terms just before the event,
    measured on ``n_before`` affected devices (``terms`` on ``n_after``); both need
    ``learn_devices``, one row per measured device (:func:`relative_terms`).
    ``measured_loss`` (:func:`loss_ratio`) counts only with ``tolerances.measured_loss``.
    ``settling`` goes to :func:`~cosim.policy.priority.decide`.
    """
    budget = Budget(
        rounds=max(rounds_left, 0),
        max_local_steps=spec.budget.max_local_steps,
        local_eta=spec.learning_rate,
    )
    if spec.tolerances.mode == "relative":
        if baseline is None:
            raise ValueError("relative tolerances need the pre-event residuals (baseline)")
        counted = measured_loss if spec.tolerances.measured_loss else None
        terms = relative_terms(terms, baseline, n_before, n_after, counted, spec.tolerances.drift_floor)
    return decide(terms, tolerances_of(spec), budget, settling)


def _acts(decision: Decision) -> list[bool]:
    """Groups the priority policy would act on."""
    return [a != Action.NONE for a in decision.actions]


def plan_round(policy: str, decision: Decision, spec: CorrectionSpec, eta: float, tau: int) -> Plan:
    """This round's actions under ``policy`` given ``decision`` (see the module docstring)."""
    budget = spec.budget
    n = decision.n_groups
    links = 0
    if policy == "priority":
        # Topology refinement first (links), and in the same round each group's term acted on.
        links = budget.max_links if decision.topology else 0
        actions = [
            TERMS[term] if value > 1.0 else Action.NONE
            for term, value in zip(decision.acted, decision.acted_value, strict=True)
        ]
    elif policy in SINGLE_ACTIONS:
        single = SINGLE_ACTIONS[policy]
        actions = [single if act else Action.NONE for act in _acts(decision)]
        if single == Action.TOPOLOGY_REFINEMENT:
            return Plan(actions=tuple(actions), links=budget.max_links if any(_acts(decision)) else 0)
    else:
        raise ValueError(f"correction.policy {policy!r} has no per-round plan")

    floor = policy != "priority"
    group_steps = [0] * n
    for g in range(n):
        if actions[g] == Action.LOCAL_CORRECTION:
            steps_g = decision.local_steps[g] or (tau if floor else 0)
            group_steps[g] = min(steps_g, budget.max_local_steps)
    steps = max(group_steps, default=0)

    mu = [0.0] * n
    for g in range(n):
        if actions[g] == Action.PROXIMAL_DAMPING:
            mu[g] = decision.mu[g] or (1.0 / (eta * tau) if floor else 0.0)

    sync = tuple(g for g in range(n) if actions[g] == Action.SYNC_SCHEDULING)
    counts = [decision.exchanges[g] for g in sync]
    syncs = max((budget.max_syncs if u is None else u for u in counts), default=0)
    if sync and syncs == 0 and floor:
        syncs = 1
    syncs = min(syncs, budget.max_syncs)
    return Plan(
        actions=tuple(actions),
        extra_steps=steps,
        extra_group_steps=tuple(group_steps) if steps else (),
        mu=tuple(mu) if any(mu) else (),
        syncs=syncs,
        sync_groups=sync if syncs else (),
        links=links,
    )


def _how_many(left: float, each: float) -> float:
    """How many items of cost ``each`` fit into ``left`` (any number when they cost nothing)."""
    if each <= 0 or math.isinf(left):
        return math.inf if left >= 0 else 0.0
    return max(math.floor(left / each + 1e-9), 0)


def fit_plan(plan: Plan, left_s: float, left_bits: float, cost: RoundCost) -> Plan:
    """``plan`` cut so that its round costs at most ``left_s`` seconds and ``left_bits`` bits.

    The round's regular steps and exchange are paid whatever the plan (``cost.seconds``,
    ``cost.bits``).  Extra exchanges come first (synchronisation before more training):
    each costs a regular round's seconds and bits, and as many are kept as fit.  Extra
    local steps then cost ``cost.step_s`` each plus the exchange that sends the
    corrected slots (a round's seconds and bits): they are kept, or cut to as many as
    fit (none when that exchange's bits do not), each group to at most that many.
    Proximal damping and links cost nothing and stay.
    """
    rest_s, rest_bits = left_s - cost.seconds, left_bits - cost.bits
    syncs = int(min(plan.syncs, _how_many(rest_s, cost.seconds), _how_many(rest_bits, cost.bits)))
    rest_s -= syncs * cost.seconds
    rest_bits -= syncs * cost.bits
    steps = plan.extra_steps
    if steps:
        exchange_fits = rest_s >= cost.seconds and rest_bits >= cost.bits
        fit = _how_many(rest_s - cost.seconds, cost.step_s) if exchange_fits else 0
        steps = int(min(steps, fit))
    return replace(
        plan,
        syncs=syncs,
        sync_groups=plan.sync_groups if syncs else (),
        extra_steps=steps,
        extra_group_steps=tuple(min(s, steps) for s in plan.extra_group_steps) if steps else (),
    )


def allocation_weights(decision: Decision) -> np.ndarray:
    """Weight of each layer group in the allocation: the sum of its normalised residual terms."""
    return (
        np.asarray(decision.normalised_learn)
        + np.asarray(decision.normalised_drift)
        + np.asarray(decision.normalised_consensus)
    )
