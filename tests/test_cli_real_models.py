"""Real models and user data on the command line: bad model directories and datasets exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import save_tiny_model_dir
from tests.test_cli import assert_user_error, invoke

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "scenarios" / "real" / "profiles_dirichlet.yaml"


def _pickled(tmp_path: Path) -> Path:
    return save_tiny_model_dir(tmp_path / "pickled", safetensors=False)


def _no_tokenizer(tmp_path: Path, model_dir: Path) -> Path:
    target = tmp_path / "no-tokenizer"
    shutil.copytree(model_dir, target)
    (target / "tokenizer.json").unlink()
    return target


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("pickled", ["model.base: the weights are pickle files (pytorch_model.bin), which are not loaded"]),
        ("no_tokenizer", ["model.base: the directory holds no tokenizer"]),
        (
            "missing_column",
            [
                "data.file.path:",
                "missing column(s) 'question' (data.file.prompt_field); "
                "the file has: prompt, response, topic",
            ],
        ),
        ("empty_device", ["data.file.partition: device 3 gets no training rows"]),
        ("wrong_format", ["data.file.path:", "cannot be read as parquet"]),
    ],
)
def test_bad_models_and_datasets_exit_2(
    case: str, fragments: list[str], command: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    overrides = [f"model.base={tiny_model_dir}", "model.rank=4"]
    if case == "pickled":
        overrides[0] = f"model.base={_pickled(tmp_path)}"
    elif case == "no_tokenizer":
        overrides[0] = f"model.base={_no_tokenizer(tmp_path, tiny_model_dir)}"
    elif case == "missing_column":
        overrides.append("data.file.prompt_field=question")
    elif case == "empty_device":
        few = tmp_path / "few.jsonl"
        few.write_text("".join(json.dumps({"prompt": f"q{i}", "response": "a"}) + "\n" for i in range(3)))
        overrides += [f"data.file.path={few}", "data.file.partition=iid"]
    elif case == "wrong_format":
        bad = tmp_path / "data.parquet"
        bad.write_text("not parquet")
        overrides.append(f"data.file.path={bad}")
    out = tmp_path / "out"
    args = [command, PROFILES, *[a for o in overrides for a in ("--set", o)]]
    result = invoke(*args, *(["--out", out] if command == "run" else []))
    assert_user_error(result, fragments)
    assert not out.exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_user_data_on_the_tiny_model_exits_2(command: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(
        command, PROFILES, "--set", "model.base=tiny", *(["--out", out] if command == "run" else [])
    )
    assert_user_error(
        result, ["data.task: 'file' needs a pretrained base model with a tokenizer (got model.base 'tiny')"]
    )
    assert not out.exists()


def test_user_data_validates_on_a_local_model(tiny_model_dir: Path) -> None:
    result = invoke("validate", PROFILES, "--set", f"model.base={tiny_model_dir}", "--set", "model.rank=4")
    assert result.exit_code == 0, result.output
    assert "scenario 'profiles_dirichlet', 4 devices" in " ".join(result.stderr.split())
