"""The network seam: what the rest of cosim may ask of a network backend.

A backend answers three questions about the devices it was built for: where they
are at a simulated time, what the links among them are then, and when a round's
messages arrive.  Only the plain types below cross the seam; nothing specific to a
backend (ns-3 objects, random generators) does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["LinkState", "Message", "NetworkBackend", "TransferResult"]


@dataclass(frozen=True, eq=False)
class LinkState:
    """Per-link state among ``devices`` at one simulated time.

    Matrices are (n, n), indexed in the order of ``devices``, symmetric for the
    builtin backend, and read-only.  Entry [i, j] describes the link from
    ``devices[i]`` to ``devices[j]``.  A link exists where ``rate_bps > 0``; where
    it does not (and on the diagonal) ``mcs`` is -1, ``rate_bps`` and
    ``goodput_bps`` are 0 and ``loss`` is 1.
    """

    time_s: float
    devices: tuple[int, ...]
    distance_m: np.ndarray
    """(n, n) float: distance between the two devices."""
    snr_db: np.ndarray
    """(n, n) float: SNR at the receiver; -inf on the diagonal."""
    mcs: np.ndarray
    """(n, n) int: the chosen MCS; -1 where there is no link."""
    rate_bps: np.ndarray
    """(n, n) float: PHY rate of the chosen MCS; 0 where there is no link."""
    loss: np.ndarray
    """(n, n) float: packet error rate at the chosen MCS; 1.0 where there is no link."""
    goodput_bps: np.ndarray
    """(n, n) float: rate_bps * mac_efficiency * (1 - loss); 0 where there is no link."""

    @classmethod
    def of(
        cls,
        time_s: float,
        devices: Sequence[int],
        distance_m: np.ndarray,
        snr_db: np.ndarray,
        mcs: np.ndarray,
        rate_bps: np.ndarray,
        loss: np.ndarray,
        mac_efficiency: float,
    ) -> LinkState:
        """The link state with ``goodput_bps = rate_bps * mac_efficiency * (1 - loss)``, every
        matrix made read-only."""
        goodput_bps = rate_bps * mac_efficiency * (1.0 - loss)
        arrays = [distance_m, snr_db, mcs, rate_bps, loss, goodput_bps]
        for a in arrays:
            a.setflags(write=False)
        return cls(float(time_s), tuple(int(d) for d in devices), *arrays)

    def adjacency(self) -> np.ndarray:
        """(n, n) bool: True where a link exists (``rate_bps > 0``)."""
        return np.asarray(self.rate_bps > 0)

    def index(self, device: int) -> int:
        """Row/column of ``device`` in the matrices; ValueError if it is not among ``devices``."""
        try:
            return self.devices.index(device)
        except ValueError:
            known = list(self.devices)
            raise ValueError(f"device {device} is not in this link state; devices: {known}") from None


@dataclass(frozen=True)
class Message:
    """``bits`` to send from ``src`` to ``dst``, not before ``start_s``."""

    src: int
    dst: int
    bits: int
    start_s: float
    """Earliest simulated time the sender can start sending it."""


@dataclass(frozen=True)
class TransferResult:
    """What became of one :class:`Message`."""

    src: int
    dst: int
    bits: int
    start_s: float
    """When sending actually began (after the sender's earlier messages)."""
    finish_s: float
    """When the last bit arrived; may be after the deadline; equals start_s if there is no link."""
    rate_bps: float
    """PHY rate of the link used (0 if there is no link)."""
    loss: float
    """Packet error rate of the link used (1.0 if there is no link)."""
    delivered: bool
    """The link exists and finish_s <= deadline_s."""
    delivered_bits: int
    """Bits through by the deadline: all of them if delivered, 0 with no link."""
    goodput_bps: float = 0.0
    """Rate at which the message's bits went through (0 if there is no link)."""


@runtime_checkable
class NetworkBackend(Protocol):
    """A network model of a fixed set of devices (every device that ever takes part)."""

    def positions(self, time_s: float, devices: Sequence[int]) -> np.ndarray:
        """(n, 2) positions in metres of ``devices`` at ``time_s``, in the order given."""
        ...

    def links(self, time_s: float, devices: Sequence[int]) -> LinkState:
        """Link state among ``devices`` (distinct) at ``time_s``."""
        ...

    def transfer(
        self,
        time_s: float,
        messages: Sequence[Message],
        deadline_s: float,
        on_air: Sequence[TransferResult] = (),
    ) -> list[TransferResult]:
        """Send ``messages`` over the links at ``time_s`` (the round start), among the devices
        that appear in them; one result per message, in the order of ``messages``.  Transfers
        finishing after ``deadline_s`` (an absolute time) are not delivered.

        ``on_air``: transmissions of earlier calls still under way after ``time_s`` (results
        whose ``finish_s`` is when their sender stopped).  They hold the radios, and on a
        shared medium the air, that they use until they end; the new messages are scheduled
        around them, and they are not reported again."""
        ...
