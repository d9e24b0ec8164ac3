"""The trace contract: every table, every column, its type and meaning.

This is the one place where the columns of a run's Parquet tables are defined.
Users' notebooks depend on it: add columns freely, never rename or drop one.
All times are simulated seconds unless the name says otherwise; every table has
``round`` and ``time_s``.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["TABLES", "describe"]

_I = pa.int64()
_F = pa.float64()
_S = pa.string()
_B = pa.bool_()

# table -> [(column, type, meaning)]
TABLES: dict[str, list[tuple[str, pa.DataType, str]]] = {
    "rounds": [
        ("round", _I, "round index"),
        ("time_s", _F, "simulated time the round started"),
        ("device", _I, "device id"),
        ("slot", _I, "the device's LoRA slot"),
        (
            "loss",
            _F,
            "mean training loss over the round's regular local steps (not a correction's extra ones)",
        ),
        ("steps", _I, "local steps taken"),
        (
            "flops",
            _F,
            "FLOPs of those steps (and of a leave's teacher pass, correction.local_target teacher)",
        ),
        ("compute_s", _F, "simulated compute time of the steps (and of a teacher pass)"),
        (
            "tx_start_s",
            _F,
            "when the device was ready to send (after computing, and after any pull its radio was "
            "serving); under ns-3 at analytic fidelity its first message starts when the shared "
            "medium is free (transfers.start_s)",
        ),
        ("tx_end_s", _F, "when its last message finished (or the deadline)"),
        (
            "bits_sent",
            _I,
            "bits of its gossip messages through by the deadline, headers included (their delivered_bits; a "
            "correction's extra exchanges are transfers rows with purpose sync)",
        ),
        ("bits_received", _I, "bits of the gossip delivered to it, headers included (transfers.bits)"),
        ("messages_sent", _I, "gossip messages it sent"),
        ("messages_delivered", _I, "of those, delivered by the deadline and used (not to a silent device)"),
        (
            "round_end_s",
            _F,
            "simulated time the round ended (every message arrived, or the deadline when one did not)",
        ),
        (
            "sync_s",
            _F,
            "time of the correction's extra exchanges and extra local steps at the round's start "
            "(before the regular steps)",
        ),
    ],
    "transfers": [
        ("round", _I, "round index"),
        (
            "time_s",
            _F,
            "simulated time of the link state the message used: when its exchange began (the "
            "round's start, or the end of the correction's last exchange before it in the round; "
            "the message itself starts at start_s, after any computing); for a pull, the join",
        ),
        (
            "purpose",
            _S,
            "gossip (slot exchange), sync (a correction's extra exchange: of some layer groups, or "
            "of every group after local correction; under the priority allocation a device sends no "
            "sync message that would carry no slot) or pull (a newcomer fetching its neighbour's copies)",
        ),
        ("src", _I, "sender"),
        ("dst", _I, "receiver"),
        (
            "slots",
            _I,
            "slots in the message, never the receiver's own (full: those whose copy the receiver "
            "lacks; uniform, proportional, random: every other live slot; priority: those with at "
            "least one layer group sent)",
        ),
        ("bits", _I, "the message's size: payload bits, headers included"),
        ("rate_bps", _F, "PHY rate of the link"),
        ("goodput_bps", _F, "rate after MAC efficiency and packet loss"),
        ("loss", _F, "packet error rate of the link"),
        ("distance_m", _F, "distance between the two devices"),
        ("snr_db", _F, "signal-to-noise ratio of the link"),
        ("mcs", _I, "modulation and coding scheme (-1: no link)"),
        ("start_s", _F, "when sending began (for a message the deadline cut off, when it would have)"),
        (
            "finish_s",
            _F,
            "when the last bit arrived; for a message the deadline cut off, when it would have "
            "(after the deadline), start_s without a link, inf at ns-3 packet fidelity "
            "(aborted at the deadline)",
        ),
        ("delivered", _B, "arrived whole by the deadline and was used"),
        (
            "delivered_bits",
            _I,
            "bits through by the deadline (the whole message when delivered; 0 without a link): "
            "what the message cost",
        ),
        (
            "budget_bits",
            _F,
            "the link's bit budget for the message (goodput x slot_s x budget_fraction); null: no budget",
        ),
        (
            "groups_sent",
            _I,
            "layer groups the message carried, of at least one slot (null for pulls)",
        ),
    ],
    "events": [
        ("round", _I, "round at which the event took effect"),
        ("time_s", _F, "simulated time"),
        (
            "kind",
            _S,
            "join, pull, leave, leave_silent, leave_detected, tombstone, slot_released, isolated, "
            "tombstone_by_silence (a leaver nobody heard: every device originates its tombstone "
            "after a silence timeout), correction (a decision: residuals per layer group and per "
            "affected device (among them each device's loss and accuracy on its residual samples, "
            "and after a leave accuracy_drop, their accuracy's mean fall since before the event), "
            "normalised terms, actions, reasons, the term acted on per layer group "
            "and its normalised value (acted, acted_value), sizes (local_steps, and per layer "
            "group local_group_steps) and the devices taking extra local steps; with a seconds, "
            "bits or replay_share budget, budget_limits (the correction's limits, with its first "
            "decision) and replay_estimate (the seconds, bits and rounds of retrain's replay they are "
            "taken from, estimated from the rounds before the event without the devices gone), and, "
            "where a round's extra exchanges or steps were cut to what is left, "
            "budget_cut (the local_steps and syncs the decision asked for); with "
            "correction.local_target teacher the residuals also hold teacher_distance (the "
            "trainees' mean squared distance from the teacher's centred logits on their residual "
            "samples, and per trainee teacher_distance_devices), teacher_done and, with "
            "tolerances.teacher_progress, teacher_progress (the share of the distance the last "
            "round of extra steps cut); for "
            "retrain and federaser the rounds to replay, and for federaser the stored history's "
            "bytes and the calibration steps) or correction_end (its cost; teacher_rows: the samples "
            "of its teacher pass)",
        ),
        ("device", _I, "the device concerned (-1 if none; for tombstone: the device applying it)"),
        ("slot", _I, "the slot concerned (-1 if none)"),
        ("detail", _S, "JSON with event-specific values"),
    ],
    "evaluations": [
        ("round", _I, "round index"),
        ("time_s", _F, "simulated time: for stage round, the round's end (rounds.round_end_s)"),
        (
            "stage",
            _S,
            "initial (base model), round (after the exchange), before_event or after_event",
        ),
        ("split", _S, "retain, forget, test, newcomer or heldout (unseen facts, when a device leaves)"),
        ("device", _I, "evaluated device's own model; null for the mean over live devices"),
        (
            "accuracy",
            _F,
            "mean over the split's rows of: facts on the tiny model, 1 when the highest-likelihood "
            "candidate answer is right, else 0; a real model (facts in words or a data file), 1 when "
            "greedy decoding generates the answer exactly, else 0, or with text_field the row's "
            "share of tokens, from the second on, that are the top-1 next-token prediction",
        ),
        (
            "loss",
            _F,
            "mean over the split's rows: facts on the tiny model, cross-entropy over the candidate "
            "answers; a real model, the mean cross-entropy over the row's answer tokens (with "
            "text_field: over its tokens from the second on)",
        ),
        ("n", _I, "questions in the split"),
        (
            "consensus_distance",
            _F,
            "mean squared distance of copies to their mean (null per device)",
        ),
        (
            "mia_auc",
            _F,
            "forget rows: AUC of the loss-threshold membership attack, forget vs heldout (with a data "
            "file: vs test) (per device; the mean row uses the loss averaged over devices); else null",
        ),
    ],
    "allocations": [
        ("round", _I, "round index"),
        ("time_s", _F, "simulated time the exchange started"),
        ("purpose", _S, "gossip or sync"),
        ("src", _I, "sender"),
        ("dst", _I, "receiver"),
        ("slot", _I, "adapter slot"),
        ("group", _I, "layer group"),
        ("precision_bits", _I, "bits per value it travelled at (0: skipped; the copy stays stale)"),
        ("bits", _I, "payload bits of this slot's group, scales included"),
        (
            "value",
            _F,
            "its value to the allocator: priority, the group's weight x this slot's share of what "
            "delivery removes of the pair's squared distance over the group's slots, net of "
            "quantization error; the others, weight x (1 - 2^(-2 precision)) shared equally among "
            "the group's slots",
        ),
        (
            "weight",
            _F,
            "the group's weight: with allocation priority, the sum of its normalised residual terms "
            "during a correction, else its copies' disagreement / tolerances.consensus (floored at "
            "1e-6 of the largest group's; 1 for every group when all are 0); the other methods, 1",
        ),
        ("budget_bits", _F, "the link's budget for the whole message; null: no budget (full)"),
        ("delivered", _B, "the message arrived by the deadline and was used (not to a silent device)"),
        (
            "staleness_rounds",
            _I,
            "rounds since this slot's group last arrived over this link (0: now; null: never)",
        ),
    ],
}


def describe() -> str:
    """The contract as Markdown (used by the docs)."""
    lines = []
    for table, cols in TABLES.items():
        lines.append(f"### `{table}`\n\n| column | type | meaning |\n|---|---|---|")
        lines += [f"| `{name}` | {dtype} | {meaning} |" for name, dtype, meaning in cols]
        lines.append("")
    return "\n".join(lines)
