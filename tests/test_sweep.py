"""Sweeps: the plan, parallel local runs equal to single runs, resume, the summary table."""

from __future__ import annotations

import datetime
import json
import re
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from cosim.engine.simulation import run_scenario
from cosim.scenario import ScenarioError
from cosim.sweep import check_ray_address, load_sweep, plan_sweep, run_status, run_sweep

TABLES = ("rounds", "transfers", "events", "evaluations")


@pytest.fixture
def sweep_file(tmp_path: Path, tiny_scenario: dict[str, Any]) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_scenario | {"training": {"rounds": 2}}))
    sweep = {
        "name": "small",
        "base": "base.yaml",
        "seeds": [1, 2],
        "grid": {"training.local_steps": [1, 2]},
        "set": {"devices.count": 3},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_the_plan_is_the_grid_times_the_seeds(sweep_file: Path) -> None:
    spec, base, base_dir = load_sweep(sweep_file)
    plan = plan_sweep(spec, base, base_dir)
    assert [(r.overrides["training.local_steps"], r.overrides["seed"]) for r in plan] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert all(r.scenario.devices.count == 3 for r in plan)
    assert [r.scenario.seed for r in plan] == [1, 2, 1, 2]
    assert len({r.name for r in plan}) == 4


def test_relative_paths_in_the_base_scenario_start_at_its_directory(
    tmp_path: Path, tiny_scenario: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenarios = tmp_path / "scenarios"
    (scenarios / "sweeps").mkdir(parents=True)
    (scenarios / "data").mkdir()
    (scenarios / "data" / "facts.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    base = tiny_scenario | {"data": {"task": "file", "file": {"path": "data/facts.jsonl"}}}
    (scenarios / "base.yaml").write_text(yaml.safe_dump(base))
    (scenarios / "sweeps" / "s.yaml").write_text(
        yaml.safe_dump({"name": "s", "base": "../base.yaml", "seeds": [1]})
    )
    monkeypatch.chdir(tmp_path)  # neither the base's directory nor the sweep's
    spec, raw, base_dir = load_sweep(scenarios / "sweeps" / "s.yaml")
    [run] = plan_sweep(spec, raw, base_dir)
    assert run.scenario.data.file is not None
    assert run.scenario.data.file.path == str((scenarios / "data" / "facts.jsonl").resolve())


def test_a_bad_combination_fails_before_anything_runs(sweep_file: Path) -> None:
    spec, base, _ = load_sweep(sweep_file)
    bad = spec.model_copy(update={"grid": {"training.local_steps": [1, -3]}})
    with pytest.raises(ScenarioError, match=r"training\.local_steps"):
        plan_sweep(bad, base)


def test_a_grid_value_yaml_reads_as_a_date_is_named_not_a_crash(sweep_file: Path) -> None:
    spec, base, _ = load_sweep(sweep_file)
    dated = spec.model_copy(update={"grid": {"data.seed": [datetime.date(2024, 1, 1)]}})
    with pytest.raises(ScenarioError, match=r"data\.seed: Input should be a valid integer.*2024-01-01"):
        plan_sweep(dated, base)


@pytest.mark.parametrize(
    ("sweep", "base", "message"),
    [
        (
            "name: s\nbase: base.yaml\ngrid: {training.rounds: []}\n",
            None,
            "invalid sweep\ngrid: axis 'training.rounds' is an empty list; give it at least one value",
        ),
        (
            "name: s\nbase: base.yaml\nbogus: 1\nseeds: [a]\n",
            None,
            "invalid sweep\nseeds.0: Input should be a valid integer, unable to parse string as an integer "
            "(got 'a')\nbogus: unknown field; allowed: name, base, seeds, grid, runs, set (got 1)",
        ),
        ("name: s\nname: t\nbase: base.yaml\n", None, "duplicate key 'name' (first given at line 1)"),
        ("- name: s\n", None, "the top level must be a mapping (name, base, ...), got list"),
        ("name: s\nbase: bad.yaml\n", "name: [x\n", "bad.yaml: malformed YAML at line 2, column 1"),
        ("name: s\nbase: bad.yaml\n", b"\xff\xfe\x00", "bad.yaml: not a text file (UTF-8 expected)"),
        ("name: s\nbase: bad.yaml\n", "", "bad.yaml: the file is empty; a scenario needs at least 'name'"),
        (
            "name: s\nbase: base.yaml\ngrid: {training.rounds.x: [1]}\n",
            None,
            "sweep run x-1_seed-0: override 'training.rounds.x=1': training.rounds is a value, not a section",
        ),
    ],
    ids=[
        "empty-axis",
        "fields",
        "duplicate-key",
        "not-a-mapping",
        "base-malformed",
        "base-binary",
        "base-empty",
        "grid-path",
    ],
)
def test_a_bad_sweep_file_is_a_scenario_error(
    tmp_path: Path, tiny_scenario: dict[str, Any], sweep: str, base: str | bytes | None, message: str
) -> None:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_scenario))
    if isinstance(base, bytes):
        (tmp_path / "bad.yaml").write_bytes(base)
    elif base is not None:
        (tmp_path / "bad.yaml").write_text(base)
    (tmp_path / "sweep.yaml").write_text(sweep)
    with pytest.raises(ScenarioError) as err:
        spec, raw, base_dir = load_sweep(tmp_path / "sweep.yaml")
        plan_sweep(spec, raw, base_dir)
    assert message in str(err.value)


@pytest.mark.parametrize("text", ["{bad", "[]", '{"status": "complete"'])
def test_an_unreadable_manifest_is_not_a_finished_run(sweep_file: Path, tmp_path: Path, text: str) -> None:
    spec, base, base_dir = load_sweep(sweep_file)
    run = plan_sweep(spec, base, base_dir)[0]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(text)
    assert run_status(tmp_path / "run", run.scenario) == "missing"


def test_parallel_runs_equal_single_runs_and_resume(sweep_file: Path, tmp_path: Path) -> None:
    spec, base, base_dir = load_sweep(sweep_file)
    plan = plan_sweep(spec, base, base_dir)
    out = tmp_path / "out"
    ran, summary = run_sweep(plan, out, jobs=2)
    assert sorted(ran) == sorted(r.name for r in plan)
    # A run of the sweep is the same run as the scenario played alone.
    single = tmp_path / "single"
    run_scenario(plan[1].scenario, single)
    for table in TABLES:
        assert (out / plan[1].name / f"{table}.parquet").read_bytes() == (
            single / f"{table}.parquet"
        ).read_bytes()
    frame = pd.read_parquet(summary)
    assert list(frame["run"]) == [r.name for r in plan]
    assert set(frame["status"]) == {"complete"}
    manifest = json.loads((out / plan[2].name / "manifest.json").read_text())
    assert frame.loc[2, "final_test_accuracy"] == manifest["summary"]["final_accuracy"]["test"]
    # Resume: only the run whose manifest is not complete runs again.
    (out / plan[3].name / "manifest.json").unlink()
    before = (out / plan[0].name / "rounds.parquet").stat().st_mtime_ns
    ran, _ = run_sweep(plan, out, jobs=2)
    assert ran == [plan[3].name]
    assert (out / plan[0].name / "rounds.parquet").stat().st_mtime_ns == before


def test_ray_in_local_mode_gives_the_same_runs(sweep_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    spec, base, base_dir = load_sweep(sweep_file)
    plan = plan_sweep(spec, base, base_dir)[:2]
    local, ray_dir = tmp_path / "local", tmp_path / "ray"
    run_sweep(plan, local, jobs=2)
    ran, summary = run_sweep(plan, ray_dir, executor="ray")
    assert sorted(ran) == sorted(r.name for r in plan)
    for run in plan:
        for table in TABLES:
            assert (ray_dir / run.name / f"{table}.parquet").read_bytes() == (
                local / run.name / f"{table}.parquet"
            ).read_bytes()
    assert set(pd.read_parquet(summary)["status"]) == {"complete"}


def _first_runs_made(sweep_file: Path, out: Path, n: int) -> tuple[list[Any], Path, dict[str, Any]]:
    """Make the first ``n`` runs of the sweep in ``out``; the plan, the first manifest's path and it."""
    spec, base, base_dir = load_sweep(sweep_file)
    plan = plan_sweep(spec, base, base_dir)[:n]
    run_sweep(plan, out)
    path = out / plan[0].name / "manifest.json"
    return plan, path, json.loads(path.read_text())


def test_a_run_made_by_other_source_is_reported_and_rerun_on_request(
    sweep_file: Path, tmp_path: Path
) -> None:
    from cosim.trace.writer import source_digest

    out = tmp_path / "out"
    plan, path, manifest = _first_runs_made(sweep_file, out, 1)
    assert manifest["versions"]["cosim_source"] == source_digest()
    assert manifest["versions"]["torch_threads"] == "1"  # a sweep runs each run on one thread

    statuses: list[str] = []
    ran, _ = run_sweep(plan, out, on_done=lambda run, status: statuses.append(status))
    assert ran == [] and statuses == ["skipped (complete)"]

    manifest["versions"]["cosim_source"] = "000000000000"
    path.write_text(json.dumps(manifest))
    statuses.clear()
    ran, _ = run_sweep(plan, out, on_done=lambda run, status: statuses.append(status))
    assert ran == []
    assert statuses == [
        f"skipped (complete; made by source 000000000000 of cosim, this is {source_digest()})"
    ]

    del manifest["versions"]["cosim_source"]  # runs made before the digest was recorded
    path.write_text(json.dumps(manifest))
    statuses.clear()
    run_sweep(plan, out, on_done=lambda run, status: statuses.append(status))
    assert statuses[0].startswith("skipped (complete; made by an unrecorded version of cosim")

    ran, _ = run_sweep(plan, out, rerun_outdated=True)
    assert ran == [plan[0].name]
    assert json.loads(path.read_text())["versions"]["cosim_source"] == source_digest()


def test_source_digest_follows_the_files(tmp_path: Path) -> None:
    from cosim.trace.writer import source_digest

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    (tmp_path / "notes.txt").write_text("not source")
    first = source_digest(tmp_path)
    assert len(first) == 12 and int(first, 16) >= 0
    source_digest.cache_clear()
    assert source_digest(tmp_path) == first  # the same files, the same digest
    (tmp_path / "notes.txt").write_text("changed")
    source_digest.cache_clear()
    assert source_digest(tmp_path) == first  # only .py files count
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    source_digest.cache_clear()
    edited = source_digest(tmp_path)
    assert edited != first
    (tmp_path / "pkg" / "a.py").rename(tmp_path / "pkg" / "c.py")
    source_digest.cache_clear()
    assert source_digest(tmp_path) not in (first, edited)  # a renamed file changes it too


def test_the_versions_record_the_torch_thread_count() -> None:
    import torch

    from cosim.trace.writer import package_versions

    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert package_versions()["torch_threads"] == str(threads)
    finally:
        torch.set_num_threads(before)


def test_a_run_of_another_version_of_its_scenario_is_named_then_run_again(
    sweep_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    plan, path, manifest = _first_runs_made(sweep_file, out, 2)
    # The first run's manifest now says another scenario made it (as after editing the base).
    path.write_text(json.dumps({**manifest, "scenario_hash": "another"}))
    told: list[list[str]] = []
    ran, _ = run_sweep(plan, out, on_stale=lambda runs: told.append([r.name for r in runs]))
    assert told == [[plan[0].name]]
    assert ran == [plan[0].name]
    assert json.loads(path.read_text())["scenario_hash"] == manifest["scenario_hash"]


def _free_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("family", "host", "shown"),
    [(socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET6, "::1", "[::1]")],
    ids=["ipv4", "ipv6"],
)
def test_a_ray_address_nothing_answers_on_is_refused_at_once(
    family: socket.AddressFamily, host: str, shown: str
) -> None:
    if not socket.has_ipv6 and family == socket.AF_INET6:
        pytest.skip("no IPv6 here")
    with socket.socket(family) as server:
        try:
            server.bind((host, 0))
        except OSError:
            pytest.skip(f"cannot bind {host} here")
        server.listen()
        port = server.getsockname()[1]
        check_ray_address(f"{shown}:{port}")  # something answers: no error
        check_ray_address(f"ray://{shown}:{port}")
    # the port is free again: the connection is refused
    with pytest.raises(ScenarioError, match=rf"--address \S+:{port}: no Ray cluster answers there"):
        check_ray_address(f"{shown}:{port}")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("headnode", "--address headnode: allowed: host:port, ray://host:port"),
        ("localhost:99999", "--address localhost:99999: Port out of range 0-65535"),
        ("localhost:http", "--address localhost:http: Port could not be cast to integer"),
        ("nowhere.invalid:6379", "--address nowhere.invalid:6379: unknown host nowhere.invalid"),
    ],
)
def test_a_ray_address_that_is_not_one_is_named(address: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(message)):
        check_ray_address(address)
    check_ray_address(None)
    check_ray_address("auto")
