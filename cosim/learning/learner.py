"""Decentralized orthogonal-LoRA learning: every device's view of every slot.

State (method.md sections 3-5):

* ``copies[module]`` has shape ``(devices, K_max, d_out, r)``: device ``i``'s copy
  ``B^(i)_k`` of slot ``k``.  Free slots and deleted slots are zero.
* Each live device owns one slot; its own copy is authoritative and is the only
  thing it trains (A frozen, B trained).
* Mixing is Metropolis-Hastings gossip over the messages that arrived; the
  owner's copy of its own slot is never overwritten.
* Deleting slot ``k`` zeroes every copy of it (``dW <- dW (I - A_k^T A_k)``); a
  device that has applied the tombstone keeps the slot at zero from then on.

With shared adapters (``model.adapters: shared``, the non-orthogonal baseline) there is
one slot: every device trains its own copy of it, gossip averages the copies (a
device's own copy is its mixed copy), and nothing can be deleted exactly.

This module knows nothing of time, the network or the trace: the engine calls it
with values and records what it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from cosim.learning.data import FactsTask, Split, facts_task_for
from cosim.learning.model import (
    SlotLinear,
    block_index,
    build_tiny_base,
    install_slot_layers,
    target_linear_modules,
)
from cosim.learning.preflight import check_adaptable, check_task_fits_model
from cosim.learning.quantize import expected_slice_error, quantize_slices
from cosim.learning.slots import slot_projection
from cosim.learning.text import IGNORE, TextTask, build_facts_text_task, build_file_text_task
from cosim.scenario import Data, Model, Training

__all__ = ["EvalRow", "SlotLearner"]

FULL_PRECISION_BITS = 32


@dataclass(frozen=True)
class EvalRow:
    device: int
    split: str
    accuracy: float
    loss: float
    n: int


class SlotLearner:
    """The shared base model, the slot projections and all devices' slot copies."""

    EVAL_ROWS = 256  # text rows per evaluation pass (all devices together)

    def __init__(
        self,
        *,
        model: Model,
        data: Data,
        training: Training,
        device_ids: tuple[int, ...],
        leavers: set[int],
        newcomers: set[int],
    ) -> None:
        self.model_spec = model
        self.training = training
        self.device_ids = device_ids
        self.task: FactsTask | TextTask
        self.base: PreTrainedModel
        self.tokenizer = None
        check_task_fits_model(model, data)
        if model.is_tiny:
            self.task = facts_task_for(data, list(device_ids), leavers, newcomers)
            self.base = build_tiny_base(model.tiny, self.task.vocab_size, seed=model.seed)
        else:
            from cosim.learning.bases import load_pretrained

            self.base, self.tokenizer = load_pretrained(model.base)
            build = build_file_text_task if data.task == "file" else build_facts_text_task
            self.task = build(
                data, self.tokenizer, device_ids=list(device_ids), leavers=leavers, newcomers=newcomers
            )
        self.rank = model.rank
        self.shared = model.adapters == "shared"
        self.capacity = 1 if self.shared else model.slot_capacity
        self.scaling = model.alpha / model.rank
        generator = torch.Generator().manual_seed(model.seed + 0x51075)
        targets = target_linear_modules(self.base, model.target_modules)
        check_adaptable(self.base, model.base, model.target_modules)
        self.projections = {
            name: slot_projection(linear.in_features, self.capacity, self.rank, generator)
            for name, linear in targets
        }
        self.layers: dict[str, SlotLinear] = install_slot_layers(
            self.base, self.projections, self.rank, self.scaling
        )
        n_layers = model.num_layers
        self.group_of = {name: block_index(name) * model.layer_groups // n_layers for name in self.layers}
        self.copies = {
            name: torch.zeros(len(device_ids), self.capacity, layer.d_out, self.rank)
            for name, layer in self.layers.items()
        }
        self.slot_of: dict[int, int] = {}
        self.own: dict[int, dict[str, nn.Parameter]] = {}
        self.optimizers: dict[int, torch.optim.Optimizer] = {}
        self.tombstoned: dict[int, set[int]] = {d: set() for d in device_ids}
        # What each device's copies were when last read (:meth:`versions`), how many times
        # each slot and layer group has changed since it joined, and per link (src, dst) the
        # versions of src's copies that have reached dst.
        self._seen: dict[int, dict[str, torch.Tensor]] = {}
        self._version: dict[int, np.ndarray] = {}
        self._delivered: dict[tuple[int, int], np.ndarray] = {}
        self._value_tokens = (
            torch.as_tensor(self.task.value_tokens) if isinstance(self.task, FactsTask) else None
        )
        self._drop_mask: torch.Tensor | None = None

    # ------------------------------------------------------------------ sizes

    def slot_bits(self, precision_bits: int = FULL_PRECISION_BITS) -> dict[int, int]:
        """Payload bits of one slot's ``B`` per layer group at the given precision."""
        bits: dict[int, int] = {}
        for name, layer in self.layers.items():
            g = self.group_of[name]
            bits[g] = bits.get(g, 0) + layer.d_out * self.rank * precision_bits
        return dict(sorted(bits.items()))

    def copy_bytes(self) -> int:
        """Memory of one device's copies of every slot (all ``K_max`` slots, every module)."""
        return sum(c[0].numel() * c.element_size() for c in self.copies.values())

    def flops_per_step(self) -> float:
        """FLOPs of one local step of one device.

        Forward ``F = 2 * P_blocks * tokens + 2 * P_head * scored`` (logits only at the
        answer positions); the backward pass through frozen weights costs about one
        more ``F``; the slot's own parameters add ``6 * P_slot * tokens``.
        """
        batch = self.training.batch_size
        tokens = batch * self.task.seq_len
        p_slot = sum(layer.d_out * self.rank + self.rank * layer.d_in for layer in self.layers.values())
        return 2.0 * self.forward_flops(batch) + 6.0 * p_slot * tokens

    def forward_flops(self, rows: int) -> float:
        """FLOPs of one forward pass over ``rows`` samples: ``F`` of :meth:`flops_per_step`."""
        tokens = rows * self.task.seq_len
        scored = rows * (self.task.answer_tokens if isinstance(self.task, TextTask) else 1)
        blocks = self.base.model.layers  # type: ignore[union-attr]
        p_blocks = sum(p.numel() for p in blocks.parameters())
        p_head = self.base.lm_head.weight.numel()  # type: ignore[union-attr]
        return 2.0 * p_blocks * tokens + 2.0 * p_head * scored

    # ------------------------------------------------------------------ membership

    def add_device(self, device: int, slot: int) -> None:
        """Give ``device`` slot ``slot`` with ``B = 0`` and a fresh optimizer.

        With shared adapters every device holds slot 0, and only the device's own copy
        starts at zero (the others keep theirs).
        """
        if self.shared:
            if slot != 0:
                raise ValueError(f"shared adapters have slot 0 only, got {slot}")
            for copies in self.copies.values():
                copies[device] = 0.0
        elif slot in self.slot_of.values():
            raise ValueError(f"slot {slot} is in use")
        else:
            for copies in self.copies.values():
                copies[:, slot] = 0.0
        self.slot_of[device] = slot
        self.tombstoned[device] = set()
        self.own[device] = {
            name: nn.Parameter(torch.zeros(layer.d_out, self.rank)) for name, layer in self.layers.items()
        }
        params = list(self.own[device].values())
        lr = self.training.learning_rate
        self.optimizers[device] = (
            torch.optim.Adam(params, lr=lr)
            if self.training.optimizer == "adam"
            else torch.optim.SGD(params, lr=lr)
        )

    def pull(self, device: int, source: int) -> None:
        """A newcomer's first sync: ``device`` takes ``source``'s copies of every slot but its own
        (with shared adapters, ``source``'s adapter)."""
        if self.shared:  # the newcomer starts from its neighbour's adapter
            for copies in self.copies.values():
                copies[device] = copies[source]
            self._own_from_copies([device])
        else:
            own = self.slot_of[device]
            for copies in self.copies.values():
                keep = copies[device, own].clone()
                copies[device] = copies[source]
                copies[device, own] = keep
            for slot in self.tombstoned[device]:
                self._zero(device, slot)
        # The newcomer now holds the source's copies as they are.
        every = range(self.capacity), range(self.model_spec.layer_groups)
        self.mark_delivered(source, device, self.versions(source), *every)

    def remove_device(self, device: int) -> int:
        """Forget a departed device's own state; returns the slot it held (still to be tombstoned)."""
        slot = self.slot_of.pop(device)
        self.own.pop(device)
        self.optimizers.pop(device)
        self._seen.pop(device, None)
        self._version.pop(device, None)
        for link in [link for link in self._delivered if device in link]:
            del self._delivered[link]
        for copies in self.copies.values():
            copies[device] = 0.0
        return slot

    def apply_tombstone(self, device: int, slot: int) -> None:
        """``device`` deletes slot ``slot`` from its view, for good."""
        self.tombstoned[device].add(slot)
        self._zero(device, slot)

    def release_slot(self, slot: int) -> None:
        """Every live device has applied the tombstone: the slot may be handed out again."""
        for done in self.tombstoned.values():
            done.discard(slot)

    def _zero(self, device: int, slot: int) -> None:
        for copies in self.copies.values():
            copies[device, slot] = 0.0

    # ------------------------------------------------------------------ training

    def _set_views(self, devices: list[int], train: bool) -> None:
        index = torch.as_tensor(devices)
        own_slot = torch.as_tensor([self.slot_of[d] for d in devices])
        for name, layer in self.layers.items():
            views = self.copies[name][index].clone()  # (n, K, d_out, r)
            if train:
                views[torch.arange(len(devices)), own_slot] = 0.0
                if self._drop_mask is not None:
                    views = views * self._drop_mask
                layer.own = torch.stack([self.own[d][name] for d in devices])
                layer.own_slot = own_slot
            else:
                layer.own = None
                layer.own_slot = None
            layer.views = views.permute(0, 2, 1, 3).reshape(len(devices), layer.d_out, -1)

    def _clear_views(self) -> None:
        for layer in self.layers.values():
            layer.views = layer.own = layer.own_slot = None

    def _answer_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of the candidate answers (the value tokens) at the last position."""
        out = self.base(input_ids=inputs, logits_to_keep=1)
        return out.logits[:, -1, self._value_tokens]

    def _answer_index(self, answers: np.ndarray) -> torch.Tensor:
        assert isinstance(self.task, FactsTask)
        return torch.as_tensor(answers - int(self.task.value_tokens[0]))

    @torch.no_grad()
    def teacher_logits(
        self, devices: list[int], rows: Mapping[int, np.ndarray] | None = None
    ) -> dict[int, torch.Tensor]:
        """Each device's model's centred answer logits ``(n, values)`` on all its training samples.

        Row ``i`` belongs to the device's training sample ``i``; each row has its mean over the
        candidate answers taken off (the softmax does not see it).  The target of
        :meth:`train`'s ``teacher``: taken just before a leave's tombstones, it is what each
        retained device's model answered with the leaver's slot still in it.  ``rows`` (per
        device, indices into its training samples) limits a device to those samples, in
        that order.
        """
        if not isinstance(self.task, FactsTask):
            raise ValueError(
                "teacher logits need the facts task's one-token answers (the built-in tiny model)"
            )
        out = {}
        for d in devices:
            self._set_views([d], train=False)
            try:
                inputs = self.task.train[d].inputs
                if rows is not None:
                    inputs = inputs[rows[d]]
                logits = self._answer_logits(torch.as_tensor(inputs))
            finally:
                self._clear_views()
            out[d] = logits - logits.mean(dim=1, keepdim=True)
        return out

    def sample_losses(self, inputs: np.ndarray, answers: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and accuracy ``(n,)`` of each row under the views currently set.

        Facts: cross-entropy over the value tokens at the last position; right when the
        highest-likelihood value is the answer.  Text: mean cross-entropy over the answer
        tokens (``answers`` are the labels); exact match of the greedy answer (or token
        accuracy for whole texts), see :mod:`cosim.learning.text`.
        """
        if isinstance(self.task, FactsTask):
            logits = self._answer_logits(torch.as_tensor(inputs))
            target = self._answer_index(answers)
            losses = F.cross_entropy(logits, target, reduction="none")
            return losses, (logits.argmax(dim=1) == target).float()
        labels = torch.as_tensor(answers)
        scored = labels != IGNORE
        width = int(scored.nonzero()[:, 1].max()) + 1
        x, target = torch.as_tensor(inputs)[:, :width], labels[:, 1:width]
        hidden = self.base.model(input_ids=x).last_hidden_state[:, :-1]  # type: ignore[operator]
        mask = target != IGNORE
        logits = self.base.lm_head(hidden[mask])  # type: ignore[operator]
        gold = target[mask]
        row = mask.nonzero()[:, 0]
        n = labels.shape[0]
        counts = mask.sum(dim=1).clamp(min=1).to(logits.dtype)
        token_losses = F.cross_entropy(logits, gold, reduction="none")
        losses = torch.zeros(n, dtype=logits.dtype).index_add(0, row, token_losses) / counts
        hit = (logits.argmax(dim=1) == gold).to(logits.dtype)
        hits = torch.zeros(n, dtype=logits.dtype).index_add(0, row, hit)
        correct = (hits == counts).to(logits.dtype) if self.task.exact_match else hits / counts
        return losses, correct

    def train(
        self,
        devices: list[int],
        steps: int,
        rngs: dict[int, np.random.Generator],
        mu: float | Sequence[float] = 0.0,
        group_steps: Sequence[int] | None = None,
        step_scale: float = 1.0,
        teacher: Mapping[int, torch.Tensor] | None = None,
        lr: float | None = None,
    ) -> dict[int, float]:
        """``steps`` local steps on each device's own slot, all devices in one batched pass.

        Minibatches are drawn from each device's training data with its own
        generator.  ``mu`` adds the proximal term ``mu/2 |B - B_start|^2``: one value
        for every module, or one per layer group (proximal damping per group).  It is
        applied by its proximal step after each optimizer step,
        ``B <- (B + eta mu B_start) / (1 + eta mu)`` with ``eta`` the learning rate, not as
        a gradient: the optimizer's state sees the loss alone (as AdamW decouples weight
        decay).  Through Adam's gradient the term would fill the second moments with its
        own ``mu (B - B_start)``, slowing the group for hundreds of steps after the
        damping ends.
        ``group_steps`` (one count per layer group, each at most ``steps``) trains a group
        in the first that many steps only and leaves it as it is after them (the optimizer
        skips it); None trains every group in every step.
        ``step_scale`` keeps that fraction of each device's displacement: its slot ends at
        ``B_start + step_scale (B_trained - B_start)`` (1 keeps the steps as they are).  The
        optimizer's state is left as the steps made it (Adam's moments included).
        ``teacher`` (per device, :meth:`teacher_logits`) replaces each sample's cross-entropy
        by the mean squared distance of its centred answer logits from the teacher's row for
        that sample (every device in ``devices`` needs one); the minibatches are drawn as
        without it.
        ``lr`` is these steps' learning rate (None: ``training.learning_rate``); the
        optimizers go back to the training rate after them, their state kept.
        Returns each device's mean training loss over the steps.
        """
        if not devices or steps <= 0:
            return {}
        if not 0.0 < step_scale <= 1.0:
            raise ValueError(f"step_scale must lie in (0, 1] (got {step_scale})")
        if lr is not None and not lr > 0.0:
            raise ValueError(f"lr must be > 0 (got {lr})")
        eta = self.training.learning_rate if lr is None else float(lr)
        groups = self.model_spec.layer_groups
        if isinstance(mu, (int, float)):
            mu_of = dict.fromkeys(self.layers, float(mu))
        else:
            if len(mu) != groups:
                raise ValueError(f"mu needs one value per layer group ({groups}), got {len(mu)}")
            mu_of = {n: float(mu[g]) for n, g in self.group_of.items()}
        if group_steps is None:
            until = dict.fromkeys(self.layers, steps)
        else:
            if len(group_steps) != groups or not all(0 <= k <= steps for k in group_steps):
                raise ValueError(
                    f"group_steps needs one count per layer group ({groups}), each from 0 to steps "
                    f"({steps}); got {list(group_steps)}"
                )
            until = {n: int(group_steps[g]) for n, g in self.group_of.items()}
        if teacher is not None and (missing := [d for d in devices if d not in teacher]):
            raise ValueError(f"teacher: no teacher logits for device(s) {missing}")
        batch = self.training.batch_size
        anchors = self.own_state(devices)
        totals = dict.fromkeys(devices, 0.0)
        self._set_lr(devices, eta)
        for step in range(steps):
            inputs, answers, targets = [], [], []
            for d in devices:
                data = self.task.train[d]
                idx = rngs[d].integers(0, len(data), size=batch)
                inputs.append(data.inputs[idx])
                answers.append(data.answers[idx])
                if teacher is not None:
                    targets.append(teacher[d][torch.as_tensor(idx)])
            x, y = np.concatenate(inputs), np.concatenate(answers)
            if self.training.slot_dropout > 0:
                keep = np.stack(
                    [rngs[d].random(self.capacity) >= self.training.slot_dropout for d in devices]
                )
                self._drop_mask = torch.as_tensor(keep, dtype=torch.float32)[:, :, None, None]
            self._set_views(devices, train=True)
            if teacher is None:
                losses, _ = self.sample_losses(x, y)
            else:
                logits = self._answer_logits(torch.as_tensor(x))
                centred = logits - logits.mean(dim=1, keepdim=True)
                losses = (centred - torch.cat(targets)).pow(2).mean(dim=1)
            per_device = losses.view(len(devices), batch).mean(dim=1)
            loss = per_device.sum()
            for d in devices:
                self.optimizers[d].zero_grad(set_to_none=True)
            loss.backward()
            for d in devices:
                for n, p in self.own[d].items():
                    if step >= until[n]:
                        p.grad = None  # past its steps: the optimizer leaves it as it is
                self.optimizers[d].step()
            with torch.no_grad():
                for d in devices:
                    for n, p in self.own[d].items():
                        if mu_of[n] > 0 and step < until[n]:
                            shrink = eta * mu_of[n]
                            p.add_(anchors[d][n], alpha=shrink).div_(1.0 + shrink)
            for d, value in zip(devices, per_device.detach().tolist(), strict=True):
                totals[d] += value
        self._drop_mask = None
        self._clear_views()
        self._set_lr(devices, self.training.learning_rate)
        if step_scale != 1.0:
            with torch.no_grad():
                for d in devices:
                    for n, p in self.own[d].items():
                        p.copy_(anchors[d][n] + step_scale * (p - anchors[d][n]))
        self._sync_own(devices)
        return {d: totals[d] / steps for d in devices}

    def _set_lr(self, devices: list[int], lr: float) -> None:
        for d in devices:
            for group in self.optimizers[d].param_groups:
                group["lr"] = lr

    def _sync_own(self, devices: list[int]) -> None:
        with torch.no_grad():
            for d in devices:
                slot = self.slot_of[d]
                for name, p in self.own[d].items():
                    self.copies[name][d, slot] = p

    def _own_from_copies(self, devices: list[int]) -> None:
        """Shared adapters: a device trains on from its mixed copy."""
        with torch.no_grad():
            for d in devices:
                for name, p in self.own[d].items():
                    p.copy_(self.copies[name][d, 0])

    def own_state(self, devices: list[int]) -> dict[int, dict[str, torch.Tensor]]:
        """A copy of each device's own adapter ``B`` per module (its slot's copy)."""
        return {d: {n: p.detach().clone() for n, p in self.own[d].items()} for d in devices}

    def set_updates(
        self, start: dict[int, dict[str, torch.Tensor]], updates: dict[int, dict[str, torch.Tensor]]
    ) -> None:
        """Each device's own ``B`` becomes ``start + update`` (per module)."""
        with torch.no_grad():
            for d, per_module in updates.items():
                for name, update in per_module.items():
                    self.own[d][name].copy_(start[d][name] + update)
        self._sync_own(list(updates))

    # ------------------------------------------------------------------ gossip

    def live_slots(self) -> list[int]:
        """The slots of the live devices, once each (shared adapters: every device's is slot 0)."""
        return sorted(set(self.slot_of.values()))

    @torch.no_grad()
    def versions(self, device: int) -> np.ndarray:
        """``v[s, g]``: how many times ``device``'s copy of slot ``s``, layer group ``g`` has changed.

        Read from the copies themselves: each call compares them with what the previous call
        saw, so a change counts once however many times the copy was written in between.
        """
        n_groups = self.model_spec.layer_groups
        version = self._version.setdefault(device, np.zeros((self.capacity, n_groups), dtype=np.int64))
        seen = self._seen.get(device)
        if seen is not None:
            changed = np.zeros((self.capacity, n_groups), dtype=bool)
            for name, copies in self.copies.items():
                changed[:, self.group_of[name]] |= (
                    (copies[device] != seen[name]).flatten(1).any(dim=1).numpy()
                )
            version += changed
        self._seen[device] = {name: copies[device].clone() for name, copies in self.copies.items()}
        return version.copy()

    def owed(
        self, src: int, dst: int, version: np.ndarray, slots: Sequence[int], groups: Sequence[int]
    ) -> dict[int, list[int]]:
        """Per layer group in ``groups``, the ``slots`` whose copy at ``src`` (at ``version``, from
        :meth:`versions`) has not reached ``dst``: what a full-precision message must carry for
        ``dst`` to hold ``src``'s current copy of every one of ``slots``."""
        delivered = self._delivered.get((src, dst))
        return {g: [k for k in slots if delivered is None or version[k, g] > delivered[k, g]] for g in groups}

    def mark_delivered(
        self, src: int, dst: int, version: np.ndarray, slots: Sequence[int], groups: Sequence[int]
    ) -> None:
        """A message from ``src`` brought ``dst`` its copies of ``slots`` (layer groups ``groups``)
        as they were at ``version``."""
        delivered = self._delivered.setdefault(
            (src, dst), np.full((self.capacity, self.model_spec.layer_groups), -1, dtype=np.int64)
        )
        index = np.ix_(list(slots), list(groups))
        delivered[index] = version[index]

    @torch.no_grad()
    def pair_disagreement(self, src: Sequence[int], dst: Sequence[int], slots: Sequence[int]) -> np.ndarray:
        """``D[p, s, g] = sum_{modules l in g} |B^(src_p)_{l,s} - B^(dst_p)_{l,s}|_F^2`` per device pair.

        Shape ``(pairs, slots, layer groups)`` over all slots, filled for ``slots`` (zero
        elsewhere): how far device ``dst[p]``'s copy of each slot and layer group is from
        ``src[p]``'s, what a message from ``src[p]`` can pull it in by (the allocator's
        residual per slot).  Symmetric: a pair given both ways is computed once.
        """
        out = np.zeros((len(src), self.capacity, self.model_spec.layer_groups))
        if not len(src) or not len(slots):
            return out
        unordered = sorted({(min(a, b), max(a, b)) for a, b in zip(src, dst, strict=True)})
        row = {pair: i for i, pair in enumerate(unordered)}
        a = torch.as_tensor([p[0] for p in unordered])
        b = torch.as_tensor([p[1] for p in unordered])
        k = torch.as_tensor(list(slots))
        found = np.zeros((len(unordered), len(slots), self.model_spec.layer_groups))
        for g, names in self._names_by_group().items():
            x = torch.cat(
                [self.copies[name][:, k].flatten(2) for name in names], dim=-1
            )  # (devices, slots, -)
            found[:, :, g] = (x[a] - x[b]).pow(2).sum(dim=-1).double().numpy()
        take = [row[(min(s_, d_), max(s_, d_))] for s_, d_ in zip(src, dst, strict=True)]
        out[:, list(slots)] = found[take]
        return out

    @torch.no_grad()
    def quantization_error(
        self, devices: Sequence[int], slots: Sequence[int], precisions_bits: Sequence[int]
    ) -> dict[int, np.ndarray]:
        """Per precision ``q``, ``E[i, s, g]``: expected squared error of a copy sent at ``q`` bits.

        Of ``devices[i]``'s copy of slot ``s``, layer group ``g``, summed over the group's
        modules from each slice's peak (:func:`expected_slice_error`: one scale per module
        and slot, as the mix quantizes).  Each array has shape ``(devices, slots, layer groups)`` over all
        slots, filled for ``slots``; zero at 32 bits.
        """
        shape = (len(devices), self.capacity, self.model_spec.layer_groups)
        out = {int(q): np.zeros(shape) for q in precisions_bits}
        if not len(devices) or not len(slots):
            return out
        index = torch.as_tensor(list(devices))[:, None]
        k = torch.as_tensor(list(slots))[None, :]
        columns = list(slots)
        for name, copies in self.copies.items():
            x = copies[index, k]
            peak = x.abs().amax(dim=(-2, -1))
            g = self.group_of[name]
            for q, e in out.items():
                if q < FULL_PRECISION_BITS:
                    e[:, columns, g] += expected_slice_error(peak, x.shape[-2] * x.shape[-1], q).numpy()
        return out

    def _names_by_group(self) -> dict[int, list[str]]:
        names: dict[int, list[str]] = {}
        for name in self.copies:
            names.setdefault(self.group_of[name], []).append(name)
        return names

    def mix(
        self,
        devices: list[int],
        weights: np.ndarray,
        delivered: np.ndarray,
        adopt_owner: bool = False,
        precision: np.ndarray | None = None,
    ) -> None:
        """One gossip step among ``devices``.

        With shared adapters there are no owners: every copy is averaged
        (``adopt_owner`` does not apply) and each device trains on from its mixed copy.

        ``weights[i, j]`` is the mixing weight of ``devices[j]`` at ``devices[i]``
        (Metropolis-Hastings); ``delivered[i, j]`` says whether ``devices[j]``'s
        message reached ``devices[i]`` this round.  The weight of a message that did
        not arrive stays with the receiver's own copy.  Owners keep their own slot.
        With ``adopt_owner``, a device that received a slot straight from its owner
        takes the owner's copy instead of mixing it (the owner's copy is authoritative).

        ``precision[i, j, g]`` (optional) is the precision in bits at which layer group
        ``g`` of ``devices[j]``'s message travelled to ``devices[i]``: 32 is exact,
        4/8/16 arrive quantized (:func:`quantize_slices`, nearest rounding, one scale
        per module and slot), and 0 means the group was skipped, so for that group the
        message counts as not delivered and the receiver's copy stays as it was (stale).
        ``precision[i, j, s, g]`` gives it per slot ``s`` as well (the priority
        allocation chooses slot by slot).  Without ``precision`` every group travels at
        32 bits.
        """
        n = len(devices)
        if precision is None:
            precision = np.full((n, n, self.model_spec.layer_groups), FULL_PRECISION_BITS)
        per_slot = precision.ndim == 4
        index = torch.as_tensor(devices)
        with torch.no_grad():
            for name, copies in self.copies.items():
                q = precision[..., self.group_of[name]]  # (n, n) or (n, n, slots)
                q = np.where(np.asarray(delivered, dtype=bool).reshape(n, n, *([1] * (q.ndim - 2))), q, 0)
                q[np.arange(n), np.arange(n)] = 0
                w = np.where(q > 0, weights.reshape(n, n, *([1] * (q.ndim - 2))), 0.0)
                # Exact messages and the receiver's own copy in one product; quantized ones added.
                exact = np.where(q == FULL_PRECISION_BITS, w, 0.0)
                exact[np.arange(n), np.arange(n)] = 1.0 - w.sum(axis=1)
                before = copies[index]
                pattern = "ijs,js...->is..." if per_slot else "ij,j...->i..."
                mixed = torch.einsum(pattern, torch.as_tensor(exact, dtype=torch.float32), before)
                received: dict[int, torch.Tensor] = {FULL_PRECISION_BITS: before}
                for bits in sorted({int(b) for b in np.unique(q) if 0 < b < FULL_PRECISION_BITS}):
                    received[bits] = quantize_slices(before, bits)
                    w_bits = torch.as_tensor(np.where(q == bits, w, 0.0), dtype=torch.float32)
                    mixed += torch.einsum(pattern, w_bits, received[bits])
                if adopt_owner and not self.shared:
                    for j, owner in enumerate(devices):
                        if owner not in self.slot_of:
                            continue
                        slot = self.slot_of[owner]
                        q_slot = q[:, j, slot] if per_slot else q[:, j]
                        for i in np.flatnonzero(q_slot > 0):
                            mixed[i, slot] = received[int(q_slot[i])][j, slot]
                copies[index] = mixed
        if self.shared:
            self._own_from_copies([d for d in devices if d in self.own])
            return
        self._sync_own([d for d in devices if d in self.own])
        for d in devices:
            for slot in self.tombstoned[d]:
                self._zero(d, slot)

    def reset(self) -> None:
        """Every copy back to zero and fresh optimizers: training starts over (the retrain baseline)."""
        with torch.no_grad():
            for copies in self.copies.values():
                copies.zero_()
        for device in list(self.own):
            slot = self.slot_of.pop(device)
            self.add_device(device, slot)
        self._seen.clear()
        self._version.clear()
        self._delivered.clear()

    def consensus_distance(self, devices: list[int]) -> float:
        """Mean over devices of ``sum_l |B^(i)_l - mean_j B^(j)_l|_F^2`` (live slots)."""
        if len(devices) < 2:
            return 0.0
        index = torch.as_tensor(devices)
        total = 0.0
        for copies in self.copies.values():
            c = copies[index]
            total += float((c - c.mean(dim=0, keepdim=True)).pow(2).sum()) / len(devices)
        return total

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, devices: list[int]) -> list[EvalRow]:
        """Accuracy and loss per device and split (see :meth:`sample_losses`)."""
        rows: list[EvalRow] = []
        if not devices:
            return rows
        names = list(self.task.splits)
        questions = [self.task.splits[s] for s in names]
        all_inputs = np.concatenate([q.inputs for q in questions])
        all_answers = np.concatenate([q.answers for q in questions])
        n_q = all_inputs.shape[0]
        # The facts task is tiny: one pass.  Text rows are evaluated a chunk of rows at a time.
        chunk = n_q if isinstance(self.task, FactsTask) else max(1, self.EVAL_ROWS // len(devices))
        self._set_views(devices, train=False)
        parts = []
        for lo in range(0, n_q, chunk):
            reps = (len(devices),) + (1,) * (all_inputs.ndim - 1)
            inputs = np.tile(all_inputs[lo : lo + chunk], reps)
            answers = np.tile(all_answers[lo : lo + chunk], (len(devices),) + (1,) * (all_answers.ndim - 1))
            losses, hits = self.sample_losses(inputs, answers)
            parts.append((losses.view(len(devices), -1), hits.view(len(devices), -1)))
        self._clear_views()
        losses = torch.cat([p[0] for p in parts], dim=1)
        correct = torch.cat([p[1] for p in parts], dim=1)
        bounds = np.cumsum([0] + [len(q) for q in questions])
        for i, d in enumerate(devices):
            for s, name in enumerate(names):
                lo, hi = int(bounds[s]), int(bounds[s + 1])
                rows.append(
                    EvalRow(
                        device=d,
                        split=name,
                        accuracy=float(correct[i, lo:hi].mean()),
                        loss=float(losses[i, lo:hi].mean()),
                        n=hi - lo,
                    )
                )
        return rows

    @torch.no_grad()
    def split_losses(self, devices: list[int], split: str) -> np.ndarray:
        """``(devices, n)``: each device's loss on each question of ``split`` (see :meth:`sample_losses`)."""
        data = self.task.splits[split]
        reps = (len(devices),) + (1,) * (data.inputs.ndim - 1)
        self._set_views(devices, train=False)
        try:
            losses, _ = self.sample_losses(
                np.tile(data.inputs, reps),
                np.tile(data.answers, (len(devices),) + (1,) * (data.answers.ndim - 1)),
            )
        finally:
            self._clear_views()
        return losses.view(len(devices), len(data)).numpy().astype(np.float64)

    @torch.no_grad()
    def device_logits(self, device: int, inputs: torch.Tensor) -> torch.Tensor:
        """Full logits ``(batch, seq, vocab)`` of one device's model."""
        self._set_views([device], train=False)
        try:
            return self.base(input_ids=inputs).logits
        finally:
            self._clear_views()

    def split(self, name: str) -> Split:
        return self.task.splits[name]

    # ------------------------------------------------------------------ adapters

    def device_adapter(self, device: int) -> tuple[list[int], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The live slots and, per module, ``(A, B)`` of the device's model as one LoRA adapter.

        ``A`` is ``(K_live r, d_in)`` and ``B`` is ``(d_out, K_live r)``; with scaling
        ``alpha / r`` the device's weight is ``W0 + s B A``.
        """
        # Every slot the device's model uses: the live ones, and a departed one whose
        # tombstone has not reached the device yet (its copy is still in the model).
        held = {
            k for k in range(self.capacity) if any(bool(c[device, k].any()) for c in self.copies.values())
        }
        live = sorted((held | set(self.slot_of.values())) - self.tombstoned[device])
        rows = torch.cat([torch.arange(k * self.rank, (k + 1) * self.rank) for k in live])
        adapter = {}
        for name, layer in self.layers.items():
            a = self.projections[name][rows]
            b = self.copies[name][device, live].permute(1, 0, 2).reshape(layer.d_out, -1)
            adapter[name] = (a.clone(), b.clone())
        return live, adapter
