"""The built-in synthetic facts task.

Every question is four tokens and has one answer token, read at the last position:

* a *fact* ``[BOS, entity, relation, QUERY] -> value``: an arbitrary association
  that can only be memorised;
* a *rule* question ``[BOS, entity, RULE, attribute] -> f(attribute)``: ``f`` is
  one fixed map from attributes to values that every device's data follows, so it
  generalises to entities never seen in training.

Each device holds its own private facts (entities no other device sees), all
devices share the common facts, and every device holds examples of the rule.
The evaluation splits are fixed by the scenario so that timelines are comparable
across rounds:

* ``retain``: private facts of the devices that are there from the start and
  never leave, plus the shared facts;
* ``forget``: private facts of the devices that leave (the data to unlearn);
* ``newcomer``: private facts of the devices that join;
* ``test``: held-out rule questions on entities that no device trains on;
* ``heldout`` (only when some device leaves): facts about entities no device trains
  on, drawn like private facts: the non-members of the membership-inference test
  on ``forget`` (a model that never saw the forget facts cannot tell them apart).

A model that never saw a fact answers it at about chance, ``1 / num_values``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cosim.scenario import Data

__all__ = ["SPLITS", "FactsTask", "Split", "build_facts_task", "facts_task_for"]

SPLITS = ("retain", "forget", "test", "newcomer", "heldout")


@dataclass(frozen=True)
class Split:
    """Questions as token ids ``(n, 4)`` and their answers ``(n,)``."""

    inputs: np.ndarray
    answers: np.ndarray

    def __len__(self) -> int:
        return int(self.answers.shape[0])


@dataclass(frozen=True)
class FactsTask:
    vocab_size: int
    value_tokens: np.ndarray  # the candidate answers
    train: dict[int, Split]  # device id -> its training data
    private: dict[int, Split]  # device id -> its private facts alone
    splits: dict[str, Split]  # evaluation splits (empty ones left out)

    @property
    def seq_len(self) -> int:
        return 4


def _concat(parts: list[Split]) -> Split:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Split(np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64))
    return Split(np.concatenate([p.inputs for p in parts]), np.concatenate([p.answers for p in parts]))


def build_facts_task(
    *,
    device_ids: list[int],
    leavers: set[int],
    newcomers: set[int],
    samples_per_device: int,
    shared_facts: int,
    rule_examples_per_device: int,
    test_questions: int,
    num_values: int,
    num_relations: int,
    num_attributes: int,
    seed: int,
) -> FactsTask:
    """Draw the task deterministically from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xFAC75]))
    n_dev = len(device_ids)
    n_rule_train_entities = max(8, 2 * num_attributes)
    n_test_entities = max(8, test_questions // 4)

    # Token layout: specials, values, attributes, relations, RULE, entities.
    bos, query = 0, 1
    values = np.arange(2, 2 + num_values)
    attributes = np.arange(values[-1] + 1, values[-1] + 1 + num_attributes)
    relations = np.arange(attributes[-1] + 1, attributes[-1] + 1 + num_relations)
    rule = int(relations[-1] + 1)
    first_entity = rule + 1
    n_entities = n_dev * samples_per_device + shared_facts + n_rule_train_entities + n_test_entities
    entities = np.arange(first_entity, first_entity + n_entities)
    vocab_size = int(entities[-1] + 1)

    cursor = 0

    def take(n: int) -> np.ndarray:
        nonlocal cursor
        out = entities[cursor : cursor + n]
        cursor += n
        return out

    def facts(ents: np.ndarray) -> Split:
        rel = rng.choice(relations, size=len(ents))
        ans = rng.choice(values, size=len(ents))
        inputs = np.stack([np.full(len(ents), bos), ents, rel, np.full(len(ents), query)], axis=1)
        return Split(inputs.astype(np.int64), ans.astype(np.int64))

    rule_map = rng.choice(values, size=num_attributes)  # f: attribute index -> value

    def rule_questions(ents_pool: np.ndarray, n: int) -> Split:
        ents = rng.choice(ents_pool, size=n)
        attr_idx = rng.integers(0, num_attributes, size=n)
        inputs = np.stack([np.full(n, bos), ents, np.full(n, rule), attributes[attr_idx]], axis=1)
        return Split(inputs.astype(np.int64), rule_map[attr_idx].astype(np.int64))

    private = {d: facts(take(samples_per_device)) for d in device_ids}
    shared = facts(take(shared_facts))
    rule_train_pool = take(n_rule_train_entities)
    test_pool = take(n_test_entities)
    train = {
        d: _concat([private[d], shared, rule_questions(rule_train_pool, rule_examples_per_device)])
        for d in device_ids
    }
    stayers = [d for d in device_ids if d not in leavers and d not in newcomers]
    splits = {
        "retain": _concat([private[d] for d in stayers] + [shared]),
        "forget": _concat([private[d] for d in device_ids if d in leavers]),
        "test": rule_questions(test_pool, test_questions),
        "newcomer": _concat([private[d] for d in device_ids if d in newcomers]),
    }
    if len(splits["forget"]):
        splits["heldout"] = _heldout_facts(test_pool, relations, values, len(splits["forget"]), seed)
    splits = {name: split for name, split in splits.items() if len(split)}
    return FactsTask(vocab_size=vocab_size, value_tokens=values, train=train, private=private, splits=splits)


def _heldout_facts(
    entities: np.ndarray, relations: np.ndarray, values: np.ndarray, n_forget: int, seed: int
) -> Split:
    """Distinct (entity, relation) facts on entities never trained on: as many as ``forget`` has
    (at least 32), or every such pair when there are fewer.

    Drawn from a stream of their own, so adding them changes no other draw of the task.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x4E1D]))
    pairs = np.array([(e, r) for e in entities for r in relations], dtype=np.int64)
    n = min(len(pairs), max(n_forget, 32))
    chosen = pairs[rng.choice(len(pairs), size=n, replace=False)]
    inputs = np.stack([np.zeros(n, np.int64), chosen[:, 0], chosen[:, 1], np.ones(n, np.int64)], axis=1)
    return Split(inputs, rng.choice(values, size=n).astype(np.int64))


def facts_task_for(data: Data, device_ids: list[int], leavers: set[int], newcomers: set[int]) -> FactsTask:
    """:func:`build_facts_task` with the sizes and seed of a scenario's ``data`` section."""
    return build_facts_task(
        device_ids=device_ids,
        leavers=leavers,
        newcomers=newcomers,
        samples_per_device=data.samples_per_device,
        shared_facts=data.shared_facts,
        rule_examples_per_device=data.rule_examples_per_device,
        test_questions=data.test_questions,
        num_values=data.num_values,
        num_relations=data.num_relations,
        num_attributes=data.num_attributes,
        seed=data.seed,
    )
