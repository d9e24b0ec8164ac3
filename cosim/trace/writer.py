"""The one writer of a run's outputs: Parquet tables and the manifest."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cosim.trace.schema import TABLES

__all__ = ["TraceWriter", "package_versions"]

_PACKAGES = ("cosim", "torch", "transformers", "peft", "simpy", "numpy", "pandas", "pyarrow", "pydantic")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class TraceWriter:
    """Collects rows per table and writes them as Parquet with the fixed schema.

    Rows are written in the order they were added; the same rows give the same
    bytes.  Wall-clock figures go to the manifest only.
    """

    def __init__(self, out_dir: Path, manifest: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        self.manifest = dict(manifest)
        self._wall_start = time.time()

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            (self.out_dir / f"{name}.parquet").unlink(missing_ok=True)
        self.manifest.update(
            status="running",
            versions=package_versions(),
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._wall_start)),
        )
        self._write_manifest()

    def add(self, table: str, **row: Any) -> None:
        self.rows[table].append(row)

    def finish(self, status: str, **extra: Any) -> None:
        """Write every table and the manifest with its final status."""
        for name, cols in TABLES.items():
            schema = pa.schema([(col, dtype) for col, dtype, _ in cols])
            data = {col: [row.get(col) for row in self.rows[name]] for col, _, _ in cols}
            table = pa.Table.from_pydict(data, schema=schema)
            pq.write_table(table, self.out_dir / f"{name}.parquet", compression="zstd")
        self.manifest.update(
            status=status,
            wall_clock_s=round(time.time() - self._wall_start, 3),
            tables={name: len(rows) for name, rows in self.rows.items()},
            **extra,
        )
        self._write_manifest()

    def _write_manifest(self) -> None:
        path = self.out_dir / "manifest.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, path)
