"""PEFT interop: a device's view of the slots as one ordinary LoRA adapter, and back.

Stacking the live slots gives a rank ``K_live * r`` LoRA adapter with
``lora_A = [A_k]`` and ``lora_B = [B_k]``; with ``lora_alpha = alpha * K_live`` its
scaling ``lora_alpha / (K_live r)`` equals the slots' ``alpha / r``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

__all__ = ["peft_lora_layers", "to_peft_model"]


def to_peft_model(
    base: nn.Module,
    adapter: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    rank: int,
    alpha: float,
    target_modules: tuple[str, ...],
) -> PeftModel:
    """Wrap ``base`` (a plain model, not slot-wrapped) in a PEFT LoRA model holding ``adapter``.

    ``adapter`` maps each module's qualified name to ``(A, B)`` with ``A`` of shape
    ``(K r, d_in)`` and ``B`` of shape ``(d_out, K r)``.
    """
    width = {a.shape[0] for a, _ in adapter.values()}
    if len(width) != 1:
        raise ValueError(f"every module needs the same stacked rank, got {sorted(width)}")
    stacked = width.pop()
    slots = stacked // rank
    config = LoraConfig(
        r=stacked,
        lora_alpha=alpha * slots,  # type: ignore[arg-type]  # peft accepts floats
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=True,
    )
    model = get_peft_model(base, config)
    inner = cast(nn.Module, model.base_model.model)
    for name, (a, b) in adapter.items():
        layer: Any = inner.get_submodule(name)
        with torch.no_grad():
            layer.lora_A["default"].weight.copy_(a)
            layer.lora_B["default"].weight.copy_(b)
    return model


def peft_lora_layers(model: PeftModel) -> dict[str, nn.Module]:
    """The LoRA-wrapped modules of a PEFT model by their name in the base model."""
    prefix = "base_model.model."
    return {
        name.removeprefix(prefix): module
        for name, module in model.named_modules()
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {})
    }
