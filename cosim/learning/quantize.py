"""Quantize a layer group's payload for sending, and dequantize it on arrival (method.md section 7).

Symmetric scales from the largest magnitude: :func:`quantize_dequantize` takes one per
tensor; :func:`quantize_slices`, which the exchange uses, one per module and slot (each
``(d_out, r)`` matrix of a message).  At ``q`` bits the integer grid is ``-L .. L`` with
``L = 2^(q-1) - 1`` levels per sign (7 at 4 bits, 127 at 8, 32767 at 16) and step
``scale = max|x| / L``; one code of the ``2^q`` stays unused so that the grid is symmetric
and zero is exact.  16 bits use the same integer grid (not float16), so every precision
below 32 shares one rounding rule.  The exchange rounds to nearest;
:func:`quantize_dequantize` can also round stochastically (unbiased).  32 bits is float32
passthrough.

The sender also sends each ``scale`` (one float32): count it in the message header.
"""

from __future__ import annotations

import torch

__all__ = [
    "QUANTIZE_BITS",
    "expected_slice_error",
    "quantization_step",
    "quantize_dequantize",
    "quantize_slices",
]

QUANTIZE_BITS: tuple[int, ...] = (4, 8, 16, 32)
"""Precisions :func:`quantize_dequantize` supports."""


def _levels(bits: int) -> int:
    if bits not in QUANTIZE_BITS:
        raise ValueError(f"bits must be one of {QUANTIZE_BITS}, got {bits}")
    return 2 ** (bits - 1) - 1


def quantization_step(x: torch.Tensor, bits: int) -> float:
    """The grid step ``scale = max|x| / (2^(bits-1) - 1)`` used for ``x``.

    0 for 32 bits (no grid) and for an all-zero or empty ``x``.
    """
    levels = _levels(bits)
    if bits == 32 or x.numel() == 0:
        return 0.0
    return float(x.detach().abs().max().to(torch.float32)) / levels


def quantize_dequantize(
    x: torch.Tensor, bits: int, *, stochastic: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """What the receiver reconstructs from ``x`` sent at ``bits`` bits: a new float32 tensor of ``x``'s shape.

    ``bits`` in :data:`QUANTIZE_BITS`.  With ``bits = 32`` the result equals
    ``x.to(float32)`` (a copy).  Otherwise each entry becomes ``scale * n`` with the
    integer ``n`` in ``[-L, L]``:

    * nearest rounding (``stochastic=False``): ``n = round(x / scale)``, so
      ``|error| <= scale / 2``; deterministic, ``generator`` ignored.
    * stochastic rounding (``stochastic=True``): ``n = floor(x / scale + u)``,
      ``u ~ U[0, 1)`` drawn from ``generator`` (required), so ``E[result] = x`` and
      ``|error| < scale``.

    Computed in float32; non-finite input raises ValueError.
    """
    levels = _levels(bits)
    if stochastic and generator is None:
        raise ValueError("stochastic rounding needs a torch.Generator (seeds are passed in, never global)")
    values = x.detach().to(torch.float32)
    if bits == 32:
        return values.clone()
    if values.numel() == 0:
        return values.clone()
    if not bool(torch.isfinite(values).all()):
        raise ValueError("cannot quantize a tensor with non-finite entries")
    peak = values.abs().max()
    if float(peak) == 0.0:
        return torch.zeros_like(values)
    scale = peak / levels
    scaled = values / scale
    if stochastic:
        noise = torch.rand(scaled.shape, generator=generator, dtype=torch.float32, device=scaled.device)
        codes = torch.floor(scaled + noise)
    else:
        codes = torch.round(scaled)
    return codes.clamp_(-levels, levels) * scale


def quantize_slices(x: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`quantize_dequantize` with nearest rounding applied to each ``x[..., :, :]`` on its own.

    The copies of a module arrive as ``(senders, slots, d_out, r)``; every ``(d_out, r)``
    matrix (one slot of one module from one sender) gets its own scale, as a message
    carries one float32 scale per module and slot.
    """
    levels = _levels(bits)
    values = x.detach().to(torch.float32)
    if bits == 32 or values.numel() == 0:
        return values.clone()
    if not bool(torch.isfinite(values).all()):
        raise ValueError("cannot quantize a tensor with non-finite entries")
    peak = values.abs().amax(dim=(-2, -1), keepdim=True)
    scale = torch.where(peak > 0, peak / levels, torch.ones_like(peak))
    return torch.round(values / scale).clamp_(-levels, levels) * scale


def expected_slice_error(peak: torch.Tensor, elements: int, bits: int) -> torch.Tensor:
    """Expected squared error of a ``(d_out, r)`` slice of ``elements`` entries quantized at ``bits``.

    ``peak`` is the slice's ``max|x|`` (any shape: one per slice).  Nearest rounding on
    the grid of step ``peak / L`` leaves each entry an error spread evenly over half a
    step either side, so the slice's squared error is ``elements * (peak / L)^2 / 12``
    with ``L = 2^(bits-1) - 1``: the ``2^(-2q)`` of method.md section 7.  The rounding
    model holds while the step is small against the entries' spread (checked against
    :func:`quantize_slices`, which this describes, in the tests); 0 at 32 bits.
    """
    levels = _levels(bits)
    if bits == 32:
        return torch.zeros_like(peak, dtype=torch.float64)
    step = peak.to(torch.float64) / levels
    return elements * step * step / 12.0
