"""Export: a device's final model as a PEFT adapter directory that loads back to the same logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from cosim.engine.simulation import run_scenario
from cosim.learning.export import ExportError, export_device, load_learner
from cosim.learning.model import build_tiny_base
from cosim.learning.peft_io import to_peft_model

LEAVER = 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_scenario):
    """Four devices for three rounds, all within radio range; device 3 leaves at round 1."""
    scenario = small_scenario(
        devices={"count": 4},
        training={"rounds": 3, "local_steps": 2, "batch_size": 4},
        network={"backend": "builtin", "area": {"width_m": 20, "height_m": 20}},
        events=[{"kind": "leave", "device": LEAVER, "round": 1}],
    )
    out = tmp_path_factory.mktemp("export") / "run"
    run_scenario(scenario, out)
    return out


def _questions(learner) -> torch.Tensor:
    return torch.as_tensor(np.concatenate([s.inputs for s in learner.task.splits.values()]))


def test_exported_adapter_loads_with_peft_and_gives_the_device_logits(run_dir, tmp_path):
    learner = load_learner(run_dir)
    device = 1
    assert sorted(learner.slot_of) == [0, 1, 2]
    out = tmp_path / "device-1"

    export_device(run_dir, device, out)

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 3 * learner.rank  # the three live slots; the leaver's slot was deleted
    model = AutoModelForCausalLM.from_pretrained(out / "base")
    model = PeftModel.from_pretrained(model, out)
    model.eval()
    x = _questions(learner)
    with torch.no_grad():
        exported = model(input_ids=x).logits
    expected = learner.device_logits(device, x)
    torch.testing.assert_close(exported, expected, rtol=0, atol=1e-5)
    spec = learner.model_spec
    with torch.no_grad():
        base = build_tiny_base(spec.tiny, learner.task.vocab_size, seed=spec.seed)(input_ids=x).logits
    assert (exported - base).abs().max() > 1e-3  # the adapter is not a no-op


def test_device_adapter_as_peft_model_gives_the_device_logits(run_dir):
    learner = load_learner(run_dir)
    spec = learner.model_spec
    x = _questions(learner)
    for device in sorted(learner.slot_of):
        live, adapter = learner.device_adapter(device)
        assert live == sorted(learner.slot_of.values())
        base = build_tiny_base(spec.tiny, learner.task.vocab_size, seed=spec.seed)
        model = to_peft_model(
            base, adapter, rank=spec.rank, alpha=spec.alpha, target_modules=spec.target_modules
        )
        with torch.no_grad():
            logits = model(input_ids=x).logits
        torch.testing.assert_close(logits, learner.device_logits(device, x), rtol=0, atol=1e-5)


def test_exporting_a_device_that_is_not_live_is_refused(run_dir, tmp_path):
    with pytest.raises(ExportError, match=rf"--device {LEAVER}: not a live device .* allowed: \[0, 1, 2\]"):
        export_device(run_dir, LEAVER, tmp_path / "gone")
    with pytest.raises(ExportError, match="--device 99: not a live device"):
        export_device(run_dir, 99, tmp_path / "never")
    assert not (tmp_path / "gone").exists()


def test_exporting_from_a_directory_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(ExportError, match="not a run directory"):
        export_device(tmp_path, 0, tmp_path / "out")
