"""The reference path for one device's local training: an ordinary PEFT LoRA model.

:meth:`SlotLearner.train <cosim.learning.learner.SlotLearner.train>` folds many
devices into one batched forward pass through :class:`~cosim.learning.model.SlotLinear`
layers.  This module computes the same local steps the slow, obvious way, one
device at a time, so that tests and benchmarks can hold the batched path to it:

* a fresh plain base model (:func:`~cosim.learning.model.build_tiny_base`) is
  wrapped by :func:`~cosim.learning.peft_io.to_peft_model` into a LoRA model of
  rank ``K_max r`` whose ``lora_A`` stacks *all* ``K_max`` slot projections and
  whose ``lora_B`` is the device's view of every slot;
* everything but ``lora_B`` is frozen, and ``lora_B``'s gradient is masked to the
  device's own columns ``k r:(k+1) r`` (method.md section 3: a device trains only
  its own slot);
* minibatches come from the device's generator with the same calls, in the same
  order, as the batched path; the loss is the cross-entropy over the candidate
  answers (the value tokens) at the last position.

Nothing here changes the learner: it is only read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cosim.learning.data import FactsTask
from cosim.learning.learner import SlotLearner
from cosim.learning.model import build_tiny_base
from cosim.learning.peft_io import peft_lora_layers, to_peft_model

__all__ = ["reference_peft_model", "train_one_by_one_peft"]


def reference_peft_model(
    learner: SlotLearner, device: int
) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A PEFT model of ``device``'s current view and its ``lora_B`` weights by module name.

    ``lora_A`` is the stack of all ``slot_capacity`` projections, ``(K r, d_in)``;
    ``lora_B`` is ``(d_out, K r)`` with slot ``k`` in columns ``k r:(k+1) r``.  The
    device's own columns are taken from its trainable own slot, which the learner
    treats as authoritative (after any ``train`` or ``mix`` it equals the copy).
    """
    if device not in learner.slot_of:
        raise ValueError(f"device {device} is not live; live devices: {sorted(learner.slot_of)}")
    spec = learner.model_spec
    slot = learner.slot_of[device]
    adapter = {}
    for name, projection in learner.projections.items():
        view = learner.copies[name][device].clone()  # (K, d_out, r)
        view[slot] = learner.own[device][name].detach()
        adapter[name] = (projection.clone(), view.permute(1, 0, 2).reshape(view.shape[1], -1))
    assert isinstance(learner.task, FactsTask), "the peft reference is built for the tiny model"
    base = build_tiny_base(spec.tiny, learner.task.vocab_size, seed=spec.seed)
    model = to_peft_model(base, adapter, rank=spec.rank, alpha=spec.alpha, target_modules=spec.target_modules)
    layers: dict[str, Any] = peft_lora_layers(model)
    return model, {name: layers[name].lora_B["default"].weight for name in learner.projections}


def train_one_by_one_peft(
    learner: SlotLearner,
    device: int,
    steps: int,
    rng: np.random.Generator,
    *,
    mu: float = 0.0,
    resume_optimizer: bool = True,
    group_steps: tuple[int, ...] | None = None,
) -> dict[str, torch.Tensor]:
    """``steps`` local steps of ``device`` alone on a PEFT model; returns its trained own slot.

    The result maps each module name to the own slot's ``B``, ``(d_out, r)``.  The
    optimizer has the type and learning rate of ``learner.training``; with
    ``resume_optimizer`` it starts from the state of the learner's optimizer of
    this device (Adam's moments and step count), so the reference also matches
    after earlier rounds.  ``mu`` applies the proximal term ``mu/2 |B - B_start|^2`` by its
    proximal step after each optimizer step (the optimizer sees the loss alone).
    ``group_steps`` (one count per layer group) stops training a group's modules after
    that many steps: they take no gradient and no optimizer update from then on.

    Slot dropout draws extra random numbers and changes the view per step, which
    this reference does not model: ``training.slot_dropout`` must be 0.
    """
    training = learner.training
    if training.slot_dropout > 0:
        raise ValueError(f"training.slot_dropout: the peft reference needs 0 (got {training.slot_dropout})")
    if steps < 1:
        raise ValueError(f"steps: need at least 1 (got {steps})")
    model, weights = reference_peft_model(learner, device)
    model.requires_grad_(False)
    rank = learner.rank
    slot = learner.slot_of[device]
    own = slice(slot * rank, (slot + 1) * rank)
    params = list(weights.values())
    for p in params:
        p.requires_grad_(True)
    start = {name: w.detach().clone() for name, w in weights.items()}
    masks = {}
    for name, w in weights.items():
        mask = torch.zeros_like(w)
        mask[:, own] = 1.0
        masks[name] = mask

    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=training.learning_rate)
        if training.optimizer == "adam"
        else torch.optim.SGD(params, lr=training.learning_rate)
    )
    if resume_optimizer and device in learner.optimizers:
        learned = learner.optimizers[device].state
        for name, w in weights.items():
            state = learned.get(learner.own[device][name])
            if not state:
                continue
            optimizer.state[w] = {
                key: _embed(value, w, own) if _is_slot_state(value, w, rank) else _clone(value)
                for key, value in state.items()
            }

    assert isinstance(learner.task, FactsTask), "the peft reference is built for the tiny model"
    data = learner.task.train[device]
    value_tokens = torch.as_tensor(learner.task.value_tokens)
    first_value = int(learner.task.value_tokens[0])
    for step in range(steps):
        if group_steps is not None:
            for name, w in weights.items():
                w.requires_grad_(step < group_steps[learner.group_of[name]])
        idx = rng.integers(0, len(data), size=training.batch_size)
        inputs = torch.as_tensor(data.inputs[idx])
        targets = torch.as_tensor(data.answers[idx] - first_value)
        logits = model(input_ids=inputs, logits_to_keep=1).logits[:, -1, value_tokens]
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        if not loss.requires_grad:
            continue  # every group past its steps: the batch is drawn, nothing trains
        loss.backward()
        for name, w in weights.items():
            if w.requires_grad:
                assert w.grad is not None
                w.grad.mul_(masks[name])
        optimizer.step()
        if mu > 0:  # the proximal step of mu/2 |B - B_start|^2 on the own slot
            shrink = training.learning_rate * mu
            with torch.no_grad():
                for name, w in weights.items():
                    if w.requires_grad:
                        w[:, own] = (w[:, own] + shrink * start[name][:, own]) / (1.0 + shrink)

    result = {}
    for name, w in weights.items():
        trained = w.detach()
        others = masks[name] == 0
        if not torch.equal(trained[others], start[name][others]):
            raise RuntimeError(f"{name}: columns of slots other than {slot} changed during training")
        result[name] = trained[:, own].clone()
    return result


def _is_slot_state(value: object, weight: torch.Tensor, rank: int) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == (weight.shape[0], rank)


def _embed(value: torch.Tensor, weight: torch.Tensor, own: slice) -> torch.Tensor:
    """A per-parameter optimizer tensor of the own slot, placed in the own columns of zeros."""
    full = torch.zeros_like(weight)
    full[:, own] = value
    return full


def _clone(value: object) -> object:
    return value.clone() if isinstance(value, torch.Tensor) else value
