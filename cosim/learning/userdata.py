"""The user's own data: a local JSON/JSONL/CSV/Parquet file, partitioned over the devices.

The file is read with Hugging Face ``datasets`` (the ``json``, ``csv`` and
``parquet`` builders, no hub).  Each row is one example: a ``prompt`` and the
``response`` to learn, or one ``text``.  The rows are dealt to the devices
(:func:`iid_partition`, :func:`column_partition`, :func:`dirichlet_partition`);
each device then holds out ``test_fraction`` of its rows.  Evaluation splits:

* ``retain``: training rows of the devices that are there from the start and stay;
* ``forget``: training rows of the devices that leave (the data to unlearn);
* ``newcomer``: training rows of the devices that join;
* ``test``: every device's held-out rows.

Every problem with the file (format, missing column, a device left without rows)
is a :class:`~cosim.scenario.ScenarioError` naming ``data.file`` and the fix.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cosim.scenario import FileData, ScenarioError

__all__ = [
    "Examples",
    "FileSplits",
    "column_partition",
    "dirichlet_partition",
    "iid_partition",
    "load_examples",
    "split_examples",
]


@dataclass(frozen=True)
class Examples:
    """The file's rows: ``prompts[i]`` (empty for whole texts) and the text to learn ``targets[i]``."""

    prompts: list[str]
    targets: list[str]
    labels: np.ndarray | None  # the label column, for partition=dirichlet
    groups: np.ndarray | None  # the device column, for partition=column

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class FileSplits:
    """Row indices: each device's training rows and the evaluation splits."""

    train: dict[int, np.ndarray]
    splits: dict[str, np.ndarray]


# --------------------------------------------------------------------------- partitions (pure)


def iid_partition(n_rows: int, n_devices: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded shuffle dealt round-robin: device shares differ by at most one row."""
    order = rng.permutation(n_rows)
    return [np.sort(order[k::n_devices]) for k in range(n_devices)]


def column_partition(values: Sequence[object] | np.ndarray, n_devices: int) -> list[np.ndarray]:
    """Device ``k`` gets the rows whose value is the ``k``-th distinct value (sorted)."""
    values = np.asarray(values)
    distinct = sorted(set(values.tolist()))
    if len(distinct) != n_devices:
        shown = ", ".join(repr(v) for v in distinct[:8]) + (", ..." if len(distinct) > 8 else "")
        raise ValueError(
            f"the column has {len(distinct)} distinct values ({shown}) but there are {n_devices} "
            "devices; it needs exactly one value per device"
        )
    return [np.flatnonzero(values == v) for v in distinct]


def dirichlet_partition(
    labels: Sequence[object] | np.ndarray, n_devices: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Label-skewed non-IID shares: for each label, device shares ``q ~ Dirichlet(alpha 1_K)``.

    The rows of each label (in seeded random order) are cut at the cumulative shares,
    so device ``k`` gets ``floor`` -rounded ``q_k n_label`` rows of that label; each
    share then has mean ``1/K`` and variance ``(1/K)(1 - 1/K) / (K alpha + 1)``.
    """
    labels = np.asarray(labels)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_devices)]
    for label in sorted(set(labels.tolist())):
        rows = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(n_devices, alpha))
        cuts = np.floor(np.cumsum(shares)[:-1] * len(rows)).astype(int)
        for k, chunk in enumerate(np.split(rows, cuts)):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


# --------------------------------------------------------------------------- the file


def _columns_needed(spec: FileData) -> list[tuple[str, str]]:
    """The columns the scenario names, each with the ``data.file`` field that names it."""
    fields = ["text_field"] if spec.text_field else ["prompt_field", "response_field"]
    fields += {"column": ["device_column"], "dirichlet": ["label_column"]}.get(spec.partition, [])
    return [(field, getattr(spec, field)) for field in fields]


def _parquet_rows(path: str) -> int | None:
    """Rows of a Parquet file by its footer (None when it has none: ``datasets`` says why)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # not Parquet, or unreadable: reported when datasets reads it
        return None


def _unreadable(err: BaseException, file_format: str) -> str:
    """What ``datasets`` could not read, from the innermost of its chained errors."""
    chain = [err]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(cause)
    if any(isinstance(e, UnicodeDecodeError) for e in chain):
        return "not UTF-8 text; save the file as UTF-8"
    if any("corresponds to no data" in str(e) for e in chain):
        return "the file holds no rows"
    innermost = next((e for e in reversed(chain) if str(e).strip()), chain[-1])
    first = str(innermost).strip().splitlines()[0] if str(innermost).strip() else type(innermost).__name__
    return (
        f"cannot be read as {file_format} ({type(innermost).__name__}: {first}); allowed: JSON (an "
        "array or one object per line), CSV with a header row, or Parquet"
    )


def load_examples(spec: FileData) -> Examples:
    """Read the file with ``datasets`` and check the columns the scenario names."""
    import datasets

    datasets.disable_progress_bars()
    # A file it cannot read is reported below, as one message; its own error log would repeat it.
    datasets.logging.set_verbosity(logging.CRITICAL + 1)
    where = f"data.file.path: {spec.path!r}"
    if Path(spec.path).is_file() and Path(spec.path).stat().st_size == 0:
        raise ScenarioError(f"{where}: the file is empty; it needs a row per example")
    if spec.resolved_format == "parquet" and _parquet_rows(spec.path) == 0:
        raise ScenarioError(f"{where}: the file holds no rows")
    try:
        # CSV cells are text: keep a text column's "0" or "007" as written, not as a number.
        text_columns = [c for f, c in _columns_needed(spec) if f.endswith("_field")]
        # Not NA either: only an empty cell of another column is a missing value.
        others = [c for f, c in _columns_needed(spec) if not f.endswith("_field")]
        extra = (
            {
                "converters": dict.fromkeys(text_columns, str),
                "keep_default_na": False,
                "na_values": {c: [""] for c in others},
            }
            if spec.resolved_format == "csv"
            else {}
        )
        table = datasets.load_dataset(spec.resolved_format, data_files=spec.path, split="train", **extra)
    except Exception as err:  # datasets raises many kinds for an unreadable file
        raise ScenarioError(f"{where}: {_unreadable(err, spec.resolved_format)}") from None
    if len(table) == 0:
        raise ScenarioError(f"{where}: the file holds no rows")
    missing = [(f, c) for f, c in _columns_needed(spec) if c not in table.column_names]
    if missing:
        named = ", ".join(f"{c!r} (data.file.{f})" for f, c in missing)
        raise ScenarioError(
            f"{where}: missing column(s) {named}; the file has: {', '.join(table.column_names)} "
            "(set each field named to one of these)"
        )

    def column(name: str) -> list[Any]:
        try:
            return list(table[name])  # text is decoded here, not when the file was read
        except UnicodeDecodeError as err:
            raise ScenarioError(
                f"{where}: column {name!r} is not UTF-8 text ({err}); save the file as UTF-8"
            ) from None

    def text_column(name: str) -> list[str]:
        values = column(name)
        bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
        if bad:
            raise ScenarioError(
                f"{where}: column {name!r} must hold text; row {bad[0]} holds {values[bad[0]]!r}"
            )
        return list(values)

    if spec.text_field:
        prompts, targets = [""] * len(table), text_column(spec.text_field)
    else:
        prompts, targets = text_column(spec.prompt_field), text_column(spec.response_field)
    empty = [i for i, t in enumerate(targets) if not t.strip()]
    if empty:
        raise ScenarioError(f"{where}: row {empty[0]} has nothing to learn (an empty response or text)")

    def raw(name: str | None) -> np.ndarray | None:
        if name is None:
            return None
        values = column(name)
        if any(v is None for v in values):
            raise ScenarioError(f"{where}: column {name!r} has empty cells; every row needs a value")
        return np.asarray(values)

    labels = raw(spec.label_column) if spec.partition == "dirichlet" else None
    groups = raw(spec.device_column) if spec.partition == "column" else None
    return Examples(prompts=prompts, targets=targets, labels=labels, groups=groups)


def split_examples(
    spec: FileData,
    examples: Examples,
    *,
    device_ids: Sequence[int],
    leavers: set[int],
    newcomers: set[int],
) -> FileSplits:
    """Deal the rows to the devices and derive the training rows and evaluation splits."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0xDA7A]))
    n_dev = len(device_ids)
    if spec.partition == "iid":
        parts = iid_partition(len(examples), n_dev, rng)
    elif spec.partition == "column":
        assert examples.groups is not None
        try:
            parts = column_partition(examples.groups, n_dev)
        except ValueError as err:
            raise ScenarioError(f"data.file.device_column: {spec.device_column!r}: {err}") from None
    else:
        assert examples.labels is not None
        parts = dirichlet_partition(examples.labels, n_dev, spec.dirichlet_alpha, rng)
    train: dict[int, np.ndarray] = {}
    held: dict[int, np.ndarray] = {}
    for d, rows in zip(device_ids, parts, strict=True):
        rows = rng.permutation(rows)
        n_test = int(np.floor(spec.test_fraction * len(rows)))
        train[d], held[d] = np.sort(rows[n_test:]), np.sort(rows[:n_test])
        if len(train[d]) == 0:
            raise ScenarioError(
                f"data.file.partition: device {d} gets no training rows ({len(rows)} rows in all) under "
                f"partition {spec.partition!r} of {len(examples)} rows over {n_dev} devices; use more rows, "
                "fewer devices, a larger dirichlet_alpha or a smaller test_fraction"
            )

    def cap(rows: np.ndarray) -> np.ndarray:
        if len(rows) <= spec.max_eval_examples:
            return rows
        return np.sort(rng.choice(rows, size=spec.max_eval_examples, replace=False))

    def pool(devices: list[int], source: dict[int, np.ndarray]) -> np.ndarray:
        chosen = [source[d] for d in devices]
        return cap(np.sort(np.concatenate(chosen))) if chosen else np.zeros(0, dtype=np.int64)

    if spec.test_fraction > 0 and not any(len(h) for h in held.values()):
        most = max(len(train[d]) + len(held[d]) for d in device_ids)
        # The smallest fraction of three decimals that leaves a test row on the largest device.
        smallest = next((k / 1000 for k in range(1, 1000) if math.floor(k / 1000 * most) >= 1), None)
        fix = f" or a test_fraction of at least {smallest:g}" if most > 1 and smallest is not None else ""
        raise ScenarioError(
            f"data.file.test_fraction: {spec.test_fraction:g} of each device's rows (at most {most}) "
            f"rounds down to no test row on any device; use more rows{fix} (or 0 for no test split)"
        )
    stayers = [d for d in device_ids if d not in leavers and d not in newcomers]
    splits = {
        "retain": pool(stayers, train),
        "forget": pool([d for d in device_ids if d in leavers], train),
        "test": pool(list(device_ids), held),
        "newcomer": pool([d for d in device_ids if d in newcomers], train),
    }
    return FileSplits(train=train, splits={k: v for k, v in splits.items() if len(v)})
