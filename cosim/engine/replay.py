"""What retrain's replay of the rounds before an event would cost, estimated from the rounds as they ran.

Retrain (``correction.policy: retrain``) trains again from round 0 without the leaver: its
replay sends every round's gossip among the devices still there, each message without the
leaver's slot, and a round no longer waits for the leaver's computing or its links.  A
residual policy never replays, but ``correction.budget.replay_share`` holds it to a share
of that cost, so the engine keeps a :class:`RoundRecord` of each round's gossip exchange
and :func:`replay_cost` replays the records without the devices that are gone.

Each sender's radio sends its messages one after another, in the order it sent them, each
starting once the previous one is through (as :class:`~cosim.network.builtin.BuiltinNetwork`
does): a message's airtime is the access delay plus its bits at the goodput it went at,
a message finishing after the exchange's deadline (the slowest remaining device's compute
end plus ``network.slot_s``) is not delivered, and its whole packets through by the deadline
count as sent.  Where the devices gone held the graph together, a message carries only
the slots of its sender's part of it.  What the estimate does not replay: the learning
(a slower or faster convergence), a budgeted allocation filling the bits the leaver's
slot freed with other slots, the contention of a shared medium (ns-3), correction exchanges and pulls (retrain
has none), and, after a join, the newcomer's part (it was not there to record).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sent:
    """One gossip message as it went.

    ``finish_s`` is when all of it would have been through (past the deadline for one cut
    off); ``slot_bits`` its payload bits per slot owner (the device whose slot they are;
    ``-1``: a slot without an owner, or the shared adapter).
    """

    src: int
    dst: int
    bits: int
    ready_s: float  # when the sender's radio could start it (Message.start_s)
    start_s: float
    finish_s: float
    linked: bool  # there was a link (a message without one is not sent)
    slot_bits: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundRecord:
    """A round's gossip exchange: when it started, when each device had computed, its messages."""

    start_s: float
    computed_s: dict[int, float]
    messages: tuple[Sent, ...]


@dataclass(frozen=True)
class ReplayCost:
    seconds: float
    bits: float
    rounds: int


def replay_cost(
    records: Iterable[RoundRecord],
    without: Collection[int],
    *,
    slot_s: float,
    access_delay_s: float,
    packet_bits: int,
) -> ReplayCost:
    """The seconds and delivered bits of ``records`` replayed without the devices ``without``.

    A round costs from its exchange's start to its end: when every remaining message is
    through and every remaining device has computed, or the deadline when a message is
    not delivered.  The bits are what the messages among the remaining devices deliver,
    each message without the bits of the slots of ``without`` and of the remaining devices
    that no link among the remaining devices, in any record, connects to its sender.
    """
    gone = set(without)
    records = list(records)
    part = _components(records, gone)
    seconds = bits = 0.0
    for record in records:
        remaining = [t for d, t in record.computed_s.items() if d not in gone]
        computed = max(remaining, default=record.start_s)
        deadline = computed + slot_s
        end, waits = computed, False
        free: dict[int, float] = {}  # per sender: when its radio is through with its last message
        for m in record.messages:
            if m.src in gone or m.dst in gone:
                continue
            if not m.linked:
                waits = True  # its receiver waits for it until the deadline
                continue
            cut_off = (
                d for d in m.slot_bits if d in gone or (d in part and part[d] != part[m.src])
            )  # gone, or on the other side of a split: its slot never reaches the sender
            payload = m.bits - sum(m.slot_bits[d] for d in cut_off)
            airtime = m.finish_s - m.start_s - access_delay_s
            goodput = m.bits / airtime if airtime > 0 else float("inf")
            start = max(m.ready_s, free.get(m.src, m.ready_s))
            finish = start + access_delay_s + payload / goodput
            free[m.src] = finish
            if finish <= deadline:
                bits += payload
                end = max(end, finish)
            else:
                waits = True
                through = max(0.0, (deadline - start - access_delay_s) * goodput)
                bits += min(payload, int(through // packet_bits) * packet_bits)
        seconds += (deadline if waits else min(end, deadline)) - record.start_s
    return ReplayCost(seconds=seconds, bits=bits, rounds=len(records))


def _components(records: list[RoundRecord], gone: set[int]) -> dict[int, int]:
    """Per remaining device, a label of its part of the graph of every link among the remaining devices.

    A slot crosses only links: where the devices gone held the graph together, the replay's
    messages carry only the slots of their sender's part.
    """
    parent: dict[int, int] = {}

    def root(d: int) -> int:
        while parent.setdefault(d, d) != d:
            parent[d] = parent[parent[d]]
            d = parent[d]
        return d

    for record in records:
        for d in record.computed_s:
            if d not in gone:
                root(d)
        for m in record.messages:
            if m.linked and m.src not in gone and m.dst not in gone:
                parent[root(m.src)] = root(m.dst)
    return {d: root(d) for d in list(parent)}
