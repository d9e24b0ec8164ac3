"""analysis/leave_levels_experiment.py: retained accuracy before a leave, beside retrain's."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

EVENT = 4  # the leave's round; device 2 leaves


def _round_rows(r: int, per_device: dict[int, float], network: float, stage: str = "round") -> list[dict]:
    rows = [
        {"round": r, "stage": stage, "split": "retain", "device": float(d), "accuracy": a}
        for d, a in per_device.items()
    ]
    rows += [{"round": r, "stage": stage, "split": "retain", "device": float("nan"), "accuracy": network}]
    rows += [
        {"round": r, "stage": stage, "split": "test", "device": float("nan"), "accuracy": 0.0}
    ]  # not retain
    return rows


def _run(directory: Path, name: str, rows: list[dict]) -> None:
    (directory / name).mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(directory / name / "evaluations.parquet")


def _policy_run(directory: Path, policy: str, seed: int, before: float, ends: list[float]) -> None:
    """Rounds 0..3 with the leaver (its model at 0, the network-wide row at 0: the mean must
    leave both out), devices 0 and 1 at ``before`` in rounds 2 and 3; then the deletion and
    rounds 4.. at ``ends``, network-wide."""
    rows = []
    for r in range(EVENT):
        acc = before if r >= 2 else 0.1
        rows += _round_rows(r, {0: acc, 1: acc, 2: 0.0}, network=0.0)
    rows += _round_rows(3, {0: 0.0, 1: 0.0}, network=0.0, stage="correction")  # not a round's evaluation
    rows += _round_rows(EVENT, {0: 0.2, 1: 0.2}, network=0.2, stage="after_event")
    for i, a in enumerate(ends):
        rows += _round_rows(EVENT + i, {0: a, 1: a}, network=a)
    _run(directory, f"regime_x-leave-{policy}-s{seed}", rows)


def _retrain_run(directory: Path, seed: int, replay: list[float], ends: list[float], every: int = 1) -> None:
    """Rounds 0..3 with the leaver, then a replay from round 4 and the rounds after it,
    evaluated every ``every`` rounds."""
    rows = []
    for r in range(EVENT):
        rows += _round_rows(r, {0: 0.9, 1: 0.9, 2: 0.9}, network=0.9)  # before the leave: never read
    for i, a in enumerate(replay + ends):
        if i % every == 0:
            rows += _round_rows(EVENT + i, {0: a, 1: a}, network=a)
    _run(directory, f"regime_x-leave-retrain-s{seed}", rows)


def _results(directory: Path, seeds: dict[int, int]) -> None:
    """``results.parquet`` for seeds -> retrain's correction_end_round, none and local each."""
    rows = []
    for seed, end_round in seeds.items():
        for policy, end in (("none", 9), ("local", 9), ("retrain", end_round)):
            rows.append(
                {
                    "regime": "regime_x",
                    "event": "leave",
                    "policy": policy,
                    "seed": seed,
                    "event_round": EVENT,
                    "correction_end_round": end,
                }
            )
    rows.append({"regime": "regime_x", "event": "leave", "policy": "none", "seed": 3, "event_round": EVENT})
    _run(directory, "regime_x-leave-none-s3", [])  # no retrain run for seed 3: left out
    pd.DataFrame(rows).to_parquet(directory / "results.parquet")


@pytest.fixture
def two_seeds(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    # seed 1 stands at 0.70 before the leave, seed 2 at 0.80; the replays end (rounds 6, 7)
    # at 0.85 and 0.75: before − the replay's level is −0.15 and +0.05, paired by seed
    _policy_run(d, "none", 1, before=0.70, ends=[0.3, 0.6, 0.72, 0.72])
    _policy_run(d, "none", 2, before=0.80, ends=[0.3, 0.6, 0.74, 0.74])
    _policy_run(d, "local", 1, before=0.70, ends=[0.4, 0.8, 0.9, 0.9])
    _policy_run(d, "local", 2, before=0.80, ends=[0.4, 0.8, 0.9, 0.9])
    _retrain_run(d, 1, replay=[0.2, 0.5, 0.8, 0.9], ends=[0.9, 0.95, 0.95])
    _retrain_run(d, 2, replay=[0.2, 0.5, 0.7, 0.8], ends=[0.9, 0.97, 0.97])
    _results(d, {1: 2 * EVENT - 1, 2: 2 * EVENT - 1})
    return d


def test_levels_are_averaged_and_paired_by_seed(analysis_script, two_seeds: Path) -> None:
    script = analysis_script("leave_levels_experiment")
    df = script.levels(two_seeds, rounds=2).set_index(["policy", "seed"])
    assert sorted(df.index) == [("local", 1), ("local", 2), ("none", 1), ("none", 2)]
    assert df.loc[("none", 1), "before"] == pytest.approx(0.70)
    assert df.loc[("local", 2), "before"] == pytest.approx(0.80)
    assert df.loc[("none", 1), "replay_level"] == pytest.approx(0.85)
    assert df.loc[("none", 2), "replay_level"] == pytest.approx(0.75)
    assert df.loc[("none", 1), "retrain_end"] == pytest.approx(0.95)
    assert df.loc[("none", 2), "retrain_end"] == pytest.approx(0.97)
    assert df.loc[("none", 2), "end"] == pytest.approx(0.74)

    lines = script.table(df.reset_index(), rounds=2).splitlines()
    (none,) = [line for line in lines if "| none |" in line]
    cells = [c.strip() for c in none.strip("|").split("|")]
    assert cells[3] == "2"
    assert cells[4].startswith("-0.05 [")  # 0.70 − 0.85 and 0.80 − 0.75
    assert cells[6].startswith("-0.23 [")  # 0.72 − 0.95 and 0.74 − 0.97
    assert cells[8] == "-0.02 [-0.53, +0.49]"  # 0.72 − 0.70 and 0.74 − 0.80: t(0.975, 1) · sd / √2


def test_the_replays_level_is_read_at_the_first_evaluated_round_after_it(
    analysis_script, tmp_path: Path
) -> None:
    """With an evaluation every other round the replay's end (round 7) is not evaluated:
    the window runs to round 8, as ``cosim experiments`` reads the level there."""
    script = analysis_script("leave_levels_experiment")
    d = tmp_path / "runs"
    _retrain_run(d, 1, replay=[0.2, 0.5, 0.8, 0.9], ends=[0.6, 0.95, 0.95], every=2)
    evals = pd.read_parquet(d / "regime_x-leave-retrain-s1" / "evaluations.parquet")
    assert script.after_leave(evals, EVENT, rounds=2, upto=2 * EVENT - 1) == pytest.approx((0.8 + 0.6) / 2)
    with pytest.raises(ValueError, match="the replay never finished"):
        script.after_leave(evals, EVENT, rounds=2, upto=-1)


def test_too_few_rounds_on_either_side_of_the_leave_is_an_error(analysis_script, tmp_path: Path) -> None:
    script = analysis_script("leave_levels_experiment")
    _policy_run(tmp_path, "none", 1, before=0.7, ends=[0.5])
    evals = pd.read_parquet(tmp_path / "regime_x-leave-none-s1" / "evaluations.parquet")
    with pytest.raises(ValueError, match="before the leave: 4 evaluated rounds, 5 asked"):
        script.before_leave(evals, EVENT, rounds=5)
    # one round after the leave: the end is not taken from rounds that still held the leaver
    with pytest.raises(ValueError, match="after the leave: 1 evaluated rounds, 2 asked"):
        script.after_leave(evals, EVENT, rounds=2)


def _main(script, monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["leave_levels_experiment.py", *argv])
    code = 0
    try:
        script.main()
    except SystemExit as stop:
        code = int(stop.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_command_line_filters_policies_and_refuses_bad_input(
    analysis_script, two_seeds: Path, monkeypatch, capsys
) -> None:
    script = analysis_script("leave_levels_experiment")
    code, out, _ = _main(script, monkeypatch, capsys, str(two_seeds), "--rounds", "2", "--policy", "none")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith(f"| {two_seeds} |")]
    assert len(rows) == 1 and "| none |" in rows[0]
    for argv, message in (
        (["--rounds", "0"], "--rounds 0: at least 1"),
        (["--policy", "retrain"], "--policy retrain: a reference, not a correction"),
        (["--policy", "sync"], "--policy sync: not in these directories"),
        (["--rounds", "9"], "9 asked"),
    ):
        code, _, err = _main(script, monkeypatch, capsys, str(two_seeds), "--rounds", "2", *argv)
        assert code == 2 and message in err and "Traceback" not in err
    code, _, err = _main(script, monkeypatch, capsys, str(two_seeds / "nowhere"))
    assert code == 2 and "no results.parquet in" in err
