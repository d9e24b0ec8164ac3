"""Checks of a scenario's model and data that need files, done before a run starts.

Validation (:mod:`cosim.scenario`) sees only the YAML and paths.  These checks read
what loading will read (a model directory's files, the data file and its
partition) without loading model weights, so that a bad model or dataset is
reported as a user error before anything is written.  Loading repeats them.
"""

from __future__ import annotations

from typing import Any

from cosim.scenario import SMOLLM2_135M, Data, Model, Scenario, ScenarioError

__all__ = ["check_adaptable", "check_inputs", "check_task_fits_model"]


def check_adaptable(base: Any, name: str, target_modules: tuple[str, ...]) -> None:
    """Every module of ``model.target_modules`` is a linear layer inside the model's
    ``layers``, as in a Llama-style model."""
    from cosim.learning.model import target_linear_modules
    from cosim.scenario import ADAPTABLE_MODULES

    found = [n for n, _ in target_linear_modules(base, ADAPTABLE_MODULES)]
    kinds = {n.rsplit(".", 1)[-1] for n in found if "layers" in n.split(".")}
    missing = [m for m in target_modules if m not in kinds]
    has = [m for m in ADAPTABLE_MODULES if m in kinds]
    if missing:
        model_type = getattr(getattr(base, "config", None), "model_type", None)
        raise ScenarioError(
            f"model.target_modules: the model {name!r} (model_type {model_type!r}) has no linear "
            f"layers named {', '.join(missing)} in its blocks; cosim adapts Llama-style models "
            "(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj in model.layers); "
            f"allowed: those of them it has ({', '.join(has) or 'none'})"
        )


def check_task_fits_model(model: Model, data: Data) -> None:
    """Text data needs a tokenizer, which the tiny model does not have."""
    if model.is_tiny and data.task == "file":
        raise ScenarioError(
            "data.task: 'file' needs a pretrained base model with a tokenizer (got model.base "
            f"'tiny'); allowed: model.base '{SMOLLM2_135M}' or a local model directory"
        )


def check_inputs(scenario: Scenario) -> None:
    """Raise :class:`ScenarioError` if the model or the data cannot be loaded as declared."""
    model, data = scenario.model, scenario.data
    check_task_fits_model(model, data)
    if model.base == SMOLLM2_135M:
        from cosim.learning.bases import smollm2_gguf

        smollm2_gguf()
    elif not model.is_tiny:
        from cosim.learning.bases import check_local

        check_local(model.base)
    if data.file is not None:
        from cosim.learning.userdata import load_examples, split_examples

        split_examples(
            data.file,
            load_examples(data.file),
            device_ids=scenario.device_ids,
            leavers=scenario.leavers,
            newcomers=scenario.newcomers,
        )
