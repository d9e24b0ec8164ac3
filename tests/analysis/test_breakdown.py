"""cosim.analysis.load and cosim.analysis.breakdown: on a tiny run with a leave and a join,
and on small hand-built traces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosim.analysis import (
    PHASES,
    Run,
    accuracy_timeline,
    communication_totals,
    event_recovery,
    latency_breakdown,
    load_run,
    load_runs,
    round_breakdown,
)

EVENTS = "events=[{kind: leave, device: 1, round: 1}, {kind: join, round: 2}]"


@pytest.fixture(scope="module")
def tiny_run(run_tiny) -> Run:
    """The tiny scenario (4 devices, 4 rounds) with device 1 leaving at round 1 and device 4
    joining at round 2."""
    return load_run(run_tiny(EVENTS).out_dir)


# --------------------------------------------------------------------------- load


def test_load_run_reads_manifest_and_tables(tiny_run: Run) -> None:
    assert tiny_run.complete
    assert tiny_run.manifest["scenario"]["name"] == "tiny"
    assert len(tiny_run.rounds) == tiny_run.manifest["tables"]["rounds"]
    assert set(tiny_run.events["kind"]) >= {"leave", "join", "pull"}
    assert tiny_run.mac_efficiency == 0.7
    assert tiny_run.access_delay_s == 1e-3


def test_load_run_rejects_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not a run directory \(no manifest.json\)"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_run(tmp_path / "nowhere")


def test_load_run_rejects_an_incomplete_run_unless_allowed(tiny_run: Run, tmp_path: Path) -> None:
    copy = tmp_path / "interrupted"
    shutil.copytree(tiny_run.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    with pytest.raises(ValueError, match=r"interrupted.*not complete.*allow_incomplete=True"):
        load_run(copy)
    assert not load_run(copy, allow_incomplete=True).complete


def test_load_runs_stacks_a_table_with_run_and_seed(tiny_run: Run, tmp_path: Path) -> None:
    other = tmp_path / "second"
    shutil.copytree(tiny_run.path, other)
    stacked = load_runs([tiny_run.path, other], "rounds")
    assert list(stacked.columns[:2]) == ["run", "seed"]
    assert len(stacked) == 2 * len(tiny_run.rounds)
    assert set(stacked["run"]) == {tiny_run.path.name, "second"}
    assert set(stacked["seed"]) == {3}


# --------------------------------------------------------------------------- breakdown on a run


def test_phases_add_up_to_the_round_for_every_device(tiny_run: Run) -> None:
    per_device = latency_breakdown(tiny_run)
    rounds = tiny_run.rounds
    assert len(per_device) == len(rounds)
    expected = rounds["round_end_s"] - rounds["time_s"]
    np.testing.assert_allclose(per_device[list(PHASES)].sum(axis=1), expected, rtol=0, atol=1e-9)
    assert (per_device[list(PHASES)] >= -1e-12).all().all()
    # Nothing is cut off except the newcomer's gossip, which the engine starts before its pull arrived.
    newcomer = int(tiny_run.events.loc[tiny_run.events["kind"] == "join", "device"].iloc[0])
    others = per_device[per_device["device"] != newcomer]
    assert others["clipped_s"].max() < 1e-9


def test_round_totals_match_the_raw_tables(tiny_run: Run) -> None:
    per_device = latency_breakdown(tiny_run)
    merged = per_device.merge(tiny_run.rounds, on=["round", "device"], suffixes=("", "_raw"))
    np.testing.assert_allclose(merged["compute_s"], merged["compute_s_raw"], rtol=0, atol=1e-12)

    mean = round_breakdown(tiny_run, "mean")
    critical = round_breakdown(tiny_run, "critical")
    for table in (mean, critical):
        np.testing.assert_allclose(table[list(PHASES)].sum(axis=1), table["duration_s"], rtol=0, atol=1e-9)
    compute_mean = tiny_run.rounds.groupby("round")["compute_s"].mean()
    np.testing.assert_allclose(mean.set_index("round")["compute_s"], compute_mean, rtol=1e-12)
    # The critical device is the one with the least waiting.
    least = per_device.groupby("round")["waiting_s"].min()
    np.testing.assert_allclose(critical.set_index("round")["waiting_s"], least, atol=0)

    comm = communication_totals(tiny_run)
    gossip = comm[comm["purpose"] == "gossip"]
    sent = gossip.groupby(["round", "device"])["bits"].sum()
    raw = tiny_run.rounds.set_index(["round", "device"])["bits_sent"]
    pd.testing.assert_series_equal(sent.sort_index(), raw.sort_index(), check_names=False, check_dtype=False)
    assert comm["bits"].sum() == tiny_run.transfers["delivered_bits"].sum()
    delivered = tiny_run.transfers.loc[tiny_run.transfers["delivered"], "bits"].sum()
    assert comm["bits_delivered"].sum() == delivered
    assert ((comm["delivered_ratio"] >= 0) & (comm["delivered_ratio"] <= 1)).all()


def test_breakdown_of_one_round_by_hand(tiny_run: Run) -> None:
    rounds, transfers = tiny_run.rounds, tiny_run.transfers
    row = rounds[(rounds["round"] == 0) & (rounds["device"] == 0)].iloc[0]
    sent = transfers[(transfers["round"] == 0) & (transfers["src"] == 0) & (transfers["purpose"] == "gossip")]
    assert len(sent) > 0 and row["tx_end_s"] <= row["round_end_s"]
    ideal = (sent["bits"] / (sent["rate_bps"] * 0.7)).sum()
    airtime = (sent["finish_s"] - sent["start_s"]).sum()
    duration = row["round_end_s"] - row["time_s"]
    expected = {
        "pull_s": 0.0,
        "compute_s": row["compute_s"],
        "access_s": 1e-3 * len(sent),
        "transmission_s": ideal,
        "retransmission_s": airtime - 1e-3 * len(sent) - ideal,
        "waiting_s": duration - row["compute_s"] - airtime,
    }
    got = latency_breakdown(tiny_run).set_index(["round", "device"]).loc[(0, 0)]
    for phase, value in expected.items():
        assert got[phase] == pytest.approx(value, abs=1e-9), phase

    # The newcomer's pull: from the round start until its copies arrived.
    join = tiny_run.events[tiny_run.events["kind"] == "join"].iloc[0]
    pull = transfers[transfers["purpose"] == "pull"].iloc[0]
    got = latency_breakdown(tiny_run).set_index(["round", "device"]).loc[(join["round"], join["device"])]
    assert pull["delivered"]
    assert got["pull_s"] == pytest.approx(pull["finish_s"] - join["time_s"], abs=1e-12)


def _synthetic_run(
    rounds: list[dict], transfers: list[dict], slot_s: float = 4.0, events: pd.DataFrame | None = None
) -> Run:
    manifest = {
        "name": "synthetic",
        "seed": 0,
        "status": "complete",
        "scenario": {
            "network": {
                "backend": "builtin",
                "slot_s": slot_s,
                "radio": {"mac_efficiency": 0.5, "access_delay_s": 0.01},
            }
        },
    }
    empty = pd.DataFrame()
    events = empty if events is None else events
    return Run(Path("synthetic"), manifest, pd.DataFrame(rounds), pd.DataFrame(transfers), events, empty)


def test_breakdown_of_a_hand_built_round() -> None:
    # mac_efficiency 0.5, access 0.01 s; the round runs 10 s -> 14 s.
    # Device 0: computes 1 s, then one message of 8 Mbit at 8 Mbit/s PHY with 20 % loss:
    #   ideal 8e6 / 4e6 = 2 s, goodput 3.2 Mbit/s -> 2.5 s of data; done at 13.51, waits 0.49 s.
    # Device 1 (newcomer): pull arrives at 10.5, computes 0.5 s; 4 Mbit at 8 Mbit/s lossless
    #   (11.00 -> 12.01), then 8 Mbit at 4 Mbit/s with 50 % loss (12.01 -> 20.02), cut at 14:
    #   access 0.01, data 12.02 -> 14 = 1.98 s, half of it retransmission.
    t0, end = 10.0, 14.0
    rounds = [
        {"round": 0, "device": 0, "time_s": t0, "round_end_s": end, "compute_s": 1.0},
        {"round": 0, "device": 1, "time_s": t0, "round_end_s": end, "compute_s": 0.5},
    ]

    def message(purpose, src, dst, bits, rate, loss, start, finish, delivered=True):
        return {
            "round": 0, "time_s": t0, "purpose": purpose, "src": src, "dst": dst, "bits": bits,
            "rate_bps": rate, "goodput_bps": rate * 0.5 * (1 - loss), "loss": loss,
            "start_s": start, "finish_s": finish, "delivered": delivered,
        }  # fmt: skip

    transfers = [
        message("pull", 0, 1, 1_000_000, 8e6, 0.0, 10.0, 10.5),
        message("gossip", 0, 1, 8_000_000, 8e6, 0.2, 11.0, 13.51),
        message("gossip", 1, 0, 4_000_000, 8e6, 0.0, 11.0, 12.01),
        message("gossip", 1, 0, 8_000_000, 4e6, 0.5, 12.01, 20.02, delivered=False),
    ]
    got = latency_breakdown(_synthetic_run(rounds, transfers)).set_index("device")
    expected = pd.DataFrame(
        {
            "pull_s": [0.0, 0.5],
            "compute_s": [1.0, 0.5],
            "medium_s": [0.0, 0.0],
            "access_s": [0.01, 0.02],
            "transmission_s": [2.0, 1.0 + 0.99],
            "retransmission_s": [0.5, 0.99],
            "waiting_s": [0.49, 0.0],
            "clipped_s": [0.0, 20.02 - 14.0],
        },
        index=pd.Index([0, 1], name="device"),
    )
    pd.testing.assert_frame_equal(got[expected.columns], expected, rtol=0, atol=1e-9)
    crit = round_breakdown(_synthetic_run(rounds, transfers), "critical")
    assert crit["device"].tolist() == [1]
    assert crit["devices"].tolist() == [2]


def _message(src, dst, bits, rate, loss, start, finish, *, purpose="gossip", delivered=True) -> dict:
    return {
        "round": 0, "time_s": 10.0, "purpose": purpose, "src": src, "dst": dst, "bits": bits,
        "rate_bps": rate, "goodput_bps": rate * 0.5 * (1 - loss), "loss": loss,
        "start_s": start, "finish_s": finish, "delivered": delivered,
    }  # fmt: skip


def test_breakdown_of_a_shared_medium_a_failed_pull_and_packet_fidelity() -> None:
    # mac_efficiency 0.5, access 0.01 s, slot_s 3 s; the round runs 10 s -> 14 s.
    # Device 0: computes 1 s, sends 8 Mbit at 8 Mbit/s lossless (2 s of data) 11.0 -> 13.01.
    # Device 1: computes 0.5 s (ready at 10.5) but the medium is held until 13.7: then 1 Mbit
    #   (0.25 s) -> 13.96.  It ends last, though it spent least time on the air.
    # Device 2 (newcomer): its pull (from 10.0) is aborted (inf): it waits for the deadline
    #   10 + 3 = 13; computes 0.5 s; its 8 Mbit at 20 % loss starts at 13.5 and is aborted at
    #   the round's end: access 0.01, 0.49 s of data split 0.8 : 0.2.
    # Device 3 (packet fidelity): computes 1 s; 4 Mbit lossless (1 s of data) takes 11.0 ->
    #   12.51 while a second message, 1 Mbit (0.25 s), runs 11.2 -> 12.0 beside it: one burst
    #   of 1.51 s holding 0.02 s of access and 1.25 s of airtime; 0.24 s left is the medium,
    #   and the 0.8 s the second message shares with the first is counted once.
    rounds = [
        {"round": 0, "device": d, "time_s": 10.0, "round_end_s": 14.0, "compute_s": c, "tx_start_s": 10.0 + c}
        for d, c in ((0, 1.0), (1, 0.5), (3, 1.0))
    ]
    rounds.append(
        {"round": 0, "device": 2, "time_s": 10.0, "round_end_s": 14.0, "compute_s": 0.5, "tx_start_s": 13.5}
    )
    transfers = [
        _message(0, 2, 1_000_000, 8e6, 0.0, 10.0, np.inf, purpose="pull", delivered=False),
        _message(0, 1, 8_000_000, 8e6, 0.0, 11.0, 13.01),
        _message(1, 0, 1_000_000, 8e6, 0.0, 13.7, 13.96),
        _message(2, 0, 8_000_000, 8e6, 0.2, 13.5, np.inf, delivered=False),
        _message(3, 0, 4_000_000, 8e6, 0.0, 11.0, 12.51),
        _message(3, 1, 1_000_000, 8e6, 0.0, 11.2, 12.0),
    ]
    run = _synthetic_run(rounds, transfers, slot_s=3.0)
    got = latency_breakdown(run).set_index("device").sort_index()
    expected = pd.DataFrame(
        {
            "pull_s": [0.0, 0.0, 3.0, 0.0],
            "compute_s": [1.0, 0.5, 0.5, 1.0],
            "medium_s": [0.0, 3.2, 0.0, 0.24],
            "access_s": [0.01, 0.01, 0.01, 0.02],
            "transmission_s": [2.0, 0.25, 0.49 * 0.8, 1.25],
            "retransmission_s": [0.0, 0.0, 0.49 * 0.2, 0.0],
            "waiting_s": [0.99, 0.04, 0.0, 1.49],
            "clipped_s": [0.0, 0.0, 0.0, 0.8],
        },
        index=pd.Index([0, 1, 2, 3], name="device"),
    )
    pd.testing.assert_frame_equal(got[expected.columns], expected, rtol=0, atol=1e-9)
    # The critical path: the devices whose last message ended at the round's end (2), not
    # the one that sat idle least while messages queued (0).
    crit = round_breakdown(run, "critical")
    assert crit["device"].tolist() == [2]
    without_newcomer = _synthetic_run(rounds[:3], transfers[1:3] + transfers[4:], slot_s=3.0)
    assert round_breakdown(without_newcomer, "critical")["device"].tolist() == [1]


def test_a_failed_pull_is_waited_for_until_the_deadline_the_engine_set() -> None:
    # Under ns-3's shared medium a pull asked for at 10.0 may go on the air later (10.4);
    # its deadline stays 10.0 + slot_s = 13.0, as the pull event records.
    rounds = [
        {"round": 0, "device": 2, "time_s": 10.0, "round_end_s": 14.0, "compute_s": 0.5, "tx_start_s": 13.5}
    ]
    transfers = [_message(0, 2, 1_000_000, 8e6, 0.0, 10.4, np.inf, purpose="pull", delivered=False)]
    detail = '{"from": 0, "delivered": false, "deadline_s": 13.0}'
    events = pd.DataFrame([{"round": 0, "time_s": 10.0, "kind": "pull", "device": 2, "detail": detail}])
    got = latency_breakdown(_synthetic_run(rounds, transfers, slot_s=3.0, events=events)).iloc[0]
    assert got["pull_s"] == pytest.approx(3.0) and got["compute_s"] == pytest.approx(0.5)
    # Without the event (an older trace) the transfer's own start is all there is: 10.4 + 3.
    older = latency_breakdown(_synthetic_run(rounds, transfers, slot_s=3.0)).iloc[0]
    assert older["pull_s"] == pytest.approx(3.4) and older["compute_s"] == pytest.approx(0.1)


# --------------------------------------------------------------------------- events and accuracy


def _evaluations() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A leave at round 2 (t = 20 s) and a join at round 3 (t = 40 s); round r's exchange ends
    at t = 10 (r + 1)."""
    rows = []

    def add(r, t, stage, split, acc, device=None):
        rows.append(
            {"round": r, "time_s": t, "stage": stage, "split": split, "device": device, "accuracy": acc}
        )

    retain = {0: 0.5, 1: 0.9, 2: 0.8, 3: 0.87, 4: 0.89, 5: 0.85}
    newcomer = {0: 0.0, 1: 0.0, 2: 0.1, 3: 0.5, 4: 0.95, 5: 1.0}
    add(0, 0.0, "initial", "retain", 0.1)
    add(2, 20.0, "before_event", "retain", 0.9)
    add(2, 20.0, "after_event", "retain", 0.7)
    add(3, 40.0, "before_event", "newcomer", 0.1)
    add(3, 40.0, "after_event", "newcomer", 0.12)
    for r in range(6):
        add(r, 10.0 * (r + 1), "round", "retain", retain[r])
        add(r, 10.0 * (r + 1), "round", "newcomer", newcomer[r])
        add(r, 10.0 * (r + 1), "round", "retain", 1.0, device=0)  # per device: must be ignored
        add(r, 10.0 * (r + 1), "round", "newcomer", 1.0, device=0)
    evaluations = pd.DataFrame(rows).astype({"device": "Int64"})
    events = pd.DataFrame(
        [
            {"round": 2, "time_s": 20.0, "kind": "leave", "device": 1},
            {"round": 2, "time_s": 20.0, "kind": "tombstone", "device": 0},
            {"round": 3, "time_s": 40.0, "kind": "join", "device": 4},
            {"round": 3, "time_s": 40.0, "kind": "pull", "device": 4},
        ]
    )
    return evaluations, events


def test_event_recovery_on_hand_built_evaluations() -> None:
    evaluations, events = _evaluations()
    got = event_recovery(evaluations, events, tolerance=0.02, join_target=0.9)
    assert got["kind"].tolist() == ["leave", "join"]
    leave, join = got.iloc[0], got.iloc[1]
    # Leave: baseline 0.9, threshold 0.88; round 2 -> 0.8, round 3 -> 0.87, round 4 -> 0.89.
    assert leave["split"] == "retain"
    assert leave["baseline"] == 0.9 and leave["after_event"] == 0.7
    assert leave["threshold"] == pytest.approx(0.88)
    assert leave["recovered"] and leave["recovery_round"] == 4
    assert leave["recovery_s"] == pytest.approx(50.0 - 20.0) and leave["recovery_rounds"] == 3
    # Join: newcomer 0.5 after round 3, 0.95 after round 4.
    assert join["split"] == "newcomer" and join["threshold"] == 0.9
    assert join["recovered"] and join["recovery_round"] == 4
    assert join["recovery_s"] == pytest.approx(50.0 - 40.0) and join["recovery_rounds"] == 2


def test_event_recovery_to_an_absolute_leave_target() -> None:
    evaluations, events = _evaluations()
    got = event_recovery(evaluations, events, leave_target=0.85, join_target=0.4)
    leave, join = got.iloc[0], got.iloc[1]
    # Retain 0.8 after round 2, 0.87 after round 3: the baseline (0.9) plays no part.
    assert leave["threshold"] == 0.85 and leave["recovery_round"] == 3
    assert join["threshold"] == 0.4 and join["recovery_round"] == 3  # 0.5 after round 3


def test_event_recovery_that_never_happens_is_nan() -> None:
    evaluations, events = _evaluations()
    got = event_recovery(evaluations, events, tolerance=0.0, join_target=1.01)
    assert not got["recovered"].any()
    assert got["recovery_s"].isna().all() and got["recovery_rounds"].isna().all()


def test_event_recovery_needs_events_with_a_bare_table() -> None:
    evaluations, _ = _evaluations()
    with pytest.raises(ValueError, match="pass events"):
        event_recovery(evaluations)


def test_event_recovery_on_the_tiny_run(tiny_run: Run) -> None:
    got = event_recovery(tiny_run)
    assert got["kind"].tolist() == ["leave", "join"]
    assert got["split"].tolist() == ["retain", "newcomer"]
    assert got["round"].tolist() == [1, 2]
    recovered = got[got["recovered"]]
    assert (recovered["recovery_rounds"] >= 1).all() and (recovered["recovery_s"] > 0).all()
    transfers = tiny_run.transfers
    for _, row in recovered.iterrows():
        window = transfers[
            (transfers["round"] >= row["round"]) & (transfers["round"] <= row["recovery_round"])
        ]
        assert row["recovery_bits"] == float(window["delivered_bits"].sum()) > 0
    assert got[~got["recovered"]]["recovery_bits"].isna().all()


def test_accuracy_timeline_is_the_network_wide_rows(tiny_run: Run) -> None:
    timeline = accuracy_timeline(tiny_run)
    assert list(timeline.columns) == ["time_s", "round", "stage", "split", "accuracy", "loss"]
    means = tiny_run.evaluations[tiny_run.evaluations["device"].isna()]
    assert len(timeline) == len(means)
    assert timeline["time_s"].is_monotonic_increasing
    assert set(timeline["stage"]) == {"initial", "round", "before_event", "after_event"}


def test_group_bits_add_up_to_the_payload_of_every_round(run_tiny) -> None:
    from cosim.analysis import load_run
    from cosim.analysis.breakdown import group_bits
    from cosim.engine.simulation import HEADER_BITS

    tiny = run_tiny("events=[{kind: leave, device: 1, round: 1}, {kind: join, round: 2}]")
    run = load_run(tiny.out_dir)
    per_group = group_bits(run)
    assert sorted(per_group["group"].unique()) == [0, 1]
    payload = (run.transfers["bits"] - HEADER_BITS).groupby(run.transfers["round"]).sum()
    assert per_group.groupby("round")["bits"].sum().to_dict() == payload.to_dict()
    learner_bits = tiny.sim.learner.slot_bits()
    one = run.transfers.iloc[0]
    for g, bits in learner_bits.items():
        row = per_group[(per_group["round"] == one["round"]) & (per_group["group"] == g)]
        slots = run.transfers[run.transfers["round"] == one["round"]]["slots"].sum()
        assert int(row["bits"].iloc[0]) == slots * bits


def test_group_bits_of_a_budgeted_run_follow_its_allocations(run_tiny) -> None:
    from cosim.analysis import load_run
    from cosim.analysis.breakdown import group_bits
    from cosim.engine.simulation import HEADER_BITS

    tiny = run_tiny(
        "events=[{kind: leave, device: 1, round: 1}, {kind: join, round: 2}]",
        "allocation.method=priority",
        "allocation.budget_fraction=0.002",
    )
    run = load_run(tiny.out_dir)
    per_group = group_bits(run)
    # Every message's payload is in some group, at the precision it travelled at.
    payload = (run.transfers["bits"] - HEADER_BITS).groupby(run.transfers["round"]).sum()
    assert per_group.groupby("round")["bits"].sum().to_dict() == payload.to_dict()
    delivered = run.transfers[run.transfers["delivered"]]
    got = per_group.groupby("round")["bits_delivered"].sum()
    want = (delivered["bits"] - HEADER_BITS).groupby(delivered["round"]).sum()
    assert got[got > 0].to_dict() == want.to_dict()
    # Under this budget, less than every slot copy at 32 bits (what the pull-only count gives).
    full = run.transfers["slots"].sum() * sum(tiny.sim.learner.slot_bits().values())
    assert per_group["bits"].sum() < full


def test_group_bits_sent_count_what_went_on_the_air_when_the_deadline_cuts_messages(run_tiny) -> None:
    from cosim.analysis import load_run
    from cosim.analysis.breakdown import group_bits
    from cosim.engine.simulation import HEADER_BITS

    for budget in ((), ("allocation.method=priority", "allocation.budget_fraction=0.5")):
        tiny = run_tiny("training.rounds=3", "network.slot_s=0.004", *budget)
        run = load_run(tiny.out_dir)
        t = run.transfers
        assert (t["delivered_bits"] < t["bits"]).any(), "the short slot cuts messages off"
        per_group = group_bits(run)
        # Brute force, message by message: its payload times the share of it that got out.
        sent = ((t["bits"] - HEADER_BITS) * t["delivered_bits"] / t["bits"]).groupby(t["round"]).sum()
        got = per_group.groupby("round")["bits_sent"].sum()
        np.testing.assert_allclose(got.loc[sent.index], sent, rtol=1e-9)
        assert per_group["bits_sent"].sum() < per_group["bits"].sum()
        assert (per_group["bits_delivered"] <= per_group["bits_sent"] + 1e-6).all()


def test_a_newcomer_waiting_for_its_pull_in_a_correction_round_is_in_pull_s(run_tiny) -> None:
    # Extra exchanges from the join's round on; the newcomer sends once its copies are in.
    eager = "correction.tolerances={learn: 1.0e-9, drift: 1.0e-12, consensus: 1.0e-12, gamma_min: 0.0}"
    run = load_run(run_tiny("events=[{kind: join, round: 2}]", "correction.policy=sync", eager).out_dir)
    table = latency_breakdown(run).set_index(["round", "device"])
    np.testing.assert_allclose(table[list(PHASES)].sum(axis=1), table["duration_s"], rtol=0, atol=1e-9)
    rounds = run.rounds.set_index(["round", "device"])
    (pull,) = run.transfers[run.transfers["purpose"] == "pull"].itertuples()
    row, got = rounds.loc[(2, 4)], table.loc[(2, 4)]
    waited = pull.finish_s - row["time_s"]
    assert 0 < waited < row["sync_s"]
    assert got["pull_s"] == pytest.approx(waited, abs=1e-12)
    assert got["correction_s"] == pytest.approx(row["sync_s"] - waited, abs=1e-12)
    # Everyone else's correction phase is the whole of the extra exchanges.
    for d in (0, 1, 2, 3):
        assert table.loc[(2, d), "pull_s"] == 0
        assert table.loc[(2, d), "correction_s"] == pytest.approx(rounds.loc[(2, d), "sync_s"], abs=1e-12)


def test_a_correction_round_splits_into_the_correction_and_the_regular_steps(run_tiny) -> None:
    # Local correction after the leave at round 1: the three stayers take extra steps, then
    # the corrected slots travel, then every device takes its regular steps.
    # (Tolerances no term meets, so that it acts.)
    correction = (
        "correction={policy: local, tolerances: {mode: absolute, learn: 1.0e-12, drift: 1.0e-12, "
        "consensus: 1.0e-12}}"
    )
    run = load_run(run_tiny(correction, "events=[{kind: leave, device: 1, round: 1}]").out_dir)
    decision = json.loads(run.events[run.events["kind"] == "correction"].iloc[0]["detail"])
    extra, trainees = decision["local_steps"], decision["local_devices"]
    assert extra > 0 and trainees == [0, 2, 3]
    table = latency_breakdown(run).set_index(["round", "device"])
    np.testing.assert_allclose(table[list(PHASES)].sum(axis=1), table["duration_s"], rtol=0, atol=1e-9)
    rounds = run.rounds.set_index(["round", "device"])
    for device in trainees:
        row, got = rounds.loc[(1, device)], table.loc[(1, device)]
        assert row["sync_s"] > 0 and got["correction_s"] == pytest.approx(row["sync_s"], abs=1e-12)
        # Compute time is proportional to the steps: the regular ones are steps - extra of them.
        regular = row["compute_s"] * (row["steps"] - extra) / row["steps"]
        assert got["compute_s"] == pytest.approx(regular, rel=1e-9)
        assert row["time_s"] + got["correction_s"] + got["compute_s"] == pytest.approx(
            row["tx_start_s"], abs=1e-12
        )
    # Every round's correction phase is its sync_s (the correction goes on: no term can meet
    # its tolerance), and the round before the leave has none.
    np.testing.assert_allclose(table["correction_s"], rounds.loc[table.index, "sync_s"], rtol=0, atol=1e-12)
    assert (table.loc[0, "correction_s"] == 0).all()
