"""Where a run's simulated time went, what it sent, and how accuracy came back after events.

Latency breakdown.  A round starts at ``time_s`` and ends at ``round_end_s`` (every
needed transfer arrived, or the deadline).  Each live device's share of it is cut,
in this order along its own timeline, into::

    pull_s            a newcomer waiting for the copies it pulls (until its pull
                      arrived, or its deadline when it did not; 0 for everyone else):
                      it sends and computes only then
    correction_s      the rest of a correction's work before the round's regular steps:
                      its extra exchanges, its extra local steps and the exchange of the
                      corrected slots (``rounds.sync_s``, less the pull; 0 outside a
                      correction)
    compute_s         its regular local steps
    medium_s          a message ready but not on the air: the shared medium held by other
                      senders (ns-3's carrier sense), the device's radio still serving a
                      newcomer's pull, or, at packet fidelity, the time the device's
                      messages took beyond their airtime with resends (bits / goodput):
                      MAC overhead and contention, among its own flows too
    access_s          the fixed per-message delay (``access_delay_s``), per message sent
    transmission_s    the message's bits at the loss-free rate, bits / (rate * mac_efficiency)
    retransmission_s  packets resent after loss: bits / goodput - bits / (rate * mac_efficiency)
    waiting_s         the rest, after its last message ended: waiting for the slowest
                      device or link, until the round ends

Every phase is the part of its interval inside the round that no earlier phase already
covers, so the phases are disjoint and ``waiting_s`` (the remainder) is never negative
beyond rounding: the eight add up to ``round_end_s - time_s`` to rounding (1e-12 s).
A device's gossip messages are taken in the order they started, from
``transfers.start_s`` to ``transfers.finish_s`` (a message aborted at the deadline, with
an infinite ``finish_s`` at ns-3 packet fidelity, until the round's end), in bursts of
messages that overlap in time (at packet fidelity a sender's messages run at once; at
the other fidelities each message is a burst of its own).  Within a burst the access
delays come first, then the messages' airtime with resends (each message's up to
bits / goodput), split between transmission and retransmission in the ratio
``(1 - loss) : loss`` (packets are lost and resent throughout), and any longer time is
``medium_s``; a message relayed over several hops (routing: no one link's rate in the
trace) counts its airtime as transmission.  Time the trace shows a device busy but that
is not counted (it ran past the round end, or overlapped an earlier phase or message)
is reported in ``clipped_s``, which is not a phase.

Event recovery: see :func:`event_recovery`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cosim.analysis.load import Run

__all__ = [
    "MEMBERSHIP_KINDS",
    "PHASES",
    "accuracy_timeline",
    "communication_totals",
    "event_recovery",
    "group_bits",
    "latency_breakdown",
    "round_breakdown",
]

PHASES = (
    "pull_s",
    "correction_s",
    "compute_s",
    "medium_s",
    "access_s",
    "transmission_s",
    "retransmission_s",
    "waiting_s",
)
"""The phases of a round, in timeline order; they add up to the round's duration."""

MEMBERSHIP_KINDS = ("join", "leave", "leave_silent")
"""Event kinds :func:`event_recovery` measures (``leave_silent``: from when the device went quiet)."""


def _overlap(lo: float, hi: float, window_lo: float, window_hi: float) -> float:
    return max(0.0, min(hi, window_hi) - max(lo, window_lo))


def latency_breakdown(run: Run) -> pd.DataFrame:
    """One row per round and live device (the rows of ``rounds``) with the phases of
    :data:`PHASES` in seconds (see the module docstring), plus ``round``, ``device``,
    ``time_s``, ``round_end_s``, ``duration_s`` and ``clipped_s``."""
    access_delay_s = run.access_delay_s
    mac_efficiency = run.mac_efficiency
    transfers = run.transfers
    # A newcomer whose pull did not arrive waits for it until the pull's deadline: the
    # pull event's deadline_s (its start as asked plus slot_s; older traces: the start
    # the transfer shows).
    pulls = transfers[transfers["purpose"] == "pull"]
    slot_s = run.slot_s if len(pulls) else np.inf
    deadlines: dict[tuple[int, int], float] = {}
    events = run.events
    pull_events = events[events["kind"] == "pull"] if "kind" in events else events.iloc[0:0]
    for r, d, detail in pull_events.reindex(columns=["round", "device", "detail"]).itertuples(False):
        deadline = json.loads(detail).get("deadline_s") if isinstance(detail, str) else None
        if deadline is not None:
            deadlines[(int(r), int(d))] = float(deadline)
    pull_end = {
        (int(r), int(d)): min(float(f), deadlines.get((int(r), int(d)), float(s) + slot_s))
        for r, d, s, f in pulls[["round", "dst", "start_s", "finish_s"]].itertuples(False)
    }
    gossip = transfers[transfers["purpose"] == "gossip"].sort_values(
        ["round", "src", "start_s"], kind="stable"
    )
    sent: dict[tuple[int, int], list[tuple[float, float, float, float, float]]] = {}
    for r, src, start, finish, bits, rate, goodput in gossip[
        ["round", "src", "start_s", "finish_s", "bits", "rate_bps", "goodput_bps"]
    ].itertuples(False):
        sent.setdefault((int(r), int(src)), []).append(
            (float(start), float(finish), float(bits), float(rate), float(goodput))
        )

    rounds = run.rounds.copy()
    if "sync_s" not in rounds:  # a trace without corrections' timing: none took place
        rounds["sync_s"] = 0.0
    if "tx_start_s" not in rounds:
        rounds["tx_start_s"] = np.nan
    rows = []
    for r, device, t0, end, compute_raw, sync_raw, tx_start in rounds[
        ["round", "device", "time_s", "round_end_s", "compute_s", "sync_s", "tx_start_s"]
    ].itertuples(False):
        key = (int(r), int(device))
        t0, duration = float(t0), float(end) - float(t0)
        # Offsets from the round start keep the rounding small.
        pull_raw = max(pull_end.get(key, float(t0)) - t0, 0.0)
        pull = min(pull_raw, duration)
        correction = _overlap(0.0, max(float(sync_raw), 0.0), pull, duration)
        # compute_s counts a correction's extra steps too, which run within sync_s: the
        # regular steps are what lies between being ready and starting to send.
        ready = max(float(sync_raw), pull_raw)
        regular_raw = float(compute_raw)
        if not np.isnan(tx_start):
            regular_raw = min(max(float(tx_start) - t0 - ready, 0.0), regular_raw)
        cursor = pull + correction  # both start at the round's start and do not overlap
        compute = _overlap(cursor, cursor + regular_raw, cursor, duration)
        cursor += compute
        clipped = (pull_raw - pull) + (regular_raw - compute)
        medium = access = transmission = retransmission = 0.0
        # (start, end) from the round's start; one aborted at the deadline (an infinite
        # finish_s, ns-3 packet fidelity) ends with the round.
        messages = [
            (start - t0, finish - t0 if np.isfinite(finish) else max(duration, start - t0), *rest)
            for start, finish, *rest in sent.get(key, [])
        ]
        i = 0
        while i < len(messages):
            # A burst: messages overlapping in time (at packet fidelity a sender's messages run
            # at once); one message on its own at the other fidelities.
            burst, end = [messages[i]], messages[i][1]
            i += 1
            while i < len(messages) and messages[i][0] < end:
                burst.append(messages[i])
                end = max(end, messages[i][1])
                i += 1
            s = burst[0][0]
            medium += _overlap(cursor, s, cursor, duration)  # ready, not yet on the air
            cursor = max(cursor, min(s, duration))
            # The burst's time, from its first start to its last end: the access delays, then
            # the airtime with resends (bits / goodput) split by each message's loss-free
            # share, then whatever is left: access to the medium.
            a_total = sending = sending_tx = raw = 0.0
            for m_start, f, bits, rate, goodput in burst:
                a = min(access_delay_s, f - m_start)
                data = f - m_start - a
                if rate > 0 and goodput > 0:
                    on_air = min(bits / goodput, data)
                    tx_share = min(bits / (rate * mac_efficiency) / (bits / goodput), 1.0)
                else:  # relayed over several hops: no one link's rate to split by
                    on_air, tx_share = data, 1.0
                a_total += a
                sending += on_air
                sending_tx += on_air * tx_share
                raw += f - m_start
            access_part = _overlap(s, s + a_total, cursor, duration)
            sending_part = _overlap(s + a_total, s + a_total + sending, cursor, duration)
            medium_part = _overlap(s + a_total + sending, end, cursor, duration)
            tx_share = sending_tx / sending if sending > 0 else 0.0
            access += access_part
            transmission += sending_part * tx_share
            retransmission += sending_part * (1.0 - tx_share)
            medium += medium_part
            clipped += raw - access_part - sending_part - medium_part
            cursor = max(cursor, min(end, duration))
        waiting = duration - (correction + pull + compute + medium + access + transmission + retransmission)
        rows.append(
            {
                "round": key[0],
                "device": key[1],
                "time_s": t0,
                "round_end_s": float(end),
                "duration_s": duration,
                "correction_s": correction,
                "pull_s": pull,
                "compute_s": compute,
                "medium_s": medium,
                "access_s": access,
                "transmission_s": transmission,
                "retransmission_s": retransmission,
                "waiting_s": waiting,
                "clipped_s": clipped,
            }
        )
    return pd.DataFrame(
        rows, columns=["round", "device", "time_s", "round_end_s", "duration_s", *PHASES, "clipped_s"]
    )


def round_breakdown(run: Run, how: Literal["critical", "mean"] = "critical") -> pd.DataFrame:
    """One row per round: the phases of one device (``how="critical"``) or their mean over
    the live devices (``how="mean"``); either way they add up to ``duration_s``.

    The critical device is the one whose last message ended last, i.e. waited least
    (``waiting_s`` smallest; ties, such as several devices sending until the deadline, go
    to the lowest device id): its phases are the round's critical path.
    ``device`` is -1 for ``how="mean"``; ``devices`` counts the live devices.
    """
    if how not in ("critical", "mean"):
        raise ValueError(f"how must be 'critical' or 'mean', got {how!r}")
    per_device = latency_breakdown(run)
    cols = ["round", "time_s", "round_end_s", "duration_s", "device", "devices", *PHASES]
    if per_device.empty:
        return pd.DataFrame(columns=cols)
    counts = per_device.groupby("round")["device"].count().rename("devices")
    if how == "critical":
        # Waiting to the nanosecond: devices sending until the deadline tie, rounding apart.
        ordered = per_device.assign(_waiting=per_device["waiting_s"].round(9)).sort_values(
            ["round", "_waiting", "device"], kind="stable"
        )
        out = ordered.groupby("round", as_index=False).first()
    else:
        out = per_device.groupby("round", as_index=False)[
            ["time_s", "round_end_s", "duration_s", *PHASES]
        ].mean()
        out["device"] = -1
    out = out.merge(counts, left_on="round", right_index=True)
    return out[cols].reset_index(drop=True)


def communication_totals(run: Run) -> pd.DataFrame:
    """Bits sent per round, sending device (``device`` = ``transfers.src``) and ``purpose``
    (gossip; sync, a correction's extra exchanges; or pull): ``messages``,
    ``messages_delivered``, ``bits`` (what got through by the deadline,
    ``transfers.delivered_bits``: a message cut off at the deadline counts the packets it
    got out), ``bits_delivered`` (bits of the messages delivered whole and used) and
    ``delivered_ratio`` = bits_delivered / bits (NaN where nothing was sent).  Sum over
    ``device`` or ``round`` for other totals."""
    t = run.transfers.assign(
        delivered_int=run.transfers["delivered"].astype("int64"),
        bits_delivered=run.transfers["bits"].where(run.transfers["delivered"], 0).astype("int64"),
    )
    out = (
        t.groupby(["round", "src", "purpose"], as_index=False)
        .agg(
            time_s=("time_s", "first"),
            messages=("bits", "size"),
            messages_delivered=("delivered_int", "sum"),
            bits=("delivered_bits", "sum"),
            bits_delivered=("bits_delivered", "sum"),
        )
        .rename(columns={"src": "device"})
    )
    out["delivered_ratio"] = out["bits_delivered"] / out["bits"].where(out["bits"] > 0)
    return out[
        [
            "round",
            "time_s",
            "device",
            "purpose",
            "messages",
            "messages_delivered",
            "bits",
            "bits_delivered",
            "delivered_ratio",
        ]
    ]


def accuracy_timeline(run: Run) -> pd.DataFrame:
    """Network-wide accuracy (the ``evaluations`` rows with a null ``device``: the mean over
    live devices), tidy: ``time_s``, ``round``, ``stage``, ``split``, ``accuracy``, ``loss``,
    in the order they were taken."""
    ev = run.evaluations
    means = ev[ev["device"].isna()]
    return means[["time_s", "round", "stage", "split", "accuracy", "loss"]].reset_index(drop=True)


def event_recovery(
    run: Run | pd.DataFrame,
    events: pd.DataFrame | None = None,
    *,
    tolerance: float = 0.02,
    join_target: float = 0.9,
    leave_target: float | None = None,
) -> pd.DataFrame:
    """How long accuracy took to come back after each join and leave.

    For each event of a kind in :data:`MEMBERSHIP_KINDS` (at round ``r``, time ``t``):

    * baseline: the network-wide accuracy of the split just before the event (the
      ``before_event`` row of round ``r``; failing that, the last ``round`` row taken at or
      before ``t``);
    * leave / leave_silent: split ``retain``; recovered once accuracy >= baseline - tolerance
      (or >= ``leave_target`` when given: one absolute target, e.g. shared by several runs);
    * join: split ``newcomer``; recovered once accuracy >= ``join_target`` (the newcomer's
      knowledge has spread; its baseline is what the others knew of it before);
    * recovery is the first network-wide ``round``-stage evaluation of round >= ``r`` that
      meets the threshold: ``recovery_s`` = its ``time_s`` - t, ``recovery_rounds`` = its
      round - r + 1 (rounds played since the event, the event's own round included; so at
      least 1).  NaN (and ``recovered`` False) if it never does.  With ``eval_every`` > 1 the
      answer is only as fine as the evaluations.
    * ``recovery_bits``: every bit sent (``delivered_bits``: what got through by each
      deadline) in the rounds from ``r`` to the recovery round (both
      included; gossip, a correction's extra exchanges and pulls); NaN without a
      :class:`Run` (no transfers) or without recovery.

    ``run`` is a :class:`Run`, or an ``evaluations`` DataFrame given together with ``events``.
    Columns: round, time_s, kind, device, split, baseline, after_event, threshold,
    recovered, recovery_round, recovery_time_s, recovery_s, recovery_rounds, recovery_bits.
    """
    transfers = None
    if isinstance(run, Run):
        evaluations, events, transfers = run.evaluations, run.events, run.transfers
    else:
        if events is None:
            raise ValueError("event_recovery: pass events together with an evaluations DataFrame")
        evaluations = run
    means = evaluations[evaluations["device"].isna()]
    rows = []
    for r, t, kind, device in events[events["kind"].isin(MEMBERSHIP_KINDS)][
        ["round", "time_s", "kind", "device"]
    ].itertuples(False):
        r, t = int(r), float(t)
        split = "newcomer" if kind == "join" else "retain"
        of_split = means[means["split"] == split]
        before = of_split[(of_split["stage"] == "before_event") & (of_split["round"] == r)]
        if before.empty:
            before = of_split[(of_split["stage"] == "round") & (of_split["time_s"] <= t)]
        after = of_split[(of_split["stage"] == "after_event") & (of_split["round"] == r)]
        baseline = float(before["accuracy"].iloc[-1]) if not before.empty else np.nan
        if kind == "join":
            threshold = join_target
        else:
            threshold = baseline - tolerance if leave_target is None else leave_target
        later = of_split[(of_split["stage"] == "round") & (of_split["round"] >= r)].sort_values(
            ["round", "time_s"], kind="stable"
        )
        hit = later[later["accuracy"] >= threshold] if not np.isnan(threshold) else later.iloc[0:0]
        row = {
            "round": r,
            "time_s": t,
            "kind": kind,
            "device": int(device),
            "split": split,
            "baseline": baseline,
            "after_event": float(after["accuracy"].iloc[-1]) if not after.empty else np.nan,
            "threshold": threshold,
            "recovered": not hit.empty,
            "recovery_round": np.nan,
            "recovery_time_s": np.nan,
            "recovery_s": np.nan,
            "recovery_rounds": np.nan,
            "recovery_bits": np.nan,
        }
        if not hit.empty:
            first = hit.iloc[0]
            row.update(
                recovery_round=int(first["round"]),
                recovery_time_s=float(first["time_s"]),
                recovery_s=float(first["time_s"]) - t,
                recovery_rounds=int(first["round"]) - r + 1,
            )
            if transfers is not None:
                window = transfers["round"].between(r, int(first["round"]))
                row["recovery_bits"] = float(transfers.loc[window, "delivered_bits"].sum())
        rows.append(row)
    columns = [
        "round",
        "time_s",
        "kind",
        "device",
        "split",
        "baseline",
        "after_event",
        "threshold",
        "recovered",
        "recovery_round",
        "recovery_time_s",
        "recovery_s",
        "recovery_rounds",
        "recovery_bits",
    ]
    return pd.DataFrame(rows, columns=columns)


def group_bits(run: Run) -> pd.DataFrame:
    """Payload bits per round and layer group.

    Gossip and sync messages: from the ``allocations`` table (each slot's layer group at
    the precision it travelled at, scales included).  Other messages (a newcomer's pull)
    and runs without that table carry ``slots`` whole slot copies at 32 bits; a slot's
    ``B`` has ``rank * d_out`` entries per adapted module, and modules belong to layer
    groups by their block (``block * G // layers``).  Columns: ``round``, ``group``,
    ``bits`` (the messages' payload as offered), ``bits_sent`` (what went on the air: each
    message's payload times its share ``delivered_bits / bits``, the packets through by the
    deadline, as every other bit figure counts) and ``bits_delivered`` (the payload of the
    messages that arrived).  Headers are not in any group.
    """
    from cosim.scenario import parse_scenario

    spec = parse_scenario(run.manifest["scenario"]).model
    dims = spec.module_dims()
    per_block = sum(dims[m][1] for m in spec.target_modules) * spec.rank * 32
    layers, groups = spec.num_layers, spec.layer_groups
    bits_per_slot = dict.fromkeys(range(groups), 0)
    for block in range(layers):
        bits_per_slot[block * groups // layers] += per_block
    t = run.transfers.copy()
    # The share of each message that went on the air (older traces: all of a delivered one).
    through = t["delivered_bits"] if "delivered_bits" in t else t["bits"].where(t["delivered"], 0)
    t["sent_share"] = (through / t["bits"].where(t["bits"] > 0)).fillna(0.0)
    frames = []
    path = Path(run.path) / "allocations.parquet"
    allocations = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    if len(allocations):
        key = ["round", "time_s", "purpose", "src", "dst"]  # one message per key
        shares = allocations[key].merge(t[[*key, "sent_share"]], on=key, how="left", validate="many_to_one")
        t = t[~t["purpose"].isin(allocations["purpose"].unique())]
        frames.append(
            pd.DataFrame(
                {
                    "round": allocations["round"],
                    "group": allocations["group"],
                    "bits": allocations["bits"],
                    "bits_sent": allocations["bits"] * shares["sent_share"].to_numpy(),
                    "bits_delivered": allocations["bits"].where(allocations["delivered"], 0),
                }
            )
        )
    for g, per_slot in bits_per_slot.items():
        bits = t["slots"] * per_slot
        frames.append(
            pd.DataFrame(
                {
                    "round": t["round"],
                    "group": g,
                    "bits": bits,
                    "bits_sent": bits * t["sent_share"],
                    "bits_delivered": bits.where(t["delivered"], 0),
                }
            )
        )
    columns = ["round", "group", "bits", "bits_sent", "bits_delivered"]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty:
        return pd.DataFrame(columns=columns)
    summed = rows.groupby(["round", "group"], as_index=False)[columns[2:]].sum()
    return summed.sort_values(["group", "round"], ignore_index=True)[columns]
