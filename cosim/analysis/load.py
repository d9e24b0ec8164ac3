"""Reading a run directory (``runs/<name>/``) back into pandas.

A run directory holds ``manifest.json`` and one Parquet file per trace table
(docs/trace.md).  :func:`load_run` reads one; :func:`load_runs` stacks one table of
several runs (for instance several seeds of one scenario) with ``run`` and ``seed``
columns.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "TABLE_NAMES",
    "Run",
    "experiment_arguments",
    "experiment_report",
    "load_run",
    "load_runs",
    "one_run_each",
]

TABLE_NAMES = ("rounds", "transfers", "events", "evaluations")


@dataclass(frozen=True)
class Run:
    """One run: its manifest and its four trace tables."""

    path: Path
    manifest: dict[str, Any]
    rounds: pd.DataFrame
    transfers: pd.DataFrame
    events: pd.DataFrame
    evaluations: pd.DataFrame

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def seed(self) -> int | None:
        seed = self.manifest.get("seed")
        return None if seed is None else int(seed)

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def network(self) -> dict[str, Any]:
        """The resolved ``network`` section of the scenario."""
        return dict(self.manifest.get("scenario", {}).get("network", {}))

    @property
    def mac_efficiency(self) -> float:
        """MAC goodput / PHY rate (``network.radio`` for builtin, ``network`` for ns-3)."""
        return float(self._radio_value("mac_efficiency"))

    @property
    def access_delay_s(self) -> float:
        """Fixed per-message delay (``network.radio`` for builtin, ``network`` for ns-3)."""
        return float(self._radio_value("access_delay_s"))

    @property
    def slot_s(self) -> float:
        """A round's deadline after its start: ``network.slot_s``; a pull's after its start too."""
        if "slot_s" not in self.network:
            raise ValueError(f"{self.path}: the manifest's scenario has no network.slot_s")
        return float(self.network["slot_s"])

    def table(self, name: str) -> pd.DataFrame:
        if name not in TABLE_NAMES:
            raise ValueError(f"unknown table {name!r}; allowed: {', '.join(TABLE_NAMES)}")
        frame: pd.DataFrame = getattr(self, name)
        return frame

    def _radio_value(self, key: str) -> Any:
        network = self.network
        for section in (network.get("radio") or {}, network):
            if key in section:
                return section[key]
        raise ValueError(
            f"{self.path}: the manifest's scenario has no network.radio.{key} or network.{key} "
            f"(backend {network.get('backend')!r})"
        )


def load_run(path: str | Path, *, allow_incomplete: bool = False) -> Run:
    """Read the run directory ``path``.

    Raises ``FileNotFoundError`` if ``path`` is not a run directory (no ``manifest.json``
    or a missing table) and ``ValueError`` if the manifest's status is not ``complete``,
    unless ``allow_incomplete`` (an interrupted run still has all its tables).
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    if path.exists() and not path.is_dir():
        raise FileNotFoundError(f"{path}: not a run directory (a file; give the directory that holds it)")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a run directory (no such directory)")
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{path}: not a run directory (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{manifest_path}: not a run manifest (a JSON object expected)")
    status = manifest.get("status")
    if status != "complete" and not allow_incomplete:
        raise ValueError(
            f"{path}: the run is not complete (status {status!r}); read it anyway with "
            "allow_incomplete=True (cosim report --allow-incomplete)"
        )
    missing = [name for name in TABLE_NAMES if not (path / f"{name}.parquet").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path}: not a run directory with a trace (missing {', '.join(f'{m}.parquet' for m in missing)};"
            f" status {status!r})"
        )
    tables = {name: pd.read_parquet(path / f"{name}.parquet") for name in TABLE_NAMES}
    return Run(path=path, manifest=manifest, **tables)


def load_runs(
    paths: Iterable[str | Path], table: str = "evaluations", *, allow_incomplete: bool = False
) -> pd.DataFrame:
    """One ``table`` of every run in ``paths``, stacked, with ``run`` (the directory's name)
    and ``seed`` (from the manifest) as the first two columns."""
    if table not in TABLE_NAMES:
        raise ValueError(f"unknown table {table!r}; allowed: {', '.join(TABLE_NAMES)}")
    frames = []
    for path in paths:
        run = load_run(path, allow_incomplete=allow_incomplete)
        frame = run.table(table).copy()
        frame.insert(0, "seed", run.seed)
        frame.insert(0, "run", run.path.name)
        frames.append(frame)
    if not frames:
        raise ValueError("load_runs: no run directories given")
    return pd.concat(frames, ignore_index=True)


def experiment_arguments(description: str) -> tuple[argparse.ArgumentParser, list[Path]]:
    """An analysis script's command line: ``cosim experiments --out`` directories.

    Exits with status 2, naming them, when any holds no ``results.parquet``.  Returns the
    parser (for the script's own errors) and the directories.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("directories", type=Path, nargs="+", help="cosim experiments --out directories")
    directories = parser.parse_args().directories
    missing = [d for d in directories if not (d / "results.parquet").is_file()]
    if missing:
        names = ", ".join(map(str, missing))
        parser.exit(2, f"error: no results.parquet in {names}; run cosim experiments first\n")
    return parser, directories


def one_run_each(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """``df`` (rows of ``cosim experiments`` results, stacked from several directories) with a
    fresh index; a ``ValueError`` naming the first run whose ``key`` (ending in ``seed``)
    appears twice."""
    twice = df[df.duplicated(key, keep=False)]
    if not twice.empty:
        first = twice.iloc[0]
        named = " ".join(str(first[k]) for k in key[:-1])
        raise ValueError(f"{named} seed {first[key[-1]]} is in more than one directory")
    return df.reset_index(drop=True)


def experiment_report(
    description: str,
    load: Callable[[list[Path]], pd.DataFrame],
    *tables: Callable[[pd.DataFrame], str],
) -> None:
    """An analysis script's whole run: read its directories with ``load`` (a ``ValueError``
    exits with status 2 and the message) and print each table, a blank line between."""
    parser, directories = experiment_arguments(description)
    try:
        df = load(directories)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    with np.errstate(all="ignore"):
        print("\n\n".join(table(df) for table in tables))
