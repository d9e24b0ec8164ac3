"""analysis/mia_imprint_experiment.py: the attack's AUC and its controls, and the tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REGIMES = Path(__file__).resolve().parents[2] / "scenarios" / "regimes"

# Losses (negative log-probabilities) of every candidate answer, averaged over devices:
# two forget facts and two held-out facts, three candidate answers.
FORGET = np.array([[2.0, 6.0, 1.0], [3.0, 4.0, 8.0]])
HELDOUT = np.array([[3.0, 1.0, 5.0], [6.0, 2.0, 0.5]])


def test_figures_against_hand_counts(analysis_script):
    module = analysis_script("mia_imprint_experiment")
    spread = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    # two devices whose mean loss is the table above: the figures must average first
    forget = np.stack([-(FORGET - spread), -(FORGET + spread)])
    heldout = np.stack([-(HELDOUT + spread), -(HELDOUT - spread)])
    fig = module.imprint_figures(
        forget, heldout, np.array([0, 1]), np.array([1, 0]), np.array([5, 6]), np.array([5, 6])
    )
    # members [2, 4] against non-members [1, 6]: two of four pairs won
    assert fig["auc"] == pytest.approx(0.5)
    # against every held-out question asked for answers 0 and 1: [3, 1, 6, 2]; 2 < 3, 6, tie
    # with 2; 4 < 6: 3.5 of 8
    assert fig["auc_answer"] == pytest.approx(3.5 / 8)
    # the same relation only: [3] for the first fact, [2] for the second; 2 < 3, tie 2 = 2
    assert fig["auc_relation"] == pytest.approx(1.5 / 4)
    # forget questions asked for answers 1 and 0: [6, 2, 4, 3] against [1, 6]
    assert fig["auc_entity"] == pytest.approx(3.5 / 8)
    assert fig["forget_loss"] == pytest.approx(3.0)
    assert fig["heldout_loss"] == pytest.approx(3.5)
    assert fig["answer_matched_loss"] == pytest.approx(3.0)


def test_members_worse_than_unseen_read_below_half(analysis_script):
    """A model that answers the forget facts worse than unseen ones gives an AUC under 0.5, and
    the answer-matched AUC keeps it when the answers themselves are not disfavoured."""
    module = analysis_script("mia_imprint_experiment")
    forget = -np.array([[[9.0, 1.0, 1.0], [1.0, 9.0, 1.0]]])  # each fact's own answer at loss 9
    heldout = -np.ones((1, 2, 3))
    fig = module.imprint_figures(
        forget, heldout, np.array([0, 1]), np.array([2, 2]), np.zeros(2), np.zeros(2)
    )
    assert fig["auc"] == 0.0
    assert fig["auc_answer"] == 0.0
    # the forget questions asked for the held-out answer cost 1, as the held-out facts: all ties
    assert fig["auc_entity"] == 0.5


def _row(policy: str, seed: int, stage: str, auc: float) -> dict:
    return {
        "regime": "r",
        "event": "leave",
        "policy": policy,
        "seed": seed,
        "round": 9,
        "stage": stage,
        "auc": auc,
        "auc_answer": auc + 0.1,
        "auc_relation": auc,
        "auc_entity": 0.5,
        "forget_loss": 1.0,
        "heldout_loss": 2.0,
        "answer_matched_loss": 3.0,
    }


def test_tables(analysis_script, tmp_path: Path):
    module = analysis_script("mia_imprint_experiment")
    rows = [_row("none", 1, "end", 0.4), {**_row("none", 2, "end", 0.3), "auc_answer": 0.2}]
    rows += [_row("retrain", 1, "end", 0.5), _row("retrain", 2, "end", 0.5)]
    rows += [_row("none", 1, "after_event", 0.2), _row("none", 1, "round", 0.9)]
    rows += [{**_row("none", 1, "end", 0.45), "blind": True}, {**_row("none", 2, "end", 0.55), "blind": True}]
    for i, part in enumerate((rows[:3], rows[3:])):
        (tmp_path / f"run{i}").mkdir()
        pd.DataFrame(part).to_parquet(tmp_path / f"run{i}" / "imprint.parquet")
    df = module.collect(tmp_path)
    stages = module.stage_table(df).splitlines()
    assert "| r | none | after_event | 1 | 0.20 | 0.30 | 0.20 | 0.50 | 1.00 | 2.00 | 3.00 |" in stages
    assert "| r | none | end | 2 | 0.35 | 0.35 | 0.35 | 0.50 | 1.00 | 2.00 | 3.00 |" in stages
    assert not any("| round |" in line for line in stages)  # only the three stages
    # differences -0.1 and -0.2: mean -0.15, t interval with one degree of freedom
    # 12.706 * 0.0707 / 1.414 = 0.635, t = -3 so p = 0.20
    paired = module.against_retrain(df).splitlines()
    assert len(paired) == 4  # none, and none in the counterfactual without co-adaptation
    assert paired[3].startswith("| r | none (blind) | 2 | +0.00 [-0.64, +0.64] | 1.00 |")
    # answer-matched: -0.1 and -0.4, mean -0.25, sd 0.212, half-width 1.906, t = -1.667
    # (p = 1 - 2 atan(1.667) / pi = 0.34); the answers' part (AUC minus answer-matched): none
    # -0.1 and +0.1 against retrain's -0.1 and -0.1, so 0 and +0.2: mean +0.1, half-width
    # 1.27, t = 1 (p = 0.50)
    # with minus without co-adaptation: 0.4 - 0.45 and 0.3 - 0.55, mean -0.15, sd 0.141, so the
    # half-width is 12.706 * 0.141 / 1.414 = 1.27 and t = -1.5 (p = 1 - 2 atan(1.5) / pi = 0.37);
    # the loss gap is -1 everywhere, so it does not differ
    blind = module.against_blind(df).splitlines()
    assert "| r | none | 2 | end | -0.15 [-1.42, +1.12] | 0.37 | +0.00 [+0.00, +0.00] | – |" in blind
    assert paired[2] == (
        "| r | none | 2 | -0.15 [-0.79, +0.49] | 0.20 | -0.25 [-2.16, +1.66] | 0.34 "
        "| +0.00 [+0.00, +0.00] | – | +0.10 [-1.17, +1.37] | 0.50 |"
    )


def test_no_runs_is_an_error(analysis_script, tmp_path: Path):
    module = analysis_script("mia_imprint_experiment")
    with pytest.raises(SystemExit, match=r"no run with an imprint\.parquet"):
        module.collect(tmp_path)


def _learner(tmp_path: Path, devices: list[int]):
    """The consensus regime's learner with ``devices`` in slots of their own and random copies."""
    import torch

    from cosim.engine.simulation import Simulation
    from cosim.experiments import plan_experiments

    run = plan_experiments(REGIMES, (1,), ("none",), ("leave",), only=("regime_consensus",))[0]
    learner = Simulation(run.scenario, tmp_path / "run").learner
    for d in devices:
        learner.add_device(d, d)
    torch.manual_seed(0)
    for copies in learner.copies.values():
        copies.normal_()
    return learner


def test_blind_leaves_the_leavers_slot_out_of_the_others_training_views(analysis_script, tmp_path: Path):
    """The counterfactual without co-adaptation: in training, every device but the leaver sees
    the leaver's slot as zero; every other slot is as the copies hold it, and evaluation
    views are untouched."""
    module = analysis_script("mia_imprint_experiment")
    devices = [0, 1, 2, 3, 4]
    learner = _learner(tmp_path, devices)
    module._blind_others(learner, {3})
    r = learner.rank

    def block_norms() -> np.ndarray:
        layer = next(iter(learner.layers.values()))
        return np.array(
            [
                [float(layer.views[i, :, s * r : (s + 1) * r].norm()) for s in devices]
                for i in range(len(devices))
            ]
        )

    learner._set_views(devices, train=True)
    trained = block_norms()
    learner._set_views(devices, train=False)
    evaluated = block_norms()
    learner._clear_views()
    own = np.eye(len(devices), dtype=bool)  # a device trains its own slot apart from its views
    leaver_column = np.zeros_like(own)
    leaver_column[:, 3] = True
    assert (trained[own | leaver_column] == 0).all()
    assert (trained[~(own | leaver_column)] > 0).all()
    assert (evaluated > 0).all()


def test_distil_moves_each_device_towards_its_teacher_and_only_its_own_slot(analysis_script, tmp_path: Path):
    """The counterfactual correction: a device's own slot moves its answer logits towards the
    teacher's (the model before a slot was deleted), every other copy stays, and the trained
    slot is what the device's copies hold afterwards."""
    import torch

    module = analysis_script("mia_imprint_experiment")
    devices = [0, 1, 2]
    learner = _learner(tmp_path, devices)
    for d in devices:  # each device trains on from its own copy of its slot
        for name, p in learner.own[d].items():
            p.data.copy_(learner.copies[name][d, learner.slot_of[d]])
    teacher = learner.teacher_logits(devices)
    for copies in learner.copies.values():
        copies[:, 2] = 0.0  # device 2 leaves: its slot is deleted everywhere
    before = {name: c.clone() for name, c in learner.copies.items()}

    def distance() -> dict[int, float]:
        now = learner.teacher_logits([0, 1])
        return {d: float(((now[d] - teacher[d]) ** 2).mean()) for d in (0, 1)}

    start = distance()
    module._distil(learner, [0, 1], {d: teacher[d] for d in (0, 1)}, steps=30)
    end = distance()
    for d in (0, 1):
        assert end[d] < 0.75 * start[d], (start, end)  # 30 steps take it to about 0.58
    for name, c in learner.copies.items():
        for d in (0, 1):
            own = learner.slot_of[d]
            assert torch.equal(c[d, own], learner.own[d][name].detach())
            assert not torch.equal(c[d, own], before[name][d, own])
            others = [k for k in range(c.shape[1]) if k != own]
            assert torch.equal(c[d, others], before[name][d, others])
        assert torch.equal(c[2], before[name][2])  # a device not distilled is left alone


def test_accuracy_against_retrain_reads_each_runs_last_evaluation(analysis_script, tmp_path: Path):
    """Each run's end row takes the network-wide accuracy of its last round from its own trace
    (per-device rows and earlier rounds beside it are ignored)."""
    module = analysis_script("mia_imprint_experiment")
    retained = {("none", 1): 0.90, ("none", 2): 0.80, ("retrain", 1): 0.95, ("retrain", 2): 0.95}
    for (policy, seed), acc in retained.items():
        run = tmp_path / f"r-leave-{policy}-s{seed}"
        run.mkdir()
        pd.DataFrame([_row(policy, seed, "end", 0.5)]).to_parquet(run / "imprint.parquet")
        evals = []
        for split, value in (("retain", acc), ("forget", 0.1), ("test", 0.5)):
            evals.append({"round": 9, "stage": "round", "split": split, "device": np.nan, "accuracy": value})
            evals.append({"round": 9, "stage": "round", "split": split, "device": 0.0, "accuracy": 0.0})
            evals.append({"round": 3, "stage": "round", "split": split, "device": np.nan, "accuracy": 0.0})
        pd.DataFrame(evals).to_parquet(run / "evaluations.parquet")
    lines = module.accuracy_against_retrain(module.collect(tmp_path)).splitlines()
    # retained: -0.05 and -0.15, mean -0.10, sd 0.0707, half-width 0.635, t = -2 (p = 0.30)
    assert lines[2] == (
        "| r | none | 2 | -0.10 [-0.74, +0.54] | 0.30 | +0.00 [+0.00, +0.00] | – | +0.00 [+0.00, +0.00] | – |"
    )


def test_whole_steps_set_the_whole_step_share_in_every_planned_run(analysis_script) -> None:
    from cosim.experiments import plan_experiments

    module = analysis_script("mia_imprint_experiment")
    base = ("training.rounds=20",)
    assert module.run_overrides(base, False) == base
    whole = module.run_overrides(base, True)
    assert whole == (*base, "correction.step_share=whole")
    plan = plan_experiments(REGIMES, (1,), ("priority",), ("leave",), overrides=whole)
    assert plan and all(run.scenario.correction.step_share == "whole" for run in plan)
    assert all(run.scenario.training.rounds == 20 for run in plan)
    plain = plan_experiments(REGIMES, (1,), ("priority",), ("leave",), overrides=base)
    assert all(run.scenario.correction.step_share == "parallel" for run in plain)
