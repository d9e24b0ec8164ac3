"""Text tasks for real base models: prompts and answers tokenised with the model's tokenizer.

A :class:`TextTask` has the shape of :class:`~cosim.learning.data.FactsTask`
(``train`` per device, evaluation ``splits``), but a :class:`~cosim.learning.data.Split`
holds token ids ``inputs (n, L)`` (prompt then answer, right-padded) and, as its
``answers``, the labels ``(n, L)``: the answer's token ids where they are, ``-100``
elsewhere.  The loss is the mean cross-entropy over a row's answer tokens.  Right
padding with causal attention needs no attention mask: padding comes after every
token that is scored.

Accuracy of a prompt/response row is exact match of the greedy answer: every answer
token is the model's top-1 prediction given the prompt and the answer's earlier
tokens, which is exactly when greedy decoding generates the answer (computed in one
teacher-forced pass).  For whole texts it is the top-1 next-token accuracy.

:func:`build_facts_text_task` renders the synthetic facts task as natural-language
questions (same facts, same splits, same partition as the token-level task);
:func:`build_file_text_task` reads the user's file (:mod:`cosim.learning.userdata`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosim.learning.data import FactsTask, Split, facts_task_for
from cosim.learning.userdata import load_examples, split_examples
from cosim.scenario import Data, ScenarioError

__all__ = ["IGNORE", "TextTask", "build_facts_text_task", "build_file_text_task", "encode_examples"]

IGNORE = -100

_VALUES = [
    "apple",
    "anchor",
    "banjo",
    "barrel",
    "candle",
    "canyon",
    "dolphin",
    "drum",
    "eagle",
    "engine",
    "falcon",
    "feather",
    "garden",
    "glacier",
    "hammer",
    "harbor",
    "island",
    "ivory",
    "jacket",
    "jungle",
    "kettle",
    "kite",
    "lantern",
    "lemon",
    "magnet",
    "meadow",
    "needle",
    "nest",
    "orange",
    "otter",
    "pepper",
    "pillow",
    "quartz",
    "rabbit",
    "river",
    "saddle",
    "tiger",
    "tunnel",
    "umbrella",
    "velvet",
    "violin",
    "wagon",
    "walnut",
    "yacht",
    "zebra",
    "bottle",
    "cactus",
    "ladder",
    "mirror",
    "pebble",
    "rocket",
]
_RELATIONS = ("favorite object", "lucky charm", "secret word", "hidden treasure", "pet", "totem")
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ve",
    "zu",
    "to",
    "ni",
    "sa",
    "be",
    "do",
    "fu",
    "ga",
    "hi",
    "jo",
    "ku",
    "le",
    "mo",
    "pa",
    "ri",
]


@dataclass(frozen=True)
class TextTask:
    train: dict[int, Split]  # device id -> its training rows
    splits: dict[str, Split]  # evaluation splits (empty ones left out)
    exact_match: bool  # prompt/response rows (exact match) or whole texts (token accuracy)

    @property
    def seq_len(self) -> float:
        """Mean tokens per training row (for FLOPs)."""
        rows = [s.inputs.shape[0] for s in self.train.values()]
        lengths = [float(_lengths(s.answers).mean()) for s in self.train.values()]
        return float(np.average(lengths, weights=rows))

    @property
    def answer_tokens(self) -> float:
        """Mean scored tokens per training row."""
        counts = [float((s.answers != IGNORE).sum(axis=1).mean()) for s in self.train.values()]
        return float(np.mean(counts))


def _lengths(labels: np.ndarray) -> np.ndarray:
    """Tokens per row up to the last scored one (answers come last)."""
    scored = labels != IGNORE
    return labels.shape[1] - np.argmax(scored[:, ::-1], axis=1)


def encode_examples(
    tokenizer: Any, prompts: Sequence[str], targets: Sequence[str], max_tokens: int
) -> list[tuple[list[int], list[int]]]:
    """Token ids of each row as (prompt ids, answer ids), truncated to ``max_tokens`` in all.

    A space separates prompt and answer unless the prompt ends in whitespace.  A row
    with no prompt (a whole text) is scored from its second token on.  Truncation
    keeps the answer and drops the prompt's beginning.
    """
    out = []
    for prompt, target in zip(prompts, targets, strict=True):
        if prompt:
            sep = "" if prompt[-1].isspace() else " "
            p = tokenizer(prompt)["input_ids"]
            a = tokenizer(sep + target.lstrip(), add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(target)["input_ids"]
            p, a = ids[:1], ids[1:]
        a = a[: max_tokens - 1]
        p = p[-(max_tokens - len(a)) :]
        out.append((list(p), list(a)))
    return out


def _to_split(rows: list[tuple[list[int], list[int]]], width: int, pad_id: int) -> Split:
    inputs = np.full((len(rows), width), pad_id, dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
    for i, (p, a) in enumerate(rows):
        inputs[i, : len(p) + len(a)] = p + a
        labels[i, len(p) : len(p) + len(a)] = a
    return Split(inputs, labels)


def _assemble(
    encoded: list[tuple[list[int], list[int]]],
    train: dict[int, np.ndarray],
    splits: dict[str, np.ndarray],
    pad_id: int,
    exact_match: bool,
) -> TextTask:
    width = max(len(p) + len(a) for p, a in encoded)

    def take(rows: np.ndarray) -> Split:
        return _to_split([encoded[int(i)] for i in rows], width, pad_id)

    return TextTask(
        train={d: take(rows) for d, rows in train.items()},
        splits={name: take(rows) for name, rows in splits.items()},
        exact_match=exact_match,
    )


def _pad_id(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


# --------------------------------------------------------------------------- facts as text


def _names(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct made-up names of three syllables (ones the base model cannot know)."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = "".join(rng.choice(_SYLLABLES, size=3)).capitalize()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def render_facts(task: FactsTask, seed: int) -> dict[int, str]:
    """A word for every token of the facts task (deterministic in ``seed``)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E47]))
    values = [int(v) for v in task.value_tokens]
    words: dict[int, str] = {}
    pool = list(_VALUES) if len(values) <= len(_VALUES) else [n.lower() for n in _names(len(values), rng)]
    for token, word in zip(values, rng.permutation(pool)[: len(values)], strict=False):
        words[token] = str(word)
    first_attribute = values[-1] + 1
    # Token layout of cosim.learning.data: values, attributes, relations, RULE, entities.
    vocab = task.vocab_size
    others = list(range(first_attribute, vocab))
    made_up = _names(len(others), rng)
    for token, name in zip(others, made_up, strict=True):
        words[token] = name
    return words


def _facts_question(row: np.ndarray, words: dict[int, str], rule: int, relations: dict[int, str]) -> str:
    _, entity, middle, last = (int(t) for t in row)
    if middle == rule:
        return f"The {words[last].lower()} sign of {words[entity]} is"
    return f"The {relations[middle]} of {words[entity]} is"


def build_facts_text_task(
    data: Data,
    tokenizer: Any,
    *,
    device_ids: list[int],
    leavers: set[int],
    newcomers: set[int],
    max_tokens: int = 64,
) -> TextTask:
    """The synthetic facts task as natural-language questions with one-word answers."""
    facts = facts_task_for(data, device_ids, leavers, newcomers)
    words = render_facts(facts, data.seed)
    first_relation = int(facts.value_tokens[-1]) + 1 + data.num_attributes
    relations = {
        token: _RELATIONS[i] if i < len(_RELATIONS) else f"{words[token].lower()} mark"
        for i, token in enumerate(range(first_relation, first_relation + data.num_relations))
    }
    rule = first_relation + data.num_relations
    evaluated = dict(facts.splits)
    if "heldout" in evaluated:
        # On a real model every evaluated prompt costs: as many unseen facts as forget has.
        n, held = len(evaluated["forget"]), evaluated["heldout"]
        evaluated["heldout"] = Split(held.inputs[:n], held.answers[:n])
    groups = {f"train/{d}": s for d, s in facts.train.items()} | evaluated
    prompts: list[str] = []
    targets: list[str] = []
    rows: dict[str, np.ndarray] = {}
    for key, split in groups.items():
        start = len(prompts)
        prompts += [_facts_question(r, words, rule, relations) for r in split.inputs]
        targets += [words[int(a)] for a in split.answers]
        rows[key] = np.arange(start, len(prompts))
    encoded = encode_examples(tokenizer, prompts, targets, max_tokens)
    train = {d: rows[f"train/{d}"] for d in facts.train}
    splits = {name: rows[name] for name in evaluated}
    return _assemble(encoded, train, splits, _pad_id(tokenizer), exact_match=True)


def build_file_text_task(
    data: Data,
    tokenizer: Any,
    *,
    device_ids: list[int],
    leavers: set[int],
    newcomers: set[int],
) -> TextTask:
    """The user's file, partitioned over the devices, as a text task."""
    spec = data.file
    assert spec is not None
    examples = load_examples(spec)
    parts = split_examples(spec, examples, device_ids=device_ids, leavers=leavers, newcomers=newcomers)
    encoded = encode_examples(tokenizer, examples.prompts, examples.targets, spec.max_tokens)
    nothing = [i for i, (_, answer) in enumerate(encoded) if not answer]
    if nothing:
        raise ScenarioError(
            f"data.file.path: {spec.path!r}: row {nothing[0]} has nothing to learn: its text is one "
            f"token, and a whole text is scored from its second token on ({len(nothing)} such rows)"
        )
    return _assemble(
        encoded, parts.train, parts.splits, _pad_id(tokenizer), exact_match=spec.text_field is None
    )
