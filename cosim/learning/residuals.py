"""Residuals of a membership event, per layer group (method.md section 6).

Right after a join or a leave the correction policy needs, for every layer group
``g``, a few numbers estimated from a handful of samples per device:

* projection gradient energy ``E_g = sum_i |grad_{B_own(i), g} f_i|_F^2`` (the mean-batch
  gradient of each affected device on its own slot);
* the diagonal empirical Fisher ``F_g`` of the same slot parameters (mean squared
  per-sample gradient), its mean ``kappa_g`` and a high quantile ``kappa_max_g``;
* the deletion shock ``S_g = 1/2 <F_g, B_{k,g}^2>`` of a deleted slot ``k``;
* ``R_learn_g = E_g / (2 kappa_g) + S_g``, and the same per affected device (its own
  ``E`` and ``S``, the pooled ``kappa``): the rows add up to ``R_learn_g``;
* ``R_drift_g = eta^2 tau^2 kappa_max_g zeta_g^2`` with ``zeta_g^2`` the spread of the
  devices' projected gradients;
* ``R_cons_g = (1 - gamma)^(2 u_g) D_g`` with ``D_g`` the disagreement of the copies,
  and the squared size ``M_g`` of their mean, the scale that ``D_g`` is judged against
  when a tolerance is a share of the adapter's size;
* each affected device's mean cross-entropy on its samples (``loss_devices``), the loss
  that ``R_learn`` predicts the excess of, measured, and its accuracy on them
  (``accuracy_devices``).

Units: ``E_g / (2 kappa_g)`` is the loss gap of a ``kappa``-strongly-convex (PL)
function whose gradient has energy ``E_g``, summed over the affected devices; ``S_g``
is likewise summed over the retained devices, so ``R_learn_g`` is a predicted excess of
the *sum* of the devices' mean losses.

The math sits in small functions that take tensors and return numpy arrays; only
:func:`per_sample_slot_grads`, :func:`draw_samples` and :func:`compute_residuals` read
a :class:`~cosim.learning.learner.SlotLearner`, and none of them changes its state (the
slot layers' transient views are set for one pass and cleared again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cosim.graph import components, metropolis_hastings, spectral_gap
from cosim.learning.data import Split
from cosim.learning.learner import SlotLearner

__all__ = [
    "Residuals",
    "compute_residuals",
    "connectivity",
    "consensus_residual",
    "deletion_shock",
    "deletion_shock_full",
    "diagonal_fisher",
    "disagreement",
    "draw_samples",
    "drift_residual",
    "fisher_curvature",
    "gradient_energy",
    "gradient_energy_unbiased",
    "gradient_spread",
    "group_sums",
    "learning_residual",
    "magnitude",
    "per_sample_slot_grads",
    "per_sample_slot_grads_and_losses",
    "per_sample_slot_grads_losses_accuracy",
    "sample_indices",
    "slot_view",
]

ModuleTensors = Mapping[str, torch.Tensor]


@dataclass(frozen=True, eq=False)
class Residuals:
    """Every residual term of one event, one entry per layer group (arrays of length G)."""

    energy_unbiased: np.ndarray  # E_g without its sampling noise (may be < 0; diagnostic, not used)
    kappa: np.ndarray  # mean of the diagonal empirical Fisher of the own-slot parameters
    kappa_max: np.ndarray  # its `quantile` quantile
    shock_full: np.ndarray  # the same with the full empirical Fisher of the group (not used in `learn`)
    learn: np.ndarray  # R_learn_g = E_g / (2 kappa_g) + S_g
    energy_devices: np.ndarray  # (affected, G): each affected device's share of E_g
    shock_devices: np.ndarray  # (affected, G): each device's share of S_g (zeros: no slot deleted)
    learn_devices: np.ndarray  # (affected, G): E_i,g / (2 kappa_g) + S_i,g (rows add up to learn)
    loss_devices: np.ndarray  # (affected,): each affected device's mean cross-entropy on its samples
    accuracy_devices: np.ndarray  # (affected,): each affected device's accuracy on the same samples
    zeta_sq: np.ndarray  # spread of the devices' projected mean gradients
    drift: np.ndarray  # R_drift_g = eta^2 tau^2 kappa_max_g zeta_g^2
    disagreement: np.ndarray  # D_g, mean squared distance of the copies to their mean
    magnitude: np.ndarray  # M_g, squared size of the mean copy (the scale D_g is judged against)
    exchanges: np.ndarray  # u_g, the exchanges of group g planned
    consensus: np.ndarray  # R_cons_g = (1 - gamma)^(2 u_g) D_g
    gamma: float  # spectral gap of the Metropolis-Hastings matrix of the graph
    n_components: int  # connected components of the graph
    eta: float  # the step size and local steps the drift was computed with
    tau: int
    quantile: float

    @property
    def energy(self) -> np.ndarray:
        """``E_g``, summed over the affected devices."""
        return self.energy_devices.sum(axis=0)

    @property
    def shock(self) -> np.ndarray:
        """``S_g`` of the deleted slot, summed over the affected devices."""
        return self.shock_devices.sum(axis=0)

    @property
    def n_groups(self) -> int:
        return len(self.learn)


# --------------------------------------------------------------------------- per-sample gradients


def slot_view(learner: SlotLearner, device: int, slot: int) -> dict[str, torch.Tensor]:
    """``device``'s value of slot ``slot``'s ``B`` per module (its own parameters for its own slot)."""
    if learner.slot_of.get(device) == slot:
        return {n: p.detach().clone() for n, p in learner.own[device].items()}
    return {n: c[device, slot].clone() for n, c in learner.copies.items()}


def per_sample_slot_grads(
    learner: SlotLearner,
    device: int,
    inputs: np.ndarray,
    answers: np.ndarray,
    slot: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-sample gradients of the loss w.r.t. slot ``slot``'s ``B`` in ``device``'s view
    (:func:`per_sample_slot_grads_and_losses` without the losses)."""
    return per_sample_slot_grads_and_losses(learner, device, inputs, answers, slot)[0]


def per_sample_slot_grads_and_losses(
    learner: SlotLearner,
    device: int,
    inputs: np.ndarray,
    answers: np.ndarray,
    slot: int | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:func:`per_sample_slot_grads_losses_accuracy` without the accuracies."""
    grads, losses, _ = per_sample_slot_grads_losses_accuracy(learner, device, inputs, answers, slot)
    return grads, losses


def per_sample_slot_grads_losses_accuracy(
    learner: SlotLearner,
    device: int,
    inputs: np.ndarray,
    answers: np.ndarray,
    slot: int | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per-sample gradients of the loss w.r.t. slot ``slot``'s ``B`` in ``device``'s view.

    ``slot`` defaults to the device's own slot.  The device's view is its copy of every
    slot with its own slot taken from its trainable parameters, as in training, but with
    no slot dropout.  Returns ``{module: (n, d_out, r)}``, where row ``i`` is the gradient
    of the cross-entropy of sample ``i`` alone, the ``n`` cross-entropies and the ``n``
    accuracies (:meth:`~cosim.learning.learner.SlotLearner.sample_losses`).

    Exact, in one forward and one backward pass: every sample runs as its own "device"
    of the batched slot layers, each with its own leaf copy of ``B``; a sample's loss
    depends only on its own leaf, so the gradient of the summed loss w.r.t. leaf ``i`` is
    sample ``i``'s gradient.
    """
    n = len(answers)
    if n == 0:
        raise ValueError("per_sample_slot_grads needs at least one sample")
    own = learner.slot_of.get(device)
    target = own if slot is None else slot
    if target is None:
        raise ValueError(f"device {device} holds no slot; name the slot to differentiate")
    if not 0 <= target < learner.capacity:
        raise ValueError(f"slot {target} is out of range; allowed: 0..{learner.capacity - 1}")
    slot_index = torch.full((n,), target, dtype=torch.long)
    leaves: dict[str, torch.Tensor] = {}
    try:
        for name, layer in learner.layers.items():
            view = learner.copies[name][device].detach().clone()  # (K, d_out, r)
            if own is not None:
                view[own] = learner.own[device][name].detach()
            value = view[target].clone()
            view[target] = 0.0
            layer.views = view.permute(1, 0, 2).reshape(1, layer.d_out, -1).expand(n, -1, -1)
            leaves[name] = value.expand(n, -1, -1).clone().requires_grad_(True)
            layer.own = leaves[name]
            layer.own_slot = slot_index
        losses, correct = learner.sample_losses(np.asarray(inputs), np.asarray(answers))
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
    finally:
        learner._clear_views()
    grads_of = {name: g.detach() for name, g in zip(leaves, grads, strict=True)}
    return grads_of, losses.detach(), correct.detach()


def draw_samples(
    learner: SlotLearner, devices: Sequence[int], n: int, key: Sequence[int]
) -> dict[int, Split]:
    """Up to ``n`` distinct training samples of each device (all of them when it has fewer).

    Device ``d``'s draw is seeded by ``(*key, d)`` alone, so it does not depend on which
    other devices are drawn for: measurements with the same ``key`` (the pre-event
    baseline and the decisions after the event) see each device's same samples, and
    their ratio compares the model, not two draws.
    """
    out = {}
    for d in devices:
        data = learner.task.train[d]
        idx = sample_indices(len(data), n, key, d)
        out[d] = Split(data.inputs[idx], data.answers[idx])
    return out


def sample_indices(population: int, n: int, key: Sequence[int], device: int) -> np.ndarray:
    """The sorted rows of a ``population``-sample training set that :func:`draw_samples` draws
    for ``device`` under ``key`` (all of them when ``n >= population``)."""
    rng = np.random.default_rng(np.random.SeedSequence([*key, device]))
    return np.sort(rng.choice(population, size=min(n, population), replace=False))


# --------------------------------------------------------------------------- pure math


def group_sums(per_module: ModuleTensors, group_of: Mapping[str, int], n_groups: int) -> np.ndarray:
    """Sum of all entries of each module's tensor, added up per layer group (float64)."""
    out = np.zeros(n_groups)
    for name, t in per_module.items():
        out[group_of[name]] += float(t.double().sum())
    return out


def diagonal_fisher(per_sample: ModuleTensors) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: the mean over samples (dim 0) of the squared per-sample gradient."""
    return {name: g.double().pow(2).mean(dim=0) for name, g in per_sample.items()}


def gradient_energy(
    mean_grads: Sequence[ModuleTensors], group_of: Mapping[str, int], n_groups: int
) -> np.ndarray:
    """``E_g = sum_i |G_i,g|_F^2`` over the devices' mean-batch gradients ``G_i``."""
    energy = np.zeros(n_groups)
    for grads in mean_grads:
        energy += group_sums({n: g.double().pow(2) for n, g in grads.items()}, group_of, n_groups)
    return energy


def gradient_energy_unbiased(
    per_sample: ModuleTensors, group_of: Mapping[str, int], n_groups: int, population: int | None = None
) -> np.ndarray:
    """``|grad f|^2`` of one device per group without the sampling noise of its ``n`` samples.

    ``f`` is the mean loss over the device's ``population`` samples, of which ``n`` were
    drawn without replacement (:func:`draw_samples`; ``None``: an unlimited population).
    The squared norm of the mean sampled gradient, which :func:`gradient_energy` sums,
    is ``|grad f|^2`` plus the noise ``(1 - n / N) s^2 / n`` in expectation, with ``s^2``
    the sample variance (``sum_i |g_i - mean|^2 / (n - 1)``) and ``N`` the population;
    this subtracts it, so it can come out negative.  Without a population it is the
    pairwise form ``sum_{i != j} <g_i, g_j> / (n (n - 1))``; with every sample drawn
    (``n = N``) it is the squared mean itself.  NaN for one sample of a larger population.
    """
    first = next(iter(per_sample.values()), None)
    n = 0 if first is None else first.shape[0]
    if population is not None and n > population:
        raise ValueError(f"{n} samples cannot be drawn without replacement from {population}")
    keep = 1.0 if population is None else 1.0 - n / population  # the noise's finite-population factor
    if n < 2 and keep > 0:
        return np.full(n_groups, np.nan)
    out = {}
    for name, g in per_sample.items():
        g = g.double().flatten(1)
        mean = g.mean(dim=0)
        noise = keep * (g - mean).pow(2).sum() / (n - 1) / n if keep > 0 else 0.0
        out[name] = mean.pow(2).sum() - noise
    return group_sums(out, group_of, n_groups)


def fisher_curvature(
    fishers: Sequence[ModuleTensors], group_of: Mapping[str, int], n_groups: int, quantile: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """``(kappa_g, kappa_max_g)``: mean and ``quantile`` quantile of the Fisher entries of group g.

    Every device's slot is its own set of parameters: the entries of all the given
    Fishers in a group are pooled.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1] (got {quantile})")
    pooled: list[list[np.ndarray]] = [[] for _ in range(n_groups)]
    for fisher in fishers:
        for name, f in fisher.items():
            pooled[group_of[name]].append(f.double().flatten().numpy())
    kappa, kappa_max = np.zeros(n_groups), np.zeros(n_groups)
    for g, parts in enumerate(pooled):
        if parts:
            values = np.concatenate(parts)
            kappa[g] = values.mean()
            kappa_max[g] = np.quantile(values, quantile)
    return kappa, kappa_max


def deletion_shock(
    fishers: Sequence[ModuleTensors],
    slot_values: Sequence[ModuleTensors],
    group_of: Mapping[str, int],
    n_groups: int,
) -> np.ndarray:
    """``S_g = sum_d 1/2 <F_{d,g}, B_{d,g}^2>`` over the retained devices ``d``.

    ``fishers[d]`` is the diagonal Fisher of slot k's coordinates on device d's data
    and ``slot_values[d]`` device d's copy of slot k (before zeroing).  Each term is
    the second-order loss jump of device d when its copy of slot k is removed at a
    stationary point, with the Fisher standing in for the Hessian.
    """
    shock = np.zeros(n_groups)
    for fisher, values in zip(fishers, slot_values, strict=True):
        terms = {n: f.double() * values[n].double().pow(2) for n, f in fisher.items()}
        shock += 0.5 * group_sums(terms, group_of, n_groups)
    return shock


def deletion_shock_full(
    per_sample: Sequence[ModuleTensors],
    slot_values: Sequence[ModuleTensors],
    group_of: Mapping[str, int],
    n_groups: int,
) -> np.ndarray:
    """``sum_d 1/2 B_{d,g}^T F_{d,g} B_{d,g}`` with the *full* empirical Fisher of group g.

    ``B^T F B = mean_n <g_n, B>^2`` costs nothing beyond the per-sample gradients that
    the diagonal needs, and keeps the cross terms that the diagonal drops: where ``B``
    lies along the few directions the data sees, the diagonal underestimates the jump
    (tests/learning/test_residuals.py measures both against the actual jump).
    """
    shock = np.zeros(n_groups)
    for grads, values in zip(per_sample, slot_values, strict=True):
        n = next(iter(grads.values())).shape[0]
        dots = torch.zeros(n_groups, n, dtype=torch.float64)
        for name, g in grads.items():
            dots[group_of[name]] += (g.double() * values[name].double()).sum(dim=(1, 2))
        shock += 0.5 * dots.pow(2).mean(dim=1).numpy()
    return shock


def gradient_spread(
    mean_grads: Sequence[ModuleTensors], group_of: Mapping[str, int], n_groups: int
) -> np.ndarray:
    """``zeta_g^2 = mean_i |G_i,g - mean_j G_j,g|_F^2`` (0 for fewer than two devices)."""
    if len(mean_grads) < 2:
        return np.zeros(n_groups)
    names = list(mean_grads[0])
    stacked = {n: torch.stack([g[n].double() for g in mean_grads]) for n in names}
    deviation = {n: (s - s.mean(dim=0, keepdim=True)).pow(2) for n, s in stacked.items()}
    return group_sums(deviation, group_of, n_groups) / len(mean_grads)


def disagreement(copies: ModuleTensors, group_of: Mapping[str, int], n_groups: int) -> np.ndarray:
    """``D_g = mean_i sum_{l in g, k} |B^(i)_{k,l} - mean_j B^(j)_{k,l}|_F^2``.

    ``copies[l]`` has the devices in dim 0 (``(n, K, d_out, r)`` as in the learner).
    """
    out = np.zeros(n_groups)
    for name, c in copies.items():
        n = c.shape[0]
        if n < 2:
            continue
        c = c.double()
        out[group_of[name]] += float((c - c.mean(dim=0, keepdim=True)).pow(2).sum()) / n
    return out


def magnitude(copies: ModuleTensors, group_of: Mapping[str, int], n_groups: int) -> np.ndarray:
    """``M_g = sum_{l in g, k} |mean_j B^(j)_{k,l}|_F^2``: the squared size of the mean copy.

    The scale of the disagreement ``D_g`` (:func:`disagreement`): ``D_g / M_g`` is the
    copies' mean squared distance to their mean as a share of the mean's own size.
    ``copies[l]`` has the devices in dim 0 (``(n, K, d_out, r)`` as in the learner).
    """
    out = np.zeros(n_groups)
    for name, c in copies.items():
        if c.shape[0] == 0:
            continue
        out[group_of[name]] += float(c.double().mean(dim=0).pow(2).sum())
    return out


def learning_residual(energy: np.ndarray, kappa: np.ndarray, shock: np.ndarray) -> np.ndarray:
    """``R_learn = E / (2 kappa) + S``; ``E / (2 kappa)`` is 0 where ``kappa`` is 0 (then ``E`` is too).

    ``energy`` and ``shock`` may hold one row per device (``kappa`` per group is broadcast).
    """
    energy, kappa = np.asarray(energy, dtype=float), np.asarray(kappa, dtype=float)
    gap = np.divide(energy, 2.0 * kappa, out=np.zeros_like(energy), where=kappa > 0)
    return gap + np.asarray(shock, dtype=float)


def drift_residual(eta: float, tau: int, kappa_max: np.ndarray, zeta_sq: np.ndarray) -> np.ndarray:
    """``R_drift = eta^2 tau^2 kappa_max zeta^2``."""
    return eta**2 * tau**2 * np.asarray(kappa_max, dtype=float) * np.asarray(zeta_sq, dtype=float)


def consensus_residual(gamma: float, exchanges: np.ndarray, disagreement: np.ndarray) -> np.ndarray:
    """``R_cons = (1 - gamma)^(2 u) D``: the disagreement left after ``u`` exchanges."""
    u = np.asarray(exchanges, dtype=float)
    return (1.0 - gamma) ** (2.0 * u) * np.asarray(disagreement, dtype=float)


def connectivity(adjacency: np.ndarray) -> tuple[int, float]:
    """``(number of components, spectral gap of the Metropolis-Hastings matrix)``; gamma is 0 if split."""
    adj = np.asarray(adjacency, dtype=bool)
    n_comp = len(components(adj))
    gamma = spectral_gap(metropolis_hastings(adj)) if n_comp == 1 else 0.0
    return n_comp, max(gamma, 0.0)


# --------------------------------------------------------------------------- one event


def compute_residuals(
    learner: SlotLearner,
    *,
    devices: Sequence[int],
    samples: Mapping[int, Split],
    adjacency: np.ndarray,
    affected: Sequence[int] | None = None,
    deleted_slot: int | None = None,
    exchanges: int | Sequence[int] = 1,
    eta: float | None = None,
    tau: int | None = None,
    quantile: float = 0.95,
    drift_slot: int | None = None,
    populations: Mapping[int, int] | None = None,
) -> Residuals:
    """Every residual term of one event, per layer group.

    ``devices`` are the live devices, in the order of ``adjacency``'s rows; ``affected``
    (default: all of them) are those whose gradients enter ``E``, the Fisher, ``zeta``
    and, after a leave, the deletion shock of ``deleted_slot`` (call this before the
    tombstone zeroes the copies).  ``samples[d]`` are the few samples of device d.
    ``exchanges`` is ``u_g``, the planned exchanges per group (one number for all).
    ``eta`` and ``tau`` default to the learner's learning rate and local steps.

    ``zeta`` is measured on every affected device's gradient w.r.t. one common slot
    (``drift_slot``, default the lowest own slot among them): own-slot gradients of
    different devices are coordinates in different subspaces, so their spread would
    measure gradient size, not heterogeneity; the gradient w.r.t. a common slot is
    ``s grad_W f_i A_j^T``, one shared random projection of every device's gradient.

    ``populations[d]``: how many samples device d's were drawn from without replacement
    (:func:`draw_samples`: its training set), for ``energy_unbiased``; ``None``: samples
    from an unlimited population.
    """
    devices = list(devices)
    affected = devices if affected is None else list(affected)
    n_groups = learner.model_spec.layer_groups
    group_of = learner.group_of
    adjacency = np.asarray(adjacency, dtype=bool)
    if adjacency.shape != (len(devices), len(devices)):
        raise ValueError(f"adjacency must be {len(devices)} x {len(devices)} (got {adjacency.shape})")
    missing = [d for d in affected if d not in samples]
    if missing:
        raise ValueError(f"no samples for affected devices {missing}")
    eta = learner.training.learning_rate if eta is None else eta
    tau = learner.training.local_steps if tau is None else tau

    mean_grads, fishers, losses, accuracies = [], [], [], []
    energy_unbiased = np.zeros(n_groups)
    for d in affected:
        grads, sample_losses, correct = per_sample_slot_grads_losses_accuracy(
            learner, d, samples[d].inputs, samples[d].answers
        )
        losses.append(float(sample_losses.double().mean()))
        accuracies.append(float(correct.double().mean()))
        mean_grads.append({n: g.mean(dim=0) for n, g in grads.items()})
        fishers.append(diagonal_fisher(grads))
        size = None if populations is None else populations[d]
        energy_unbiased += gradient_energy_unbiased(grads, group_of, n_groups, size)
    energy_devices = np.array(
        [gradient_energy([g], group_of, n_groups) for g in mean_grads], dtype=float
    ).reshape(len(affected), n_groups)
    kappa, kappa_max = fisher_curvature(fishers, group_of, n_groups, quantile)

    shock_devices, shock_full = np.zeros((len(affected), n_groups)), np.zeros(n_groups)
    if deleted_slot is not None:
        slot_grads, values = [], []
        for i, d in enumerate(affected):
            slot_grads.append(
                per_sample_slot_grads(learner, d, samples[d].inputs, samples[d].answers, deleted_slot)
            )
            values.append(slot_view(learner, d, deleted_slot))
            shock_devices[i] = deletion_shock(
                [diagonal_fisher(slot_grads[-1])], values[-1:], group_of, n_groups
            )
        shock_full = deletion_shock_full(slot_grads, values, group_of, n_groups)

    if drift_slot is None and affected:
        drift_slot = min(learner.slot_of[d] for d in affected)
    common = [
        {
            n: g.mean(dim=0)
            for n, g in per_sample_slot_grads(
                learner, d, samples[d].inputs, samples[d].answers, drift_slot
            ).items()
        }
        for d in affected
    ]
    zeta_sq = gradient_spread(common, group_of, n_groups)

    index = torch.as_tensor(devices, dtype=torch.long)
    live_copies = {n: c[index] for n, c in learner.copies.items()}
    d_g = disagreement(live_copies, group_of, n_groups)
    n_comp, gamma = connectivity(adjacency)
    u = np.broadcast_to(np.asarray(exchanges, dtype=float), (n_groups,)).copy()
    return Residuals(
        energy_unbiased=energy_unbiased,
        kappa=kappa,
        kappa_max=kappa_max,
        shock_full=shock_full,
        learn=learning_residual(energy_devices.sum(axis=0), kappa, shock_devices.sum(axis=0)),
        energy_devices=energy_devices,
        shock_devices=shock_devices,
        learn_devices=learning_residual(energy_devices, kappa, shock_devices),
        loss_devices=np.array(losses, dtype=float),
        accuracy_devices=np.array(accuracies, dtype=float),
        zeta_sq=zeta_sq,
        drift=drift_residual(eta, tau, kappa_max, zeta_sq),
        disagreement=d_g,
        magnitude=magnitude(live_copies, group_of, n_groups),
        exchanges=u,
        consensus=consensus_residual(gamma, u, d_g),
        gamma=gamma,
        n_components=n_comp,
        eta=float(eta),
        tau=int(tau),
        quantile=float(quantile),
    )
