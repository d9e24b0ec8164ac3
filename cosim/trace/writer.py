"""The one writer of a run's outputs: Parquet tables and the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import time
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cosim.trace.schema import TABLES

__all__ = ["RUN_FILES", "TraceWriter", "package_versions", "same_mode_as", "source_digest"]

RUN_FILES = ("manifest.json", *(f"{name}.parquet" for name in TABLES), "state.json", "state.safetensors")
"""The files a run writes into its directory (the engine writes the two ``state`` files)."""

_PACKAGES = ("cosim", "torch", "transformers", "peft", "simpy", "numpy", "pandas", "pyarrow", "pydantic")


def same_mode_as(path: Path, reference: Path) -> None:
    """Give ``path`` the permission bits of ``reference``, a file just written beside it.

    safetensors writes its files readable by their owner only (0600), so on a shared
    machine a run's state and an exported adapter could not be read by the users who
    can read the rest of the run.  (Reading the umask would mean setting it for a
    moment, which other threads could see.)
    """
    os.chmod(path, stat.S_IMODE(reference.stat().st_mode))


def package_versions() -> dict[str, str]:
    """Python's and the main packages' versions, ``cosim_source`` (:func:`source_digest` of cosim)
    and ``torch_threads``, the threads PyTorch splits its products across.

    The thread count belongs with the versions: a sum split across threads rounds
    differently, and training carries the difference on, so the same scenario and seed
    give identical tables only with the same count.
    """
    import torch

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["cosim_source"] = source_digest()
    out["torch_threads"] = str(torch.get_num_threads())
    return out


@cache
def source_digest(root: Path | None = None) -> str:
    """The first 12 hex digits of a SHA-256 over the ``.py`` files under ``root`` (default: cosim's package).

    Relative paths and contents, in sorted order: the same source gives the same digest
    on any machine, and any edit to it gives another.  The version number alone does not
    change between commits, so this tells runs made by different code apart.
    """
    base = Path(__file__).resolve().parent.parent if root is None else Path(root)
    digest = hashlib.sha256()
    for path in sorted(base.rglob("*.py")):
        digest.update(path.relative_to(base).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


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
