"""cosim experiments: the plan over regimes, events, policies and seeds, and the results table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cosim.experiments import aggregate, markdown, plan_experiments, results, runs_outside
from cosim.scenario import ScenarioError
from cosim.sweep import run_sweep


def regime_dir(tmp_path: Path, tiny: dict) -> Path:
    directory = tmp_path / "regimes"
    directory.mkdir(parents=True)
    raw = {
        **tiny,
        "name": "small",
        "training": {**tiny["training"], "rounds": 5},
        "events": [{"kind": "leave", "device": 1, "round": 2}],
    }
    (directory / "small.yaml").write_text(yaml.safe_dump(raw))
    return directory


def test_the_plan_covers_every_regime_event_policy_and_seed(tmp_path: Path, tiny_scenario) -> None:
    plan = plan_experiments(regime_dir(tmp_path, tiny_scenario), seeds=(1, 2))
    assert len(plan) == 1 * 2 * 8 * 2
    federaser = next(r for r in plan if r.name == "small-leave-federaser-s1")
    assert federaser.scenario.model.adapters == "shared"
    assert {r.scenario.model.adapters for r in plan if r.overrides["policy"] != "federaser"} == {"orthogonal"}
    join = next(r for r in plan if r.name == "small-join-priority-s2")
    assert join.scenario.seed == 2 and join.scenario.data.seed == 2
    assert [e.kind for e in join.scenario.events] == ["join"] and join.scenario.events[0].round == 2
    assert join.scenario.correction.policy == "priority"
    with pytest.raises(ScenarioError, match="allowed: none, priority"):
        plan_experiments(regime_dir(tmp_path / "x", tiny_scenario), seeds=(1,), policies=("best",))
    shared = plan_experiments(
        regime_dir(tmp_path / "y", tiny_scenario), seeds=(1,), policies=("none", "retrain"), adapters="shared"
    )
    assert len(shared) == 4 and {r.scenario.model.adapters for r in shared} == {"shared"}
    assert "small-leave-retrain-shared-s1" in {r.name for r in shared}  # never an orthogonal run's name
    with pytest.raises(ScenarioError, match="allowed with shared adapters: none, retrain, federaser"):
        plan_experiments(regime_dir(tmp_path / "z", tiny_scenario), seeds=(1,), adapters="shared")


def test_overrides_apply_to_every_regime_before_the_join_is_derived(tmp_path: Path, tiny_scenario) -> None:
    late = ("events.0.round=3", "training.rounds=6")
    directory = regime_dir(tmp_path, tiny_scenario)
    plan = plan_experiments(directory, seeds=(1,), policies=("none",), overrides=late)
    assert {r.name: (r.scenario.events[0].kind, r.scenario.events[0].round) for r in plan} == {
        "small-leave-none-s1": ("leave", 3),
        "small-join-none-s1": ("join", 3),
    }
    assert {r.scenario.training.rounds for r in plan} == {6}
    with pytest.raises(ScenarioError, match=r"events\.0\.round: 9 is past the last round"):
        plan_experiments(directory, seeds=(1,), overrides=("events.0.round=9",))


def test_only_the_named_regimes_are_planned(tmp_path: Path, tiny_scenario) -> None:
    directory = regime_dir(tmp_path, tiny_scenario)
    other = {**yaml.safe_load((directory / "small.yaml").read_text()), "name": "named_otherwise"}
    (directory / "other.yaml").write_text(yaml.safe_dump(other))
    plan = plan_experiments(directory, seeds=(1,), policies=("none",), events=("leave",), only=("other",))
    assert [r.name for r in plan] == ["other-leave-none-s1"]  # the file name, not the scenario's name
    assert len(plan_experiments(directory, seeds=(1,), policies=("none",), events=("leave",))) == 2
    with pytest.raises(
        ScenarioError, match=r"--regime: smal, named_otherwise not in .*; allowed: other, small"
    ):
        plan_experiments(directory, seeds=(1,), only=("smal", "named_otherwise"))


def test_the_finished_runs_outside_the_plan_are_named(tmp_path: Path, tiny_scenario) -> None:
    plan = plan_experiments(regime_dir(tmp_path, tiny_scenario), seeds=(1,), policies=("none",))
    out = tmp_path / "runs"
    manifests = {
        "small-leave-none-s1": {"status": "complete"},  # in the plan
        "small-leave-priority-s1": {"status": "complete"},
        "other-leave-none-s2": {"status": "complete"},
        "small-leave-retrain-s1": {"status": "interrupted"},  # not finished
        "notes": None,  # no manifest at all
    }
    for name, manifest in manifests.items():
        (out / name).mkdir(parents=True)
        if manifest is not None:
            (out / name / "manifest.json").write_text(json.dumps(manifest))
    (out / "broken").mkdir()
    (out / "broken" / "manifest.json").write_text("{not json")
    (out / "listed").mkdir()
    (out / "listed" / "manifest.json").write_text("[]")
    assert runs_outside(plan, out) == ["other-leave-none-s2", "small-leave-priority-s1"]
    assert runs_outside(plan, tmp_path / "empty") == []


def test_a_regime_needs_exactly_one_leave(tmp_path: Path, tiny_scenario) -> None:
    directory = tmp_path / "bad"
    directory.mkdir()
    (directory / "r.yaml").write_text(yaml.safe_dump({**tiny_scenario, "name": "r"}))
    with pytest.raises(ScenarioError, match="exactly one leave"):
        plan_experiments(directory, seeds=(1,))


def test_a_directory_without_regimes_or_a_file_given_for_it_is_named(tmp_path: Path, tiny_scenario) -> None:
    with pytest.raises(ScenarioError, match=r"nowhere: no such directory; DIR is a directory of regime"):
        plan_experiments(tmp_path / "nowhere", seeds=(1,))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScenarioError, match=r"empty: no regime scenarios \(\*\.yaml\) found"):
        plan_experiments(tmp_path / "empty", seeds=(1,))
    single = tmp_path / "r.yaml"
    single.write_text(yaml.safe_dump({**tiny_scenario, "name": "r"}))
    with pytest.raises(ScenarioError, match=r"r\.yaml: is a file; DIR is a directory of regime scenarios"):
        plan_experiments(single, seeds=(1,))


def test_results_compare_each_run_with_its_retrain_reference(tmp_path: Path, tiny_scenario) -> None:
    plan = plan_experiments(
        regime_dir(tmp_path, tiny_scenario),
        seeds=(1, 2),
        policies=("none", "retrain", "federaser"),
        events=("leave",),
    )
    out = tmp_path / "runs"
    run_sweep(plan, out, jobs=1)
    table = results(plan, out)
    assert len(table) == 6
    federaser = table[table["policy"] == "federaser"]
    assert federaser["adapter_distance"].isna().all()  # another projection: not comparable
    # B of 2 layers x (q, k, v, o: 32 outputs; gate, up: 64; down: 32) at rank 4, float32, per
    # stored round; interval 2 stores trained round 0 (before the leave at round 2), then 2 and 4.
    per_round = 2 * (4 * 32 + 2 * 64 + 32) * 4 * 4
    assert (federaser["history_bytes_per_device"] == 3 * per_round).all()
    assert (table.loc[table["policy"] != "federaser", "history_bytes_per_device"] == 0).all()
    table = table[table["policy"] != "federaser"]
    ref = table[table["policy"] == "retrain"].set_index("seed")
    none = table[table["policy"] == "none"].set_index("seed")
    for seed in (1, 2):
        assert ref.loc[seed, "adapter_distance"] == 0.0  # retrain against itself
        assert ref.loc[seed, "retain_acc_vs_retrain"] == 0.0
        assert none.loc[seed, "retain_acc_vs_retrain"] == pytest.approx(
            none.loc[seed, "retain_acc"] - ref.loc[seed, "retain_acc"]
        )
        assert none.loc[seed, "adapter_distance"] > 0
        assert ref.loc[seed, "correction_rounds"] == 2  # the two rounds before the leave, replayed
        # Catching up: with retrain's retained accuracy at the end of its replay, by hand.
        ref_evals = pd.read_parquet(out / f"small-leave-retrain-s{seed}" / "evaluations.parquet")
        end_round = int(ref.loc[seed, "correction_end_round"])
        level = ref_evals[
            ref_evals["device"].isna()
            & (ref_evals["stage"] == "round")
            & (ref_evals["round"] == end_round)
            & (ref_evals["split"] == "retain")
        ]["accuracy"].iloc[-1]
        evals = pd.read_parquet(out / f"small-leave-none-s{seed}" / "evaluations.parquet")
        means = evals[evals["device"].isna() & (evals["split"] == "retain")]
        after = means[(means["stage"] == "after_event") & (means["round"] == 2)]["accuracy"].iloc[0]
        rounds = means[(means["stage"] == "round") & (means["round"] >= 2)].sort_values("round")
        hit = rounds[rounds["accuracy"] >= level - 0.01]
        if after >= level - 0.01:
            assert none.loc[seed, "caught_up_s"] == 0.0
        elif hit.empty:
            assert np.isnan(none.loc[seed, "caught_up_s"])
        else:
            assert none.loc[seed, "caught_up_s"] == pytest.approx(
                hit["time_s"].iloc[0] - none.loc[seed, "event_s"]
            )
        assert ref.loc[seed, "caught_up_s"] <= ref.loc[seed, "correction_seconds"] + 1e-9
        assert none.loc[seed, "correction_rounds"] == 0
        assert 0.0 <= none.loc[seed, "mia_auc"] <= 1.0
    # Without retrain in the plan, the references already in the directory still count.
    alone = results([r for r in plan if r.overrides["policy"] == "none"], out).set_index("seed")
    assert len(alone) == 2
    for column in ("retain_acc_vs_retrain", "caught_up_s", "adapter_distance"):
        pd.testing.assert_series_equal(alone[column], none[column], check_names=False)
    summary = aggregate(table)
    row = summary[summary["policy"] == "none"].iloc[0]
    assert row["seeds"] == 2
    assert row["retain_acc_mean"] == pytest.approx(none["retain_acc"].mean())
    assert row["retain_acc_std"] == pytest.approx(np.std(none["retain_acc"], ddof=1))
    assert isinstance(summary, pd.DataFrame)
    text = markdown(summary).splitlines()
    assert len(text) == 2 + 2  # header, rule, one row per policy
    assert (
        text[2].startswith("| small | leave | none | ")
        and f"{row['retain_acc_vs_retrain_mean']:.2f}" in text[2]
    )
    assert text[2].split(" | ")[3].startswith(f"{row['retain_acc_early_mean']:.2f}")
    early = load_evaluations(tmp_path / "runs" / "small-leave-none-s1")
    assert none.loc[1, "retain_acc_early"] == early.loc[(2 + 2, "retain"), "accuracy"]


def load_evaluations(run_dir: Path) -> pd.DataFrame:
    ev = pd.read_parquet(run_dir / "evaluations.parquet")
    means = ev[ev["device"].isna() & (ev["stage"] == "round")]
    return means.set_index(["round", "split"])


def test_time_to_target_counts_from_the_event_to_the_end_of_the_first_round_that_reaches_it() -> None:
    from cosim.experiments import _to_target

    timeline = pd.DataFrame(
        [
            (1, "round", 10.0, "retain", 0.90),  # before the event (ends at the event's time)
            (2, "after_event", 10.0, "retain", 0.50),
            (2, "round", 12.0, "retain", 0.70),
            (3, "round", 15.0, "retain", 0.86),
            (4, "round", 17.0, "retain", 0.95),
        ],
        columns=["round", "stage", "time_s", "split", "accuracy"],
    )
    transfers = pd.DataFrame(
        {"round": [1, 2, 2, 3, 4], "time_s": [8, 10, 10, 12, 15], "delivered_bits": [1, 2, 3, 4, 5]}
    )
    fig = {"timeline": timeline, "transfers": transfers, "event_round": 2, "event_s": 10.0}
    assert _to_target(fig, "retain", 0.86, 0.01) == (5.0, 2 + 3 + 4)  # round 3 ends at 15 s
    assert _to_target(fig, "retain", 0.50, 0.01) == (0.0, 0.0)  # right after the event
    assert all(np.isnan(_to_target(fig, "retain", 0.99, 0.01)))


def test_the_level_at_an_unevaluated_round_is_the_next_evaluation() -> None:
    from cosim.experiments import _level_at

    timeline = pd.DataFrame(
        {
            "split": ["retain"] * 4 + ["test"],
            "stage": ["after_event", "round", "round", "round", "round"],
            "round": [2, 2, 4, 6, 4],
            "accuracy": [0.1, 0.5, 0.7, 0.9, 0.3],
        }
    )
    fig = {"timeline": timeline}  # evaluated every 2nd round
    assert _level_at(fig, "retain", 4) == 0.7
    assert _level_at(fig, "retain", 3) == 0.7  # not evaluated: the next evaluation
    assert _level_at(fig, "test", 2) == 0.3
    assert np.isnan(_level_at(fig, "retain", 7))
    assert np.isnan(_level_at(fig, "retain", -1))  # no end of the replay recorded


def test_relative_paths_in_a_regime_start_at_its_directory(
    tmp_path: Path, tiny_scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = regime_dir(tmp_path, tiny_scenario)
    raw = yaml.safe_load((directory / "small.yaml").read_text())
    raw["data"] = {"task": "file", "file": {"path": "data/facts.jsonl"}}
    (directory / "small.yaml").write_text(yaml.safe_dump(raw))
    (directory / "data").mkdir()
    (directory / "data" / "facts.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    monkeypatch.chdir(tmp_path)  # not the regime's directory
    plan = plan_experiments(directory, seeds=(1,), policies=("none",), events=("leave",))
    assert plan[0].scenario.data.file.path == str((directory / "data" / "facts.jsonl").resolve())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [x\n", "a.yaml: malformed YAML at line 2, column 1"),
        ("", "a.yaml: the file is empty; a scenario needs at least 'name'"),
        ("- 1\n", "a.yaml: the top level must be a mapping of sections, got list"),
    ],
    ids=["malformed", "empty", "list"],
)
def test_a_bad_regime_file_is_a_scenario_error_with_or_without_overrides(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "a.yaml").write_text(text)
    for overrides in [(), ("training.rounds=3",)]:
        with pytest.raises(ScenarioError, match=re.escape(message)):
            plan_experiments(tmp_path, (1,), ("none",), overrides=overrides)


def test_an_invalid_regime_names_the_overrides_that_made_it_so(tmp_path: Path, tiny_scenario) -> None:
    directory = regime_dir(tmp_path, tiny_scenario)
    with pytest.raises(ScenarioError) as err:
        plan_experiments(directory, seeds=(1,), overrides=("training.rounds=abc",))
    assert str(err.value).startswith(f"{next(directory.glob('*.yaml'))} with --set training.rounds=abc: ")
    assert "training.rounds: Input should be a valid integer" in str(err.value)


def test_unknown_policies_and_adapter_kinds_name_their_option(tmp_path: Path, tiny_scenario) -> None:
    directory = regime_dir(tmp_path, tiny_scenario)
    with pytest.raises(ScenarioError, match=r"^--policy: 'prioritty' is not a policy; allowed: none, "):
        plan_experiments(directory, seeds=(1,), policies=("prioritty",))
    with pytest.raises(ScenarioError, match=r"^--policy: 'a', 'b' are not policies; allowed: none, "):
        plan_experiments(directory, seeds=(1,), policies=("a", "priority", "b"))
    with pytest.raises(
        ScenarioError, match=r"^--adapters: 'weird' is not an adapter kind; allowed: orthogonal, shared$"
    ):
        plan_experiments(directory, seeds=(1,), adapters="weird")
