"""A run whose process dies hard (as on an ns-3 abort) is marked interrupted, not left running."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cosim.engine.guard import RunCrashed, run_guarded
from cosim.engine.simulation import Simulation, run_scenario
from cosim.scenario import parse_scenario


def run_then_abort_in_round_two(scenario, out_dir, on_round=None):
    """Runs in the spawned child: the engine aborts the process during round 2."""
    original = Simulation._train_and_exchange

    def train_and_exchange(self, r, *args):
        if r == 2:
            os.abort()
        return (yield from original(self, r, *args))

    Simulation._train_and_exchange = train_and_exchange
    return run_scenario(scenario, out_dir, on_round=on_round)


def test_an_aborted_run_is_marked_interrupted(tiny_scenario, tmp_path) -> None:
    scenario = parse_scenario(tiny_scenario)
    rounds_seen = []
    with pytest.raises(RunCrashed, match="SIGABRT"):
        run_guarded(
            scenario,
            tmp_path / "run",
            on_round=lambda info: rounds_seen.append(info.round),
            target=run_then_abort_in_round_two,
        )
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert "SIGABRT" in manifest["reason"]
    assert rounds_seen == [0, 1]
    assert not list((tmp_path / "run").glob("*.parquet"))


def abort_at_once(scenario, out_dir, on_round=None):
    """Runs in the spawned child: the process aborts before it writes anything."""
    os.abort()


def test_a_run_that_dies_before_writing_anything_is_marked_interrupted(tiny_scenario, tmp_path) -> None:
    out_dir = tmp_path / "not" / "made"
    with pytest.raises(RunCrashed, match="SIGABRT"):
        run_guarded(parse_scenario(tiny_scenario), out_dir, target=abort_at_once)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and "SIGABRT" in manifest["reason"]
    assert [p.name for p in out_dir.iterdir()] == ["manifest.json"]


def test_a_crash_whose_directory_cannot_be_made_is_still_reported_as_the_crash(
    tiny_scenario, tmp_path
) -> None:
    (tmp_path / "file").write_text("not a directory")
    out_dir = tmp_path / "file" / "run"
    with pytest.raises(RunCrashed, match=r"SIGABRT; .*could not be marked interrupted"):
        run_guarded(parse_scenario(tiny_scenario), out_dir, target=abort_at_once)
    assert (tmp_path / "file").read_text() == "not a directory"


def ns3_missing(scenario, out_dir, on_round=None):
    """Runs in the spawned child: building the ns3 network finds no bindings."""
    from cosim.network.ns3._loader import INSTALL_HINT, Ns3ImportError

    raise Ns3ImportError(f"the ns3 backend needs ns-3's Python bindings: {INSTALL_HINT}")


def test_missing_ns3_bindings_are_the_users_to_fix_not_a_crash(tiny_scenario, tmp_path) -> None:
    from cosim.scenario import ScenarioError

    out_dir = tmp_path / "run"
    with pytest.raises(ScenarioError, match=r"needs ns-3's Python bindings: pip install .*cosim\[ns3\]"):
        run_guarded(parse_scenario(tiny_scenario), out_dir, target=ns3_missing)
    assert not out_dir.exists()


def test_a_guarded_run_equals_an_in_process_run(tiny_scenario, tmp_path) -> None:
    scenario = parse_scenario(tiny_scenario)
    guarded = run_guarded(scenario, tmp_path / "a")
    direct = run_scenario(scenario, tmp_path / "b")
    assert guarded == direct
    for table in ("rounds", "transfers", "events", "evaluations"):
        assert (tmp_path / "a" / f"{table}.parquet").read_bytes() == (
            tmp_path / "b" / f"{table}.parquet"
        ).read_bytes()


PARENT = """
import multiprocessing as mp, sys
from pathlib import Path
from cosim.engine.guard import run_guarded
from cosim.scenario import parse_scenario
import yaml

scenario = parse_scenario(yaml.safe_load(Path(sys.argv[1]).read_text()))

def report(info):
    if info.round == 1:
        print(mp.active_children()[0].pid, flush=True)

run_guarded(scenario, Path(sys.argv[2]), on_round=report)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited (nobody may reap an orphan here)


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


def _start_long_run(tiny_scenario, tmp_path: Path, **popen) -> tuple[subprocess.Popen, int]:
    """A parent process playing a 400-round tiny run guarded; returns it and its child's pid
    (once the child has reported round 1)."""
    spec = tiny_scenario | {"training": tiny_scenario["training"] | {"rounds": 400}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "s.yaml"), str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        text=True,
        **popen,
    )
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


def _assert_interrupted_with_its_rounds(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    rounds = sorted(set(pq.read_table(run_dir / "rounds.parquet").column("round").to_pylist()))
    assert rounds[:2] == [0, 1] and len(rounds) < 400


def test_a_child_whose_parent_is_killed_interrupts_its_run_and_exits(tiny_scenario, tmp_path) -> None:
    # As a shell starts a background job: SIGINT ignored, and inherited by the child.
    parent, child = _start_long_run(
        tiny_scenario, tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)
    )
    parent.send_signal(signal.SIGKILL)  # from outside: the parent can clean nothing up
    parent.wait()
    _wait_gone(child, 60)
    _assert_interrupted_with_its_rounds(tmp_path / "run")


ORPHAN = """
import multiprocessing as mp, sys, time
from cosim.engine.guard import exit_with_parent

def child(marker):
    exit_with_parent(grace_s=1.0)
    try:
        open(marker, "w").write("ready")
        time.sleep(600)
    except KeyboardInterrupt:
        open(marker, "w").write("interrupted")
    time.sleep(600)  # a pool worker waiting for work that never comes: ended by the grace

if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=child, args=(sys.argv[1],))
    p.start()
    print(p.pid, flush=True)
    time.sleep(600)
"""


def test_an_orphan_is_interrupted_and_then_ended(tmp_path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "marker")], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 120
    marker = tmp_path / "marker"
    while not (marker.exists() and marker.read_text() == "ready") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "ready" and _running(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    _wait_gone(child, 30)
    assert marker.read_text() == "interrupted"


def test_a_child_stopped_with_sigterm_marks_its_run_interrupted(tiny_scenario, tmp_path) -> None:
    parent, child = _start_long_run(tiny_scenario, tmp_path, stderr=subprocess.PIPE)
    os.kill(child, signal.SIGTERM)  # as a job scheduler stops work
    _, err = parent.communicate(timeout=120)
    assert "KeyboardInterrupt" in err  # the parent hears that its run was interrupted
    _assert_interrupted_with_its_rounds(tmp_path / "run")


def test_a_sweep_worker_whose_parent_is_gone_starts_no_queued_run(
    tiny_scenario, tmp_path, monkeypatch
) -> None:
    from cosim.engine import guard
    from cosim.sweep import _run_one

    monkeypatch.setattr(guard, "_parent_gone", type("Gone", (), {"is_set": staticmethod(lambda: True)})())
    with pytest.raises(RuntimeError, match="has exited"):
        _run_one(parse_scenario(tiny_scenario), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_an_interrupted_sweep_worker_starts_no_queued_run(tiny_scenario, tmp_path, monkeypatch) -> None:
    from cosim.engine import guard
    from cosim.sweep import _run_one

    monkeypatch.setattr(guard, "_stopping", type("Set", (), {"is_set": staticmethod(lambda: True)})())
    with pytest.raises(RuntimeError, match="was interrupted"):
        _run_one(parse_scenario(tiny_scenario), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_ctrl_c_stops_a_sweep_without_running_its_queued_runs(tiny_scenario, tmp_path) -> None:
    spec = tiny_scenario | {"training": tiny_scenario["training"] | {"rounds": 400}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "sweep.yaml").write_text("name: s\nbase: base.yaml\nseeds: [1, 2, 3, 4, 5]\n")
    out = tmp_path / "runs"
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from cosim.cli.main import main; main()",
            "sweep",
            str(tmp_path / "sweep.yaml"),
            "--out",
            str(out),
            "--jobs",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 120
    first: list[Path] = []
    while not first and time.monotonic() < deadline:
        first = list(out.glob("*/manifest.json")) if out.exists() else []  # written as a run starts
        time.sleep(0.1)
    assert first, "the first run never started"
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, output
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in out.glob("*/manifest.json")}
    # The run under way is marked interrupted; none of the four queued runs ran.
    assert list(statuses.values()) == ["interrupted"], statuses
    assert "interrupted: the finished runs in" in " ".join(output.split())
