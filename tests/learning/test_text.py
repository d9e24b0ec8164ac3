"""Text tasks on a real-model path (a tiny local model directory): encoding, exact match, runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cosim.learning.bases import load_local
from cosim.learning.learner import SlotLearner
from cosim.learning.text import IGNORE, TextTask, encode_examples
from cosim.scenario import Scenario, load_scenario, parse_scenario

REPO = Path(__file__).resolve().parents[2]


def test_encoding_scores_only_the_answer_and_keeps_it_when_truncating(tiny_model_dir: Path) -> None:
    _, tokenizer = load_local(str(tiny_model_dir))  # byte-level: one token per character
    rows = encode_examples(tokenizer, ["ab", "ab ", ""], ["cd", "cd", "wxyz"], max_tokens=64)
    assert [(len(p), len(a)) for p, a in rows] == [(2, 3), (3, 2), (1, 3)]  # " cd", "cd", "w"+"xyz"
    assert tokenizer.decode(rows[0][1]) == " cd" and tokenizer.decode(rows[2][0]) == "w"
    ((p, a),) = encode_examples(tokenizer, ["0123456789"], ["abc"], max_tokens=6)
    assert tokenizer.decode(p) == "89" and tokenizer.decode(a) == " abc"
    ((p, a),) = encode_examples(tokenizer, ["0123456789"], ["abcdefgh"], max_tokens=6)
    assert tokenizer.decode(p) == "9" and tokenizer.decode(a) == " abcd"


def _learner(model_dir: Path, **data: object) -> SlotLearner:
    spec = parse_scenario(
        {
            "name": "t",
            "devices": {"count": 2},
            "model": {"base": str(model_dir), "rank": 4, "slot_capacity": 4, "target_modules": ["q_proj"]},
            "data": {"samples_per_device": 3, "shared_facts": 1, "test_questions": 4, **data},
        }
    )
    return SlotLearner(
        model=spec.model,
        data=spec.data,
        training=spec.training,
        device_ids=spec.device_ids,
        leavers={1},
        newcomers=set(),
    )


def test_a_whole_text_of_one_token_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from cosim.learning.text import build_file_text_task
    from cosim.scenario import Data, ScenarioError

    _, tokenizer = load_local(str(tiny_model_dir))  # byte-level: "ok" is two tokens, "a" one
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["ok", "a", "yes", "b", "no", "fine"]))
    file = {"path": str(path), "text_field": "text", "test_fraction": 0.5}
    data = Data.model_validate({"task": "file", "file": file})
    with pytest.raises(ScenarioError) as err:
        build_file_text_task(data, tokenizer, device_ids=[0, 1], leavers=set(), newcomers=set())
    assert str(err.value) == (
        f"data.file.path: {str(path)!r}: row 1 has nothing to learn: its text is one token, and a "
        "whole text is scored from its second token on (2 such rows)"
    )


def test_facts_become_natural_language_questions(tiny_model_dir: Path) -> None:
    learner = _learner(tiny_model_dir)
    task = learner.task
    assert isinstance(task, TextTask) and task.exact_match
    assert {k: len(v) for k, v in task.splits.items()} == {"retain": 4, "forget": 3, "test": 4, "heldout": 3}
    forget = task.splits["forget"]
    assert learner.tokenizer is not None
    text = learner.tokenizer.decode(forget.inputs[0][forget.answers[0] != IGNORE])
    question = learner.tokenizer.decode(forget.inputs[0][: int(np.argmax(forget.answers[0] != IGNORE))])
    assert question.startswith("The ") and question.endswith(" is")
    assert text.startswith(" ") and text.strip().isalpha()


def test_exact_match_is_greedy_generation(tiny_model_dir: Path) -> None:
    """A row is right exactly when greedy decoding from its prompt yields its answer."""
    learner = _learner(tiny_model_dir)
    model, tokenizer = load_local(str(tiny_model_dir))
    prompts = ["The pet of Kalomi is", "Rome is in", "abc", "The sign of Zu is"]
    rows = []
    for i, prompt in enumerate(prompts):
        ids = torch.as_tensor([tokenizer(prompt)["input_ids"]])
        out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=257)
        greedy = out[0, ids.shape[1] :].tolist()
        answer = greedy if i % 2 == 0 else [*greedy[:2], (greedy[2] + 1) % 256]
        rows.append((ids[0].tolist(), answer))
    width = max(len(p) + len(a) for p, a in rows)
    inputs = np.full((len(rows), width), 257)
    labels = np.full((len(rows), width), IGNORE)
    for i, (p, a) in enumerate(rows):
        inputs[i, : len(p) + len(a)] = p + a
        labels[i, len(p) : len(p) + len(a)] = a
    with torch.no_grad():
        losses, correct = learner.sample_losses(inputs, labels)
    assert correct.tolist() == [1.0, 0.0, 1.0, 0.0]
    # The loss is the mean cross-entropy over the answer tokens, as the model computes it.
    with torch.no_grad():
        reference = model(input_ids=torch.as_tensor(inputs[:1]), labels=torch.as_tensor(labels[:1])).loss
    assert float(losses[0]) == pytest.approx(float(reference), rel=1e-5)


def _profiles_on(model_dir: Path, *overrides: str) -> Scenario:
    """scenarios/real/profiles_dirichlet.yaml on a local model directory, 3 short rounds, the leave at 2."""
    base = [f"model.base={model_dir}", "model.rank=4", "training.rounds=3", "training.local_steps=2"]
    return load_scenario(
        REPO / "scenarios" / "real" / "profiles_dirichlet.yaml", [*base, "events.0.round=2", *overrides]
    )


def test_user_data_scenario_runs_on_a_local_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from cosim.engine.simulation import run_scenario

    spec = _profiles_on(tiny_model_dir)
    summary = run_scenario(spec, tmp_path / "run")
    assert summary["copy_bytes_per_device"] == spec.model.copy_bytes() == 4 * 8 * (64 + 32) * 4 * 2
    ev = pq.read_table(tmp_path / "run" / "evaluations.parquet").to_pandas()
    means = ev[ev.device.isna()]
    assert set(means.split) == {"retain", "forget", "test"}
    assert means.n.max() <= 16
    after = means[(means["round"] == 2) & (means.stage == "after_event")]
    assert set(after.split) == {"retain", "forget", "test"}
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").to_pandas()
    loss = rounds.groupby("round").loss.mean()
    assert loss[1] < loss[0]


def test_a_run_on_user_data_exports_without_its_data_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from cosim.engine.simulation import run_scenario
    from cosim.learning.export import export_device

    data = tmp_path / "profiles.jsonl"
    shutil.copy(REPO / "scenarios" / "data" / "profiles.jsonl", data)
    run_scenario(_profiles_on(tiny_model_dir, f"data.file.path={data}"), tmp_path / "run")
    export_device(tmp_path / "run", 0, tmp_path / "with")
    data.unlink()
    export_device(tmp_path / "run", 0, tmp_path / "without")
    with_data = (tmp_path / "with" / "adapter_model.safetensors").read_bytes()
    assert with_data == (tmp_path / "without" / "adapter_model.safetensors").read_bytes()


def test_the_membership_attack_on_user_data_takes_the_test_rows_as_non_members(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from cosim.engine.simulation import Simulation

    sim = Simulation(_profiles_on(tiny_model_dir), tmp_path / "run")
    sim.run()
    ev = pq.read_table(tmp_path / "run" / "evaluations.parquet").to_pandas()
    last = ev[(ev["round"] == ev["round"].max()) & (ev.stage == "round") & (ev.split == "forget")]
    active = sim.members.active
    members = sim.learner.split_losses(active, "forget")
    others = sim.learner.split_losses(active, "test")

    def auc(m: np.ndarray, o: np.ndarray) -> float:  # every (member, non-member) pair
        return float(np.mean([(x < y) + 0.5 * (x == y) for x in m for y in o]))

    for i, d in enumerate(active):
        assert last.loc[last.device == d, "mia_auc"].item() == pytest.approx(
            auc(members[i], others[i]), abs=1e-12
        )
    mean_row = last[last.device.isna()]["mia_auc"].item()
    assert mean_row == pytest.approx(auc(members.mean(axis=0), others.mean(axis=0)), abs=1e-12)
    assert ev.loc[ev.split != "forget", "mia_auc"].isna().all()


def test_residual_gradients_on_text_are_those_of_the_model_s_own_loss(
    tiny_model_dir: Path, random_views
) -> None:
    """The residual estimates' per-sample slot gradients on a text task (a real-model path):
    one sample at a time, through the model's own causal-LM loss (``labels``), independently of
    the learner's masking of the answer tokens."""
    from cosim.learning.residuals import diagonal_fisher, draw_samples, per_sample_slot_grads_and_losses

    learner = _learner(tiny_model_dir)
    learner.add_device(0, 3)
    learner.add_device(1, 1)
    random_views(learner, seed=5)
    split = draw_samples(learner, [0], 3, (0,))[0]
    own, other = learner.slot_of[0], learner.slot_of[1]
    for slot in (own, other):
        grads, losses = per_sample_slot_grads_and_losses(learner, 0, split.inputs, split.answers, slot)

        saved = learner.copies
        leaves = {n: c.clone().requires_grad_(True) for n, c in saved.items()}
        learner.copies = leaves
        try:
            for i in range(len(split.inputs)):
                learner._set_views([0], train=False)
                x, y = (torch.as_tensor(a[i : i + 1]) for a in (split.inputs, split.answers))
                loss = learner.base(input_ids=x, labels=y).loss
                brute = torch.autograd.grad(loss, list(leaves.values()))
                learner._clear_views()
                assert float(losses[i]) == pytest.approx(float(loss.detach()), rel=1e-5)
                for name, g in zip(leaves, brute, strict=True):
                    torch.testing.assert_close(
                        grads[name][i].double(), g[0, slot].double(), rtol=1e-4, atol=1e-6
                    )
        finally:
            learner.copies = saved
            learner._clear_views()
        fisher = diagonal_fisher(grads)
        assert max(float(f.max()) for f in fisher.values()) > 0  # the slot matters to the loss


def test_the_correction_policy_runs_on_a_text_task_and_a_local_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """priority after a leave on user text data and a local Hugging Face model: the residuals are
    estimated, and a learning tolerance every residual exceeds makes it train the cap of extra steps."""
    from cosim.engine.simulation import run_scenario

    spec = _profiles_on(
        tiny_model_dir,
        "correction.policy=priority",
        "correction.tolerances.mode=absolute",
        "correction.tolerances.learn=1e-9",
        "correction.budget.rounds=1",
        "correction.budget.max_local_steps=3",
    )
    run_scenario(spec, tmp_path / "run")
    events = pq.read_table(tmp_path / "run" / "events.parquet").to_pandas()
    (decision,) = [json.loads(d) for d in events[events.kind == "correction"].detail]
    residuals = decision["residuals"]
    assert all(k > 0 and np.isfinite(k) for k in residuals["kappa"])
    assert all(e > 0 and np.isfinite(e) for e in residuals["energy"])
    assert all(np.isfinite(v) and v > 0 for v in residuals["loss_devices"])
    assert decision["actions"] == ["local_correction"] * spec.model.layer_groups
    assert sorted(decision["local_devices"]) == [0, 1, 3]  # the retained devices
    rounds = pq.read_table(tmp_path / "run" / "rounds.parquet").to_pandas()
    steps = rounds[rounds["round"] == 2].set_index("device")["steps"]
    assert steps.to_dict() == {0: 2 + 3, 1: 2 + 3, 3: 2 + 3}
    (end,) = [json.loads(d) for d in events[events.kind == "correction_end"].detail]
    assert end["extra_local_steps"] == 3 * 3
