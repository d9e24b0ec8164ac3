"""The base model and the batched slot layers that sit on its adapted modules.

One frozen base model is shared by every device.  Each adapted ``nn.Linear`` is
wrapped in a :class:`SlotLinear` that adds, for each device in the batch, that
device's view of the LoRA slots:

    y_n = W0 x_n + s * B^(n) A x_n

where ``A`` stacks the frozen slot projections and ``B^(n)`` is device ``n``'s
copy of every slot.  Devices are folded into the batch dimension, so one forward
pass serves many devices, each with its own adapter; the result is the same as
running each device's own LoRA model alone (tested against peft).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from cosim.scenario import TinyModel

__all__ = ["SlotLinear", "build_tiny_base", "install_slot_layers", "target_linear_modules"]


def build_tiny_base(spec: TinyModel, vocab_size: int, seed: int) -> LlamaForCausalLM:
    """The embedded Llama-style base model: same spec, vocabulary and seed give the same weights."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=64,
        initializer_range=spec.init_std,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=None,
    )
    config._attn_implementation = "eager"
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    model.eval()
    model.requires_grad_(False)
    return model


def target_linear_modules(model: nn.Module, target_modules: tuple[str, ...]) -> list[tuple[str, nn.Linear]]:
    """``(qualified name, module)`` of each linear whose last name part is in ``target_modules``."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, SlotLinear)) and name.rsplit(".", 1)[-1] in target_modules:
            found.append((name, module.base if isinstance(module, SlotLinear) else module))
    return found


def block_index(module_name: str) -> int:
    """The transformer block a module belongs to (``model.layers.<i>....``)."""
    parts = module_name.split(".")
    return int(parts[parts.index("layers") + 1])


class SlotLinear(nn.Module):
    """A frozen linear plus every batched device's LoRA slots.

    Before a forward pass the caller sets ``views`` (``(n, d_out, K*r)``: each
    device's copy of all slots, columns ``k*r:(k+1)*r`` belonging to slot ``k``)
    and optionally ``own`` (``(n, d_out, r)``, the trainable own slot, whose
    columns must then be zero in ``views``) with ``own_slot`` (``(n,)``).  With
    ``views`` unset the layer is the base layer.
    """

    def __init__(self, base: nn.Linear, projection: torch.Tensor, rank: int, scaling: float) -> None:
        super().__init__()
        self.base = base
        self.projection: torch.Tensor
        self.register_buffer("projection", projection, persistent=False)
        self.rank = rank
        self.scaling = scaling
        self.views: torch.Tensor | None = None
        self.own: torch.Tensor | None = None
        self.own_slot: torch.Tensor | None = None

    @property
    def d_in(self) -> int:
        return int(self.base.in_features)

    @property
    def d_out(self) -> int:
        return int(self.base.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.views is None:
            return y
        n = self.views.shape[0]
        xs = x.reshape(n, -1, x.shape[-1])
        delta = torch.bmm(xs @ self.projection.T, self.views.transpose(1, 2))
        if self.own is not None:
            assert self.own_slot is not None
            a = self.projection.view(-1, self.rank, self.d_in)[self.own_slot]  # (n, r, d_in)
            delta = delta + torch.bmm(torch.bmm(xs, a.transpose(1, 2)), self.own.transpose(1, 2))
        return y + self.scaling * delta.reshape(y.shape)


def install_slot_layers(
    model: nn.Module, projections: dict[str, torch.Tensor], rank: int, scaling: float
) -> dict[str, SlotLinear]:
    """Replace each named linear by a :class:`SlotLinear` with its projection; returns them by name."""
    layers: dict[str, SlotLinear] = {}
    for name, projection in projections.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        if isinstance(base, SlotLinear):
            base = base.base
        layer = SlotLinear(base, projection, rank, scaling)
        setattr(parent, child, layer)
        layers[name] = layer
    return layers
