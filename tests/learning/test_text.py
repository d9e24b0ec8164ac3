"""Text tasks on a real-model path (a tiny local model directory): encoding, exact match, runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cosim.learning.bases import load_local
from cosim.learning.learner import SlotLearner
from cosim.learning.text import IGNORE, TextTask, encode_examples
from cosim.scenario import load_scenario, parse_scenario

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


def test_user_data_scenario_runs_on_a_local_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from cosim.engine.simulation import run_scenario

    spec = load_scenario(
        REPO / "scenarios" / "real" / "profiles_dirichlet.yaml",
        [
            f"model.base={tiny_model_dir}",
            "model.rank=4",
            "training.rounds=3",
            "training.local_steps=2",
            "events.0.round=2",
        ],
    )
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
