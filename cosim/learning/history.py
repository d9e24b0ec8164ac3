"""Stored local updates and FedEraser-style calibration (the non-orthogonal unlearning baseline).

With shared adapters a device's contribution is mixed into every adapter and cannot be
deleted.  FedEraser (Liu et al., 2021) unlearns it from stored history instead: every
``interval``-th round each device keeps its local update ``U^i_t`` (the change its local
steps made to its adapter).  To forget a device, training restarts from the initial
adapter and replays only the stored rounds, without the leaver: each remaining device
trains a few calibration steps, giving an update ``Û^i_t``, and applies
``Ũ^i_t = |U^i_t| Û^i_t / |Û^i_t|`` (per module): the stored update's length in the
calibration update's direction.

Pure bookkeeping on tensors: the engine decides when to record and replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Entry", "UpdateHistory", "calibrate", "difference"]

Updates = dict[int, dict[str, torch.Tensor]]  # device -> module -> update


def difference(after: Updates, before: Updates) -> Updates:
    """``after - before`` per device and module."""
    return {d: {n: after[d][n] - before[d][n] for n in after[d]} for d in after}


def calibrate(
    calibration: dict[str, torch.Tensor], stored: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``|stored| * calibration / |calibration|`` per module (0 where the calibration update is 0)."""
    out = {}
    for name, u in calibration.items():
        norm = torch.linalg.vector_norm(u)
        out[name] = u * (torch.linalg.vector_norm(stored[name]) / norm) if norm > 0 else torch.zeros_like(u)
    return out


@dataclass
class Entry:
    """The updates of one stored round (``round`` is the engine's round counter when recorded)."""

    round: int
    updates: Updates = field(default_factory=dict)


@dataclass
class UpdateHistory:
    """Every stored round's updates, oldest first."""

    entries: list[Entry] = field(default_factory=list)

    def record(self, round_: int, updates: Updates) -> None:
        """Store ``updates`` as they are: the caller hands over tensors nobody else holds."""
        self.entries.append(Entry(round_, updates))

    def forget(self, devices: set[int]) -> None:
        """Drop the updates of ``devices`` (they left) and any round left empty."""
        for entry in self.entries:
            for d in devices:
                entry.updates.pop(d, None)
        self.entries = [e for e in self.entries if e.updates]

    def devices(self) -> set[int]:
        """Every device with a stored update."""
        return {d for entry in self.entries for d in entry.updates}

    def nbytes(self) -> int:
        """Memory of the stored updates, all devices together."""
        return sum(self.nbytes_per_device().values())

    def nbytes_per_device(self) -> dict[int, int]:
        """Memory each device spends on its own stored updates."""
        out: dict[int, int] = {}
        for entry in self.entries:
            for d, per in entry.updates.items():
                out[d] = out.get(d, 0) + sum(t.numel() * t.element_size() for t in per.values())
        return out
