"""Sweeps: one base scenario, a grid (or list) of overrides and seeds, run in parallel.

A sweep file::

    name: lr_vs_slot
    base: quickstart.yaml            # relative to the sweep file
    seeds: [1, 2, 3]                 # each combination runs once per seed
    grid:                            # every combination of these values ...
      training.learning_rate: [0.001, 0.003]
      network.slot_s: [1.0, 2.5]
    runs:                            # ... or / and an explicit list of override sets
      - {training.rounds: 20}
    set:                             # overrides applied to every run
      training.rounds: 30

Each run is a normal run directory, ``<out>/<run name>/``; a run whose manifest says
``complete`` for the same resolved scenario (same hash) is not run again, so an
interrupted sweep resumes where it stopped.  ``summary.parquet`` gathers one row per
run.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cosim.scenario import (
    NAME_PATTERN,
    Scenario,
    ScenarioError,
    apply_overrides,
    format_validation_error,
    parse_scenario,
    read_yaml,
    scenario_hash,
)

__all__ = [
    "SweepRun",
    "SweepSpec",
    "finished_manifest",
    "load_sweep",
    "plan_sweep",
    "run_status",
    "run_sweep",
]


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    base: str = Field(description="The base scenario file, relative to the sweep file.")
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    grid: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    runs: tuple[dict[str, Any], ...] = ()
    set: dict[str, Any] = Field(default_factory=dict)

    @field_validator("grid")
    @classmethod
    def _axes_have_values(cls, grid: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        if empty := [key for key, values in grid.items() if not values]:
            raise ValueError(f"axis {empty[0]!r} is an empty list; give it at least one value")
        return grid


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its directory name, overrides (``a.b`` -> value) and scenario."""

    name: str
    overrides: dict[str, Any]
    scenario: Scenario


def load_sweep(path: str | Path) -> tuple[SweepSpec, dict[str, Any], Path]:
    """Read a sweep file; returns the spec, the base scenario as a raw mapping and its directory.

    Relative paths inside the base scenario (``model.base``, ``data.file.path``) are taken
    from that directory, as ``cosim run`` takes them from the scenario file's.
    """
    path = Path(path)
    raw = read_yaml(path, "sweep")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError(f"{path}: invalid sweep\n{format_validation_error(err, SweepSpec)}") from None
    base_path = (path.parent / spec.base).resolve()
    if not base_path.is_file():
        raise ScenarioError(f"{path}: base: no such scenario file {base_path}")
    return spec, read_yaml(base_path), base_path.parent


def _combinations(spec: SweepSpec) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(all overrides of a run, the ones that vary and so name it)."""
    keys = list(spec.grid)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*spec.grid.values())]
    listed = list(spec.runs) or [{}]
    for g in grid or [{}]:
        for extra in listed:
            yield {**spec.set, **g, **extra}, {**g, **extra}


def _run_name(varying: dict[str, Any], seed: int) -> str:
    parts = [f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in varying.items()]
    text = "_".join([*parts, f"seed-{seed}"])
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:120]


def plan_sweep(spec: SweepSpec, base: dict[str, Any], base_dir: Path | None = None) -> list[SweepRun]:
    """Every run of the sweep, validated up front (a bad combination fails before anything runs).

    ``base_dir``: where relative paths in the base scenario start (default: the working directory).
    """
    plan: list[SweepRun] = []
    seen: set[str] = set()
    for overrides, varying in _combinations(spec):
        for seed in spec.seeds:
            # default=str: a value YAML read as a date goes on as text, for validation to name
            texts = [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
            texts.append(f"seed={seed}")
            name = _run_name(varying, seed)
            try:
                raw = apply_overrides(base, texts) | {"name": name}
            except ScenarioError as err:  # its message speaks of --set; here the sweep file set it
                raise ScenarioError(
                    f"sweep run {name}: {str(err).replace('--set ', 'override ', 1)}"
                ) from None
            scenario = parse_scenario(raw, source=f"sweep run {name}", base_dir=base_dir)
            if name in seen:
                raise ScenarioError(f"sweep: two runs would share the directory {name!r}")
            seen.add(name)
            plan.append(SweepRun(name, dict(overrides) | {"seed": seed}, scenario))
    return plan


def finished_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The manifest of a finished run in ``run_dir``; None when it is absent, unreadable or unfinished."""
    path = run_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable: not a finished run
        return None
    if not isinstance(manifest, dict) or manifest.get("status") != "complete":
        return None
    return manifest


def run_status(run_dir: Path, scenario: Scenario) -> str:
    """``complete`` (this scenario, finished), ``stale`` (finished, from another version of the
    scenario: a different hash) or ``missing`` (absent or unfinished)."""
    manifest = finished_manifest(run_dir)
    if manifest is None:
        return "missing"
    return "complete" if manifest.get("scenario_hash") == scenario_hash(scenario) else "stale"


def made_by(run_dir: Path) -> str | None:
    """The ``cosim_source`` digest recorded in a run's manifest (None: not recorded)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return (manifest.get("versions") or {}).get("cosim_source")


def _run_one(scenario: Scenario, out_dir: str) -> dict[str, Any]:
    import torch

    from cosim.engine.guard import parent_gone, stopping
    from cosim.engine.simulation import run_scenario

    if parent_gone():  # an orphaned worker takes no more runs from the queue
        raise RuntimeError("the sweep that queued this run has exited")
    if stopping():  # interrupted (Ctrl-C reaches the workers too): no more runs either
        raise RuntimeError("the sweep that queued this run was interrupted")

    torch.set_num_threads(1)  # parallel runs share the cores: one thread each
    return run_scenario(scenario, Path(out_dir))


def run_sweep(
    plan: list[SweepRun],
    out_dir: Path,
    *,
    jobs: int = 1,
    executor: str = "local",
    address: str | None = None,
    on_done: Callable[[SweepRun, str], None] | None = None,
    rerun_outdated: bool = False,
    on_stale: Callable[[list[SweepRun]], None] | None = None,
) -> tuple[list[str], Path]:
    """Run every unfinished run of ``plan`` into ``out_dir``; returns (names run now, summary path).

    ``executor`` is ``local`` (processes on this machine) or ``ray`` (``address`` as
    ``ray.init`` takes it; ``None`` starts a local Ray).  A finished run of the same
    scenario is skipped; one that another version of cosim's source made (its manifest's
    ``cosim_source`` differs from :func:`~cosim.trace.writer.source_digest`, or is not
    recorded) is reported as such in its status, and run again with ``rerun_outdated``.
    ``on_stale`` is told, before anything runs, the complete runs of another version of their
    scenario, which are run again and replaced.
    """
    from cosim.trace.writer import source_digest

    out_dir.mkdir(parents=True, exist_ok=True)
    current = source_digest()
    todo, skipped, stale = [], [], []
    for run in plan:
        run_dir = out_dir / run.name
        status = run_status(run_dir, run.scenario)
        if status != "complete":
            todo.append(run)
            if status == "stale":
                stale.append(run)
            continue
        source = made_by(run_dir)
        if source == current:
            skipped.append((run, "skipped (complete)"))
        elif rerun_outdated:
            todo.append(run)
        else:
            made = "an unrecorded version" if source is None else f"source {source}"
            skipped.append((run, f"skipped (complete; made by {made} of cosim, this is {current})"))
    if stale and on_stale is not None:
        on_stale(stale)
    for run, why in skipped:
        if on_done is not None:
            on_done(run, why)
    if executor == "local":
        _run_local(todo, out_dir, jobs, on_done)
    elif executor == "ray":
        _run_ray(todo, out_dir, address, on_done)
    else:
        raise ValueError(f"unknown executor {executor!r}; allowed: local, ray")
    return [run.name for run in todo], write_summary(plan, out_dir)


def _run_local(
    todo: list[SweepRun], out_dir: Path, jobs: int, on_done: Callable[[SweepRun, str], None] | None
) -> None:
    if not todo:
        return
    import multiprocessing as mp

    from cosim.engine.guard import child_setup

    with ProcessPoolExecutor(
        max_workers=max(1, jobs), mp_context=mp.get_context("spawn"), initializer=child_setup
    ) as pool:
        pending: dict[Future[dict[str, Any]], SweepRun] = {
            pool.submit(_run_one, run.scenario, str(out_dir / run.name)): run for run in todo
        }
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    run = pending.pop(future)
                    status = "complete" if future.exception() is None else f"failed: {future.exception()}"
                    if on_done is not None:
                        on_done(run, status)
        except KeyboardInterrupt:
            # The runs under way are interrupted (and marked so) by the same Ctrl-C; the
            # queued ones are dropped rather than run to the end before the pool closes.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def check_ray_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``; IPv6 hosts in brackets) that nothing
    answers on: ``ray.init`` would retry it for minutes, printing connection warnings."""
    if address is None or address in ("auto", "local"):
        return
    allowed = "allowed: host:port, ray://host:port ([::1]:port for IPv6), auto or local"
    try:
        parts = urlsplit("//" + address.removeprefix("ray://"))
        host, port = parts.hostname, parts.port
    except ValueError as err:  # a port that is not a number or out of range
        raise ScenarioError(f"--address {address}: {err}; {allowed}") from None
    if not host or port is None:
        raise ScenarioError(f"--address {address}: {allowed}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ScenarioError(f"--address {address}: unknown host {host} ({err.strerror})") from None
    family, kind, proto, _, target = infos[0]
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.settimeout(timeout_s)
            probe.connect(target)
    except OSError as err:
        raise ScenarioError(
            f"--address {address}: no Ray cluster answers there ({err.strerror or err}); start one "
            "with `ray start --head`, or leave --address out for a Ray on this machine"
        ) from None


def _run_ray(
    todo: list[SweepRun], out_dir: Path, address: str | None, on_done: Callable[[SweepRun, str], None] | None
) -> None:
    check_ray_address(address)
    try:
        import ray
    except ImportError:
        raise ScenarioError("--executor ray needs Ray: pip install 'ray[default]'") from None
    if not todo:
        return
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_run_one)
        refs = {remote.remote(run.scenario, str(out_dir / run.name)): run for run in todo}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                run = refs.pop(ref)
                try:
                    ray.get(ref)
                    status = "complete"
                except Exception as err:  # a failed run is reported, the sweep goes on
                    status = f"failed: {err}"
                if on_done is not None:
                    on_done(run, status)
    finally:
        if started:
            ray.shutdown()


def write_summary(plan: list[SweepRun], out_dir: Path) -> Path:
    """``summary.parquet``: one row per run with its overrides, status and final figures."""
    import pandas as pd

    rows = []
    for run in plan:
        row: dict[str, Any] = {"run": run.name, **{k: v for k, v in run.overrides.items()}}
        path = out_dir / run.name / "manifest.json"
        manifest = json.loads(path.read_text()) if path.is_file() else {}
        row["status"] = manifest.get("status", "missing")
        summary = manifest.get("summary") or {}
        for split, acc in (summary.get("final_accuracy") or {}).items():
            row[f"final_{split}_accuracy"] = acc
        row["simulated_s"] = summary.get("simulated_s")
        row["bits_sent"] = summary.get("bits_sent")
        row["wall_clock_s"] = manifest.get("wall_clock_s")
        rows.append(row)
    frame = pd.DataFrame(rows)
    path = out_dir / "summary.parquet"
    frame.to_parquet(path, index=False)
    return path
