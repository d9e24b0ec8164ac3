"""Orthogonal LoRA slots: the frozen projections and the contribution coordinates.

Method (method.md section 3): for every adapted module ``l`` with input width
``d_in``, a shared seed draws ``Z_l ~ N(0, 1)`` of shape ``d_in x (K_max r)`` and
takes ``Q_l = qr(Z_l).Q``.  Slot ``k`` owns the rows
``A_{k,l} = Q_l[:, k r:(k+1) r]^T``, so ``A_k A_j^T`` is ``I_r`` for ``k = j`` and
``0`` otherwise.  The adapted weight is ``W_l = W0_l + s sum_k B_{k,l} A_{k,l}``
with ``s = alpha / r``; ``A`` is never trained nor sent.
"""

from __future__ import annotations

import torch

__all__ = ["contribution_coordinates", "contribution_index", "slot_projection"]


def slot_projection(d_in: int, slot_capacity: int, rank: int, generator: torch.Generator) -> torch.Tensor:
    """Stacked frozen projections ``A`` of all slots, shape ``(slot_capacity * rank, d_in)``.

    Rows ``k*rank:(k+1)*rank`` are slot ``k``'s ``A_k``; all rows are orthonormal.
    Computed in float64 and returned as float32.
    """
    width = slot_capacity * rank
    if width > d_in:
        raise ValueError(f"slot_capacity * rank = {width} exceeds the input width {d_in}")
    z = torch.randn(d_in, width, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(z)
    # Fix the sign ambiguity of QR so the result depends on Z alone.
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.T.contiguous().to(torch.float32)


def contribution_coordinates(
    delta_w: torch.Tensor, projection: torch.Tensor, rank: int, scaling: float
) -> torch.Tensor:
    """Recover every slot's ``B_k = dW A_k^T / s`` from a merged update ``dW`` (``d_out x d_in``).

    Returns ``(slot_capacity, d_out, rank)``.
    """
    coords = delta_w.to(projection.dtype) @ projection.T / scaling  # (d_out, K*r)
    d_out = coords.shape[0]
    return coords.reshape(d_out, -1, rank).permute(1, 0, 2).contiguous()


def contribution_index(slot_weights: list[torch.Tensor]) -> torch.Tensor:
    """``phi_k = sum_l |B_{k,l}|_F^2 / sum_{j,l} |B_{j,l}|_F^2`` from per-module ``(K, d_out, r)`` tensors."""
    energy = sum(w.pow(2).sum(dim=(1, 2)) for w in slot_weights)
    assert isinstance(energy, torch.Tensor)
    total = energy.sum()
    return energy / total if total > 0 else torch.zeros_like(energy)
