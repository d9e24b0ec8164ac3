"""Pretrained bases: a local directory loads through the one safe path; SmolLM2's cache is exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from cosim.learning.bases import check_local, load_local
from cosim.scenario import Model, ScenarioError, parse_scenario
from tests.conftest import save_tiny_model_dir


def test_a_local_directory_loads_its_safetensors_weights_and_tokenizer(tiny_model_dir: Path) -> None:
    model, tokenizer = load_local(str(tiny_model_dir))
    saved = load_file(str(tiny_model_dir / "model.safetensors"))
    state = model.state_dict()
    assert saved and all(torch.equal(state[name], value) for name, value in saved.items())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    ids = tokenizer("Kalomi is", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("Kalomi is") and tokenizer.decode(ids) == "Kalomi is"


def test_a_local_directory_sizes_the_slots_from_its_config(tiny_model_dir: Path) -> None:
    spec = Model(base=str(tiny_model_dir), rank=4, slot_capacity=16, target_modules=("q_proj", "v_proj"))
    # 4 heads of 16 and 2 key-value heads: v_proj is 64 -> 32.
    assert spec.module_dims()["q_proj"] == (64, 64) and spec.module_dims()["v_proj"] == (64, 32)
    assert spec.num_layers == 2
    assert spec.copy_bytes() == 4 * 16 * (64 + 32) * 4 * 2
    with pytest.raises(
        ValueError, match="exceeds the input width 64 of 'q_proj'; allowed: slot_capacity <= 16"
    ):
        Model(base=str(tiny_model_dir), rank=4, slot_capacity=17)


def test_smollm2_slots_follow_its_width() -> None:
    spec = Model(base="smollm2-135m", rank=8, slot_capacity=8, target_modules=("q_proj", "v_proj"))
    assert spec.module_dims()["q_proj"] == (576, 576)
    assert spec.module_dims()["v_proj"] == (576, 192)  # grouped-query attention: 3 kv heads of 64
    assert spec.copy_bytes() == 4 * 8 * (576 + 192) * 8 * 30  # 5.6 MiB per device
    with pytest.raises(ValueError, match="allowed: slot_capacity <= 72 at rank 8"):
        Model(base="smollm2-135m", rank=8, slot_capacity=73)


def _broken(kind: str, tmp_path: Path, model_dir: Path) -> Path:
    target = tmp_path / kind
    if kind == "not_a_directory":
        target.write_text("x")
    elif kind == "no_config":
        target.mkdir()
    elif kind == "not_llama":
        target.mkdir()
        (target / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    elif kind == "pickle_weights":
        save_tiny_model_dir(target, safetensors=False)
    elif kind == "no_tokenizer":
        shutil.copytree(model_dir, target)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (target / name).unlink()
    elif kind == "config_a_list":
        target.mkdir()
        (target / "config.json").write_text("[1, 2]")
    elif kind == "corrupt_weights":
        shutil.copytree(model_dir, target)
        (target / "model.safetensors").write_bytes(b"garbage")
    elif kind == "weights_of_another_model":
        shutil.copytree(model_dir, target)
        save_file({"foo": torch.zeros(2)}, str(target / "model.safetensors"))
    return target


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "model.base: no such model directory"),
        ("not_a_directory", "model.base: not a directory"),
        ("no_config", "model.base: the directory has no config.json"),
        ("not_llama", "lacks intermediate_size, num_hidden_layers, num_attention_heads: not a Llama-style"),
        ("config_a_list", "config.json holds a JSON list, not a model configuration"),
    ],
)
def test_bad_model_directories_fail_validation(
    kind: str, message: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    path = _broken(kind, tmp_path, tiny_model_dir) if kind != "missing" else tmp_path / "missing"
    with pytest.raises(ScenarioError) as err:
        parse_scenario({"name": "x", "model": {"base": str(path)}})
    assert message in str(err.value)
    assert "allowed: 'tiny', 'smollm2-135m', or a local Hugging Face causal-LM directory" in str(err.value)


@pytest.mark.parametrize(
    ("kind", "message", "loader"),
    [
        (
            "pickle_weights",
            "the weights are pickle files (pytorch_model.bin), which are not loaded",
            check_local,
        ),
        ("no_tokenizer", "the directory holds no tokenizer", check_local),
        (
            "corrupt_weights",
            "transformers cannot load it: SafetensorError: Error while deserializing header",
            load_local,
        ),
        # transformers would start every tensor from random values and say nothing.
        (
            "weights_of_another_model",
            "its weight files lack 21 of the model's tensors (lm_head.weight, ",
            load_local,
        ),
    ],
    ids=["pickle_weights", "no_tokenizer", "corrupt_weights", "weights_of_another_model"],
)
def test_directories_that_cannot_be_loaded_safely_are_refused(
    kind: str, message: str, loader: Any, tmp_path: Path, tiny_model_dir: Path
) -> None:
    path = _broken(kind, tmp_path, tiny_model_dir)
    with pytest.raises(ScenarioError, match=r"^model\.base: ") as err:
        loader(str(path))
    assert message in str(err.value)


def test_a_model_without_llama_style_projections_is_refused_before_training(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from transformers import Phi3Config, Phi3ForCausalLM

    from cosim.learning.learner import SlotLearner

    # Phi-3 fuses q, k and v into qkv_proj and gate and up into gate_up_proj.
    phi3 = tmp_path / "phi3"
    phi3.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, phi3 / name)
    config = Phi3Config(
        vocab_size=258, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=257, bos_token_id=256, eos_token_id=257,
    )  # fmt: skip
    Phi3ForCausalLM(config).save_pretrained(phi3)
    spec = parse_scenario(
        {"name": "x", "model": {"base": str(phi3), "rank": 4, "target_modules": ["q_proj", "o_proj"]}}
    )
    with pytest.raises(ScenarioError) as err:
        SlotLearner(
            model=spec.model, data=spec.data, training=spec.training,
            device_ids=spec.device_ids, leavers=spec.leavers, newcomers=spec.newcomers,
        )  # fmt: skip
    assert str(err.value) == (
        f"model.target_modules: the model {str(phi3)!r} (model_type 'phi3') has no linear layers named "
        "q_proj in its blocks; cosim adapts Llama-style models (q_proj, k_proj, v_proj, o_proj, gate_proj, "
        "up_proj, down_proj in model.layers); allowed: those of them it has (o_proj, down_proj)"
    )


def test_relative_model_paths_start_at_the_scenario_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "tiny")
    (tmp_path / "s").mkdir()
    raw = {"name": "x", "model": {"base": "../models/tiny", "rank": 4, "slot_capacity": 8}}
    spec = parse_scenario(raw, base_dir=tmp_path / "s")
    assert spec.model.base == str((tmp_path / "models" / "tiny").resolve())


# --------------------------------------------------------------------------- SmolLM2 (slow)


@pytest.mark.slow
def test_smollm2_gguf_and_its_safetensors_cache_give_the_same_logits(smollm2_gguf_loaded) -> None:
    """The cache holds the dequantized float32 weights: logits agree to 1e-5 (in practice exactly)."""
    from cosim.learning.bases import smollm2_directory

    gguf_model, gguf_tokenizer = smollm2_gguf_loaded
    directory = smollm2_directory(loaded=smollm2_gguf_loaded)
    cached_model, cached_tokenizer = load_local(str(directory))
    text = "The capital of France is"
    ids = gguf_tokenizer(text, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, cached_tokenizer(text, return_tensors="pt")["input_ids"])
    with torch.no_grad():
        a = gguf_model(input_ids=ids).logits
        b = cached_model(input_ids=ids).logits
    assert a.shape == (1, ids.shape[1], 49152)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)
    assert gguf_tokenizer.decode(int(a[0, -1].argmax())) == cached_tokenizer.decode(int(b[0, -1].argmax()))
