"""The command line: user errors exit 2 with one message and no traceback; a tiny run works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cosim.cli.main import app
from cosim.scenario import load_scenario, scenario_hash

COSIM = Path(sys.executable).with_name("cosim")
TABLE_FILES = ["rounds.parquet", "transfers.parquet", "events.parquet", "evaluations.parquet"]
WIDE = {"COLUMNS": "400"}  # so that rich does not wrap (or fold) long messages


def flat(text: str) -> str:
    return " ".join(text.split())


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env=WIDE)


def assert_user_error(result, fragments: list[str]) -> None:
    """Exit code 2, one 'error:' line group on stderr naming the problem, nothing else."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.count("error:") == 1
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert flat(fragment) in flat(result.stderr)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_input_exits_2_with_one_message(bad_input, command: str, tmp_path: Path) -> None:
    result = invoke(
        command, bad_input.path, *bad_input.set_args(), *(["--out", tmp_path / "out"] * (command == "run"))
    )
    assert_user_error(result, bad_input.fragments)
    assert not (tmp_path / "out").exists()


def test_run_with_bad_input_leaves_an_existing_run_dir_alone(bad_input, tmp_path: Path) -> None:
    run_dir = tmp_path / "previous"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text('{"status": "complete"}\n')
    (run_dir / "rounds.parquet").write_bytes(b"PAR1 not really")
    (run_dir / "notes.txt").write_text("keep me\n")
    before = snapshot(run_dir)
    result = invoke("run", bad_input.path, *bad_input.set_args(), "--out", run_dir, "-q")
    assert_user_error(result, bad_input.fragments)
    assert snapshot(run_dir) == before


def test_the_console_script_exits_2_without_a_traceback(write_yaml, tiny_scenario) -> None:
    # `cosim run` takes the same path in-process above; a subprocess of it costs a torch import.
    path = write_yaml(tiny_scenario)
    proc = subprocess.run(
        [str(COSIM), "validate", str(path), "--set", "events=[{kind: leave, device: 7, round: 1}]"],
        capture_output=True,
        text=True,
        env={**os.environ, **WIDE},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert flat(proc.stderr) == flat(
        f"error: {path} with --set events=[{{kind: leave, device: 7, round: 1}}]: invalid scenario "
        "events.0.device: device 7 does not exist; allowed: 0..3 (4 initial devices and 0 newcomers)"
    )


def test_validate_prints_the_resolved_summary(tiny_file: Path) -> None:
    result = invoke(
        "validate", tiny_file, "--set", "training.rounds=6", "--set", "events=[{kind: join, round: 2}]"
    )
    assert result.exit_code == 0, result.output
    assert flat(result.stderr) == flat(f"ok {tiny_file}: scenario 'tiny', 4 devices, 6 rounds, 1 events")


def test_the_ns3_backend_without_its_bindings_is_refused_before_a_run(
    tiny_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cppyy" else find_spec(name, *a)
    )
    for command in (["validate"], ["run", "--out", tmp_path / "run"]):
        result = invoke(*command, tiny_file, "--set", "network={backend: ns3}")
        assert_user_error(
            result,
            ["network.backend: 'ns3' needs ns-3's Python bindings, which are not installed: pip install "
             "'ns3==3.44.post0' (or: pip install 'cosim[ns3]'); allowed without them: 'builtin'"],
        )  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("network.placement={kind: explicit, positions_m: [[0, 0]]}", "give one [x, y] per device"),
        ("training.rounds=[bold]x", "--set 'training.rounds=[bold]x'"),
    ],
    ids=["positions", "override-text"],
)
def test_error_messages_are_printed_verbatim(tiny_file: Path, override: str, fragment: str) -> None:
    result = invoke("validate", tiny_file, "--set", override)
    assert result.exit_code == 2
    assert fragment in flat(result.stderr)


REGIMES = Path(__file__).resolve().parents[1] / "scenarios" / "regimes"


def test_experiments_overrides_are_validated_for_every_regime(tmp_path: Path) -> None:
    late = ("--set", "events.0.round=99")
    result = invoke("experiments", REGIMES, "--out", tmp_path / "runs", *late, "--no-run")
    assert result.exit_code == 2
    assert "events.0.round: 99 is past the last round; allowed: 0..23" in flat(result.stderr)


def test_experiments_no_run_with_nothing_to_read_exits_2(tmp_path: Path) -> None:
    result = invoke("experiments", REGIMES, "--out", tmp_path / "runs", "--no-run")
    assert result.exit_code == 2
    assert "--no-run: no complete run of this plan in" in flat(result.stderr)


# --------------------------------------------------------------------------- a tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, quickstart: Path, tiny_overrides: list[str]):
    """`cosim run scenarios/quickstart.yaml`, made tiny: device 3 leaves at round 2, 4 joins at 3."""
    out = tmp_path_factory.mktemp("cli") / "run"
    args = [arg for text in tiny_overrides for arg in ("--set", text)]
    result = invoke("run", quickstart, "--out", out, "-q", *args)
    return out, result


def test_a_tiny_run_writes_the_four_tables_and_a_complete_manifest(
    tiny_run, quickstart: Path, tiny_overrides: list[str]
) -> None:
    out, result = tiny_run
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert {p.name for p in out.iterdir()} >= {
        *TABLE_FILES,
        "manifest.json",
        "state.safetensors",
        "state.json",
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["name"] == "quickstart"
    assert manifest["backend"] == "builtin"  # the tiny overrides swap ns-3 for the builtin network
    assert manifest["scenario_hash"] == scenario_hash(load_scenario(quickstart, tiny_overrides))
    assert manifest["summary"]["rounds"] == 4
    assert manifest["summary"]["live_devices"] == 4
    for name in TABLE_FILES:
        assert manifest["tables"][name.removesuffix(".parquet")] == pq.read_metadata(out / name).num_rows > 0
    events = pq.read_table(out / "events.parquet").to_pylist()
    assert [(e["kind"], e["device"], e["round"]) for e in events if e["kind"] in ("leave", "join")] == [
        ("leave", 3, 2),
        ("join", 4, 3),
    ]
    assert f"bits sent │ {manifest['summary']['bits_sent'] / 1e6:.1f} Mbit" in flat(result.stderr)
    # safetensors writes owner-only files; the state is as readable as the rest of the run
    mode = (out / "manifest.json").stat().st_mode & 0o777
    assert (out / "state.safetensors").stat().st_mode & 0o777 == mode
    written = "manifest.json, rounds.parquet, transfers.parquet, events.parquet, evaluations.parquet"
    assert f"trace: {out}/ ({written}, allocations.parquet, state.json, state.safetensors)" in flat(
        result.stderr
    )


@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        (3, "--device 3: not a live device at the end of the run; allowed: [0, 1, 2, 4]"),
        (99, "--device 99: not a live device at the end of the run; allowed: [0, 1, 2, 4]"),
    ],
    ids=["left", "never-existed"],
)
def test_export_of_a_device_that_is_not_live_exits_2(
    tiny_run, tmp_path: Path, device: int, fragment: str
) -> None:
    out, _ = tiny_run
    before = snapshot(out)
    result = invoke("export", out, tmp_path / "adapter", "--device", str(device))
    assert_user_error(result, [fragment])
    assert not (tmp_path / "adapter").exists()
    assert snapshot(out) == before


def test_export_refuses_a_directory_with_other_files_and_replaces_an_export_only_when_told(
    tiny_run, tmp_path: Path
) -> None:
    out, _ = tiny_run
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes\n")
    before = snapshot(mine)
    result = invoke("export", out, mine, "--device", "2", "--overwrite")
    assert_user_error(
        result, [f"DIR {mine}: not empty (holds README.md); export into a new or empty directory"]
    )
    assert snapshot(mine) == before

    adapter = tmp_path / "adapter"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # over the test configuration's filters
        result = invoke("export", out, adapter, "--device", "2")
    assert result.exit_code == 0, result.output
    assert "Writing model shards" not in result.output
    assert [w for w in caught if issubclass(w.category, FutureWarning)] == []
    written = sorted(adapter.rglob("*.safetensors"))
    assert [p.relative_to(adapter).as_posix() for p in written] == [
        "adapter_model.safetensors",
        "base/model.safetensors",
    ]
    mode = (adapter / "adapter_config.json").stat().st_mode & 0o777
    assert all(p.stat().st_mode & 0o777 == mode for p in written)
    first = (adapter / "adapter_model.safetensors").read_bytes()
    (adapter / "base" / "stale.bin").write_bytes(b"an earlier base's shard")
    (adapter / "adapter_model.safetensors").write_bytes(b"an earlier adapter")

    result = invoke("export", out, adapter, "--device", "2")
    assert_user_error(result, [f"DIR {adapter}: already holds an exported adapter; pass --overwrite"])
    assert (adapter / "base" / "stale.bin").exists()
    result = invoke("export", out, adapter, "--device", "2", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (adapter / "base" / "stale.bin").exists()
    assert (adapter / "adapter_model.safetensors").read_bytes() == first

    # a link named base is replaced, not written through
    elsewhere = tmp_path / "my-model"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text("mine\n")
    shutil.rmtree(adapter / "base")
    (adapter / "base").symlink_to(elsewhere)
    result = invoke("export", out, adapter, "--device", "2", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (adapter / "base").is_symlink() and (adapter / "base" / "model.safetensors").is_file()
    assert [p.name for p in elsewhere.iterdir()] == ["config.json"]
    assert (elsewhere / "config.json").read_text() == "mine\n"


def test_report_of_a_run_given_twice_exits_2(tiny_run, tmp_path: Path) -> None:
    out, _ = tiny_run
    again = out.parent / ".." / out.parent.name / out.name
    result = invoke("report", out, again, "--out", tmp_path / "r")
    assert_user_error(result, [f"RUN {again}: given twice (as {out} before)"])
    assert not (tmp_path / "r").exists()


def test_export_of_a_missing_run_dir_exits_2(tmp_path: Path) -> None:
    result = invoke("export", tmp_path / "nowhere", tmp_path / "adapter", "--device", "0")
    assert_user_error(result, [f"{tmp_path / 'nowhere'}: not a run directory (no manifest.json)"])
    assert not (tmp_path / "adapter").exists()


def test_export_of_an_unfinished_run_exits_2(tiny_run, tmp_path: Path) -> None:
    out, _ = tiny_run
    manifest = json.loads((out / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    result = invoke("export", tmp_path, tmp_path / "adapter", "--device", "0")
    assert_user_error(result, [f"{tmp_path}: the run is not complete (status 'running')"])


# --------------------------------------------------------------------------- what is already written


def test_run_into_a_directory_that_holds_a_run_exits_2_and_leaves_it_alone(
    tiny_file: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "previous"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text('{"status": "complete", "scenario": {"name": "older"}}\n')
    (run_dir / "state.json").write_text("{}\n")
    before = snapshot(run_dir)
    result = invoke("run", tiny_file, "--out", run_dir, "-q")
    assert_user_error(
        result,
        [
            f"--out {run_dir}: already holds a complete run of scenario 'older'; "
            "pass --overwrite to replace it"
        ],
    )
    assert snapshot(run_dir) == before


def test_run_with_overwrite_replaces_every_file_of_the_earlier_run(
    tmp_path: Path, quickstart: Path, tiny_overrides: list[str]
) -> None:
    run_dir = tmp_path / "previous"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text('{"status": "interrupted", "scenario": {"name": "older"}}\n')
    (run_dir / "state.json").write_text('{"older": true}\n')
    (run_dir / "transfers.parquet").write_bytes(b"older")
    (run_dir / "notes.txt").write_text("not a run's file\n")
    args = [arg for text in tiny_overrides for arg in ("--set", text)]
    result = invoke("run", quickstart, "--out", run_dir, "-q", "--overwrite", *args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (manifest["status"], manifest["name"]) == ("complete", "quickstart")
    assert "older" not in json.loads((run_dir / "state.json").read_text())
    assert pq.read_metadata(run_dir / "transfers.parquet").num_rows == manifest["tables"]["transfers"] > 0
    assert (run_dir / "notes.txt").read_text() == "not a run's file\n"


@pytest.mark.parametrize(
    ("command", "option"),
    [("run", "--out"), ("sweep", "--out"), ("experiments", "--out"), ("report", "--out"), ("export", "DIR")],
)
def test_an_output_directory_that_is_a_file_or_under_one_exits_2(
    tiny_run, tiny_file: Path, tmp_path: Path, command: str, option: str
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("a file\n")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase: {tiny_file.name}\n")
    run_dir, _ = tiny_run
    args = {
        "run": [tiny_file, "--out", taken, "-q"],
        "sweep": [sweep, "--out", taken],
        "experiments": [REGIMES, "--out", taken, "--no-run"],
        "report": [run_dir, "--out", taken],
        "export": [run_dir, taken, "--device", "0"],
    }[command]
    result = invoke(command, *args)
    assert_user_error(result, [f"{option} {taken}: exists and is not a directory"])
    assert taken.read_text() == "a file\n"
    # a directory under the file cannot be made either: the same error, before any work
    under = taken / "sub" / "run"
    result = invoke(command, *[under if a == taken else a for a in args])
    assert_user_error(result, [f"{option} {under}: {taken} is a file, so no directory can be made under it"])
    assert taken.read_text() == "a file\n"


@pytest.mark.parametrize("command", ["sweep", "experiments"])
def test_a_ray_address_without_the_ray_executor_exits_2(
    tiny_file: Path, tmp_path: Path, command: str
) -> None:
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase: {tiny_file.name}\n")
    first = sweep if command == "sweep" else REGIMES
    no_run = ["--no-run"] if command == "experiments" else []  # should the check ever go
    result = invoke(command, first, "--out", tmp_path / "out", "--address", "10.0.0.1:6379", *no_run)
    assert_user_error(
        result, ["--address 10.0.0.1:6379: a Ray cluster's address, used only with --executor ray"]
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["sweep", "experiments"])
def test_a_ray_address_nothing_answers_on_exits_2_before_anything_is_written(
    tiny_file: Path, tmp_path: Path, command: str
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase: {tiny_file.name}\n")
    first = sweep if command == "sweep" else REGIMES
    address = f"127.0.0.1:{port}"
    result = invoke(command, first, "--out", tmp_path / "out", "--executor", "ray", "--address", address)
    assert_user_error(result, [f"--address {address}: no Ray cluster answers there"])
    assert not (tmp_path / "out").exists()


def test_an_output_directory_whose_name_is_too_long_exits_2(tiny_file: Path, tmp_path: Path) -> None:
    too_long = tmp_path / ("r" * 300)
    result = invoke("run", tiny_file, "--out", too_long, "-q")
    assert_user_error(result, [f"--out {too_long}: cannot be used as a directory (File name too long)"])


def test_validate_prints_the_resolved_scenario_as_yaml(tiny_file: Path, tmp_path: Path) -> None:
    result = invoke("validate", tiny_file, "--set", "training.rounds=6")
    assert result.exit_code == 0, result.output
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(result.stdout)
    printed = load_scenario(resolved)
    assert printed.training.rounds == 6
    assert scenario_hash(printed) == scenario_hash(load_scenario(tiny_file, ["training.rounds=6"]))


def test_experiments_names_a_run_given_twice_once(tmp_path: Path) -> None:
    args = ["--seed", "1", "--seed", "1", "--policy", "none", "--policy", "none", "--event", "leave"]
    result = invoke(
        "experiments", REGIMES, "--out", tmp_path / "runs", *args, "--regime", "regime_learning", "--no-run"
    )
    assert result.exit_code == 2
    assert f"cosim experiments {REGIMES}: 1 runs -> {tmp_path / 'runs'}" in flat(result.stderr)


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [("{bad", "manifest.json: not valid JSON"), ("[]", "manifest.json: not a run manifest")],
    ids=["not-json", "not-an-object"],
)
@pytest.mark.parametrize("command", ["report", "export"])
def test_a_corrupt_manifest_exits_2(tmp_path: Path, command: str, manifest: str, fragment: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(manifest)
    args = (
        [run_dir, "--out", tmp_path / "report"]
        if command == "report"
        else [run_dir, tmp_path / "adapter", "--device", "0"]
    )
    result = invoke(command, *args)
    assert_user_error(result, [fragment])


def test_export_of_a_run_without_its_final_state_exits_2(tiny_run, tmp_path: Path) -> None:
    out, _ = tiny_run
    (tmp_path / "manifest.json").write_text((out / "manifest.json").read_text())
    (tmp_path / "state.json").write_text((out / "state.json").read_text())
    result = invoke("export", tmp_path, tmp_path / "adapter", "--device", "0")
    assert_user_error(result, [f"{tmp_path}: the run's final state is missing (state.safetensors)"])
    (tmp_path / "state.safetensors").write_bytes((out / "state.safetensors").read_bytes()[:100])
    result = invoke("export", tmp_path, tmp_path / "adapter", "--device", "0")
    assert_user_error(
        result, [f"{tmp_path}: the run's final state (state.safetensors, state.json) cannot be read"]
    )


def test_run_says_which_events_did_not_happen(tiny_file: Path, tmp_path: Path) -> None:
    late = "events=[{kind: leave, device: 2, time_s: 1.0e9}]"
    result = invoke("run", tiny_file, "--out", tmp_path / "run", "-q", "--set", late)
    assert result.exit_code == 0, result.output
    simulated = json.loads((tmp_path / "run" / "manifest.json").read_text())["summary"]["simulated_s"]
    assert (
        f"events.0 (leave at time_s 1e+09) did not happen: the run ended at {simulated:.2f} simulated s"
        in flat(result.stderr)
    )


def test_run_names_the_devices_whose_messages_are_mostly_cut_off(tiny_file: Path, tmp_path: Path) -> None:
    from cosim.cli.run import CUT_OFF_MIN_MESSAGES, CUT_OFF_SHARE

    result = invoke("run", tiny_file, "--out", tmp_path / "run", "-q", "--set", "network.slot_s=0.005")
    assert result.exit_code == 0, result.output
    messages = json.loads((tmp_path / "run" / "manifest.json").read_text())["summary"]["gossip_messages"]
    out = flat(result.stderr)
    starved = [
        m
        for m in messages
        if m["sent"] >= CUT_OFF_MIN_MESSAGES and m["delivered"] < CUT_OFF_SHARE * m["sent"]
    ]
    assert starved, messages
    for m in messages:
        line = f"device {m['device']}: {m['delivered']} of its {m['sent']} slot-exchange messages got through"
        assert (line in out) == (m in starved)
    sent, through = sum(m["sent"] for m in messages), sum(m["delivered"] for m in messages)
    worst = min(messages, key=lambda m: (m["delivered"] / m["sent"], m["device"]))
    assert f"{through}/{sent} (device {worst['device']}: {worst['delivered']}/{worst['sent']})" in out


def test_run_without_a_terminal_prints_each_round_numbered_as_the_events_are(
    tiny_file: Path, tmp_path: Path
) -> None:
    result = invoke("run", tiny_file, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    rounds = json.loads((tmp_path / "run" / "manifest.json").read_text())["summary"]["rounds"]
    assert rounds < 10  # so that every round gets a line
    lines = [line.split() for line in result.stderr.splitlines() if " done (" in line]
    assert [words[:4] for words in lines] == [
        ["round", str(r), "done", f"({r + 1}/{rounds})"] for r in range(rounds)
    ]


def test_run_names_no_device_when_its_messages_get_through(tiny_run) -> None:
    out, result = tiny_run
    messages = json.loads((out / "manifest.json").read_text())["summary"]["gossip_messages"]
    assert all(m["delivered"] == m["sent"] for m in messages), messages
    assert "slot-exchange messages got through" not in flat(result.stderr)


def test_ctrl_c_during_a_run_says_what_it_left_and_exits_130(
    tiny_file: Path, tmp_path: Path, monkeypatch
) -> None:
    import cosim.cli.run as run_module

    written: dict[str, str] = {}

    def interrupted(spec, out_dir, on_round=None):
        if "status" in written:  # the child had begun its trace: its manifest is marked
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "manifest.json").write_text(json.dumps({"status": written["status"]}))
        raise KeyboardInterrupt  # as run_guarded re-raises Ctrl-C once the child has written

    monkeypatch.setattr(run_module, "run_guarded", interrupted)
    expected = {
        None: "interrupted: before the run started; nothing was written to {out}",
        "interrupted": "interrupted: {out} holds the rounds traced so far, its manifest marked interrupted",
        "complete": "interrupted: {out} holds the whole run: it had finished",
    }
    for status, message in expected.items():
        written.clear()
        if status is not None:
            written["status"] = status
        out = tmp_path / f"run-{status}"
        result = invoke("run", tiny_file, "--out", out, "-q")
        assert result.exit_code == 130, result.output
        assert "Traceback" not in result.output
        assert flat(message.format(out=out)) in flat(result.output)


def test_ctrl_c_during_a_sweep_says_the_finished_runs_are_kept_and_exits_130(
    tiny_file: Path, tmp_path: Path, monkeypatch
) -> None:
    import cosim.sweep

    def interrupted(plan, out_dir, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cosim.sweep, "run_sweep", interrupted)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: s\nbase: {tiny_file.name}\n")
    out = tmp_path / "runs"
    result = invoke("sweep", sweep, "--out", out)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert flat(
        f"interrupted: the finished runs in {out} are kept, and the same command runs the rest"
    ) in flat(result.output)
