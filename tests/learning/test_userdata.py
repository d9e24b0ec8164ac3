"""User data: loading through datasets, the three partitions, the derived splits, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cosim.learning.userdata import (
    column_partition,
    dirichlet_partition,
    iid_partition,
    load_examples,
    split_examples,
)
from cosim.scenario import FileData, ScenarioError

PROFILES = Path(__file__).resolve().parents[2] / "scenarios" / "data" / "profiles.jsonl"


def _check_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(n))


def test_iid_partition_deals_every_row_once_in_near_equal_shares() -> None:
    parts = iid_partition(103, 4, np.random.default_rng(0))
    _check_disjoint_cover(parts, 103)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    again = iid_partition(103, 4, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_column_partition_gives_each_device_one_value_in_sorted_order() -> None:
    values = np.array(["b", "a", "c", "a", "b", "c", "c"])
    parts = column_partition(values, 3)
    assert [p.tolist() for p in parts] == [[1, 3], [0, 4], [2, 5, 6]]
    with pytest.raises(ValueError, match=r"3 distinct values \('a', 'b', 'c'\) but there are 4 devices"):
        column_partition(values, 4)


@pytest.mark.parametrize("alpha", [0.1, 1.0, 10.0])
def test_dirichlet_shares_have_the_requested_concentration(alpha: float) -> None:
    """Per label, device shares follow Dirichlet(alpha 1_K): mean 1/K, variance (1/K)(1-1/K)/(K alpha+1).

    Over 300 seeds x 5 labels (1500 Dirichlet draws) the moment estimate of alpha,
    ``((1/K)(1-1/K)/var - 1) / K``, is within 12 % of the requested one and the mean
    share within 0.01 of 1/K (both several standard errors; rounding a share to whole
    rows moves it by under 1/1000).
    """
    k, labels_n, per_label = 4, 5, 1000
    labels = np.repeat(np.arange(labels_n), per_label)
    shares = []
    for seed in range(300):
        parts = dirichlet_partition(labels, k, alpha, np.random.default_rng(seed))
        _check_disjoint_cover(parts, len(labels))
        counts = np.array([np.bincount(labels[p], minlength=labels_n) for p in parts])  # (K, labels)
        shares.append(counts / per_label)
    p = np.concatenate(shares, axis=1)  # (K, draws)
    assert abs(p.mean() - 1 / k) < 0.01
    var = p.var(axis=1, ddof=1).mean()
    expected = (1 / k) * (1 - 1 / k) / (k * alpha + 1)
    alpha_hat = ((1 / k) * (1 - 1 / k) / var - 1) / k
    assert var == pytest.approx(expected, rel=0.12)
    assert alpha_hat == pytest.approx(alpha, rel=0.12)


def _spec(**fields: object) -> FileData:
    return FileData.model_validate({"path": str(PROFILES), **fields})


def test_profiles_load_and_split_per_device() -> None:
    spec = _spec(partition="dirichlet", label_column="topic", dirichlet_alpha=0.5, test_fraction=0.25)
    examples = load_examples(spec)
    assert len(examples) == 120
    assert examples.prompts[0] == "The pet of Migaku is a" and examples.targets[0] == "dog"
    parts = split_examples(spec, examples, device_ids=[0, 1, 2, 3], leavers={2}, newcomers={3})
    train = parts.train
    held = sorted(set(range(120)) - set(np.concatenate(list(train.values())).tolist()))
    assert np.array_equal(parts.splits["test"], held)
    assert np.array_equal(parts.splits["forget"], train[2])
    assert np.array_equal(parts.splits["newcomer"], train[3])
    assert np.array_equal(parts.splits["retain"], np.sort(np.concatenate([train[0], train[1]])))


def test_max_eval_examples_caps_every_split() -> None:
    spec = _spec(max_eval_examples=5)
    parts = split_examples(spec, load_examples(spec), device_ids=[0, 1, 2], leavers={1}, newcomers=set())
    assert {name: len(rows) for name, rows in parts.splits.items()} == {"retain": 5, "forget": 5, "test": 5}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"prompt_field": "question"},
            "missing column(s) 'question' (data.file.prompt_field); the file has: prompt, response, topic",
        ),
        (
            {"partition": "dirichlet", "label_column": "label"},
            "missing column(s) 'label' (data.file.label_column)",
        ),
    ],
)
def test_file_problems_name_the_fix(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=r"data\.file\.path: .*") as err:
        load_examples(_spec(**fields))
    assert message in str(err.value)


def test_a_file_in_the_wrong_format_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_text('{"prompt": "q", "response": "a"}\n')
    with pytest.raises(ScenarioError, match=r"data\.file\.path: .*cannot be read as parquet"):
        load_examples(FileData.model_validate({"path": str(path)}))


def _write(path: Path, content: str | bytes) -> Path:
    if path.suffix == ".parquet":
        import pandas as pd

        pd.DataFrame({"prompt": pd.Series([], dtype=str), "response": pd.Series([], dtype=str)}).to_parquet(
            path
        )
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("latin1.jsonl", '{"prompt": "caf\xe9", "response": "a"}\n'.encode("latin-1"), "is not UTF-8 text"),
        (
            "latin1.csv",
            "prompt,response\ncaf\xe9,a\n".encode("latin-1"),
            "not UTF-8 text; save the file as UTF-8",
        ),
        ("empty.jsonl", "", "the file is empty; it needs a row per example"),
        ("header.csv", "prompt,response\n", "the file holds no rows"),
        ("array.json", "[]", "the file holds no rows"),
        ("none.parquet", "", "the file holds no rows"),
    ],
)
def test_unreadable_and_empty_files_say_why(
    tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = _write(tmp_path / name, content)
    with pytest.raises(ScenarioError, match=r"data\.file\.path: ") as err:
        load_examples(FileData.model_validate({"path": str(path)}))
    assert message in str(err.value)


def test_a_device_left_without_rows_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": "a"}) + "\n" for i in range(3)))
    spec = FileData.model_validate({"path": str(path)})
    with pytest.raises(ScenarioError, match=r"data\.file\.partition: device 3 gets no training rows"):
        split_examples(spec, load_examples(spec), device_ids=[0, 1, 2, 3], leavers=set(), newcomers=set())


def test_wrong_suffix_and_contradictions_are_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="cannot tell the format of"):
        FileData.model_validate({"path": str(path)})
    with pytest.raises(ValueError, match="partition 'column' needs device_column"):
        _spec(partition="column")


def test_a_test_fraction_that_leaves_no_test_row_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": "a"}) + "\n" for i in range(6)))
    spec = FileData.model_validate({"path": str(path)})  # test_fraction 0.2 of 2 rows each: 0
    with pytest.raises(ScenarioError) as err:
        split_examples(spec, load_examples(spec), device_ids=[0, 1, 2], leavers=set(), newcomers=set())
    assert str(err.value) == (
        "data.file.test_fraction: 0.2 of each device's rows (at most 2) rounds down to no test row on any "
        "device; use more rows or a test_fraction of at least 0.5 (or 0 for no test split)"
    )
    spec = FileData.model_validate({"path": str(path), "test_fraction": 0.5})
    parts = split_examples(spec, load_examples(spec), device_ids=[0, 1, 2], leavers=set(), newcomers=set())
    assert len(parts.splits["test"]) == 3


def test_csv_text_columns_keep_numbers_as_written(tmp_path: Path) -> None:
    path = tmp_path / "numbers.csv"
    path.write_text("prompt,response\nagent,007\nanswer,42\n")
    examples = load_examples(FileData.model_validate({"path": str(path)}))
    assert examples.targets == ["007", "42"]
    path.write_text("prompt,response\nwhat is missing,NA\nnothing,null\n")
    assert load_examples(FileData.model_validate({"path": str(path)})).targets == ["NA", "null"]
    path.write_text("prompt,response\nsilence,\n")
    with pytest.raises(ScenarioError, match="row 0 has nothing to learn"):
        load_examples(FileData.model_validate({"path": str(path)}))


def test_a_suggested_test_fraction_leaves_a_test_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": "a"}) + "\n" for i in range(147)))
    spec = FileData.model_validate({"path": str(path), "test_fraction": 0.01})  # 49 rows each: 0
    with pytest.raises(ScenarioError, match=r"a test_fraction of at least 0.021 \(or 0") as err:
        split_examples(spec, load_examples(spec), device_ids=[0, 1, 2], leavers=set(), newcomers=set())
    assert "(at most 49)" in str(err.value)
    spec = FileData.model_validate({"path": str(path), "test_fraction": 0.021})
    parts = split_examples(spec, load_examples(spec), device_ids=[0, 1, 2], leavers=set(), newcomers=set())
    assert len(parts.splits["test"]) == 3
