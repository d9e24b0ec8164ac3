"""Run a scenario in a child process, so that a hard crash cannot go unrecorded.

The child is spawned (a fresh interpreter), not forked: forking a process whose
OpenMP or cling runtime already has threads can deadlock the child.

ns-3 reports fatal errors (``NS_ASSERT``, ``NS_FATAL_ERROR``) by aborting the whole
process: no Python exception, no ``finally``.  ``run_guarded`` forks a child that
plays the scenario and streams its progress back; if the child dies, the parent
marks the run directory's manifest ``interrupted`` with the cause.  The child
writes the Parquet tables only when it finishes (or is interrupted cleanly), so a
crash leaves no half-written table behind.

A child also must not outlive its parent: killed from outside (a job scheduler, a
``kill``), the parent cannot stop it, and it would go on computing for nobody.
:func:`exit_with_parent` makes a process interrupt itself, like Ctrl-C (so the run is
marked ``interrupted`` and its tables are written), once its parent has gone.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cosim.engine.simulation import RoundInfo, run_scenario
from cosim.network.ns3._loader import Ns3ImportError
from cosim.scenario import Scenario, ScenarioError

__all__ = [
    "RunCrashed",
    "child_setup",
    "exit_with_parent",
    "parent_gone",
    "run_guarded",
    "stop_once",
    "stopping",
]

INTERRUPT_GRACE_S = 60.0
"""How long an orphaned child may take to write its interrupted run before it is ended."""


class RunCrashed(RuntimeError):
    """The simulation process died; the message says how, and that the run is marked
    interrupted (or why it could not be)."""


_stopping = threading.Event()  # an interrupt is under way: further ones are ignored
_parent_gone = threading.Event()


def stop_once() -> None:
    """Raise :class:`KeyboardInterrupt`, the first time only.

    Later SIGINTs and SIGTERMs are ignored from then on, so that a second interrupt (the
    watchdog's after a SIGTERM to the whole process group, a second Ctrl-C) cannot break
    into the interrupted run while it writes its tables and marks its manifest.
    """
    if _stopping.is_set():
        return
    _stopping.set()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _on_signal(signum: int, frame: Any) -> None:
    stop_once()


def stopping() -> bool:
    """Whether this process has been interrupted (SIGINT or SIGTERM, see :func:`stop_once`)."""
    return _stopping.is_set()


def parent_gone() -> bool:
    """Whether this process's parent has exited (as seen by :func:`exit_with_parent`)."""
    return _parent_gone.is_set()


def exit_with_parent(grace_s: float = INTERRUPT_GRACE_S) -> None:
    """Interrupt this process (SIGINT, as Ctrl-C) once its parent has exited; end it ``grace_s`` later.

    For a process started by :mod:`multiprocessing`: a daemon thread waits on the
    parent's sentinel, which the operating system closes however the parent ends (even
    before this is called).  The interrupt lets a running simulation mark its manifest
    ``interrupted`` and write its tables (unless an interrupt is already under way);
    the hard exit ends whatever is left (a pool worker waiting for work that will never
    come).
    """
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        _parent_gone.set()
        if not _stopping.is_set():
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def child_setup() -> None:
    """In a simulation process: SIGINT and SIGTERM (how job schedulers stop work) interrupt the
    run once, so it is marked and its tables written; and the process ends with its parent
    (:func:`exit_with_parent`).  SIGINT is set explicitly: a process started in the background
    by a shell inherits it ignored."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    exit_with_parent()


def _child(
    scenario: Scenario,
    out_dir: Path,
    messages: Any,
    target: Callable[..., dict[str, Any]] = run_scenario,
) -> None:
    # A crash must end this process (inherited handlers, e.g. cling's, may print and hang).
    for sig in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a write to a parent that is gone must raise, not kill
    child_setup()

    # Connection.send writes synchronously, so nothing sent is lost if the process aborts.
    def report(info: RoundInfo) -> None:
        try:
            messages.send(("round", info))
        except OSError:  # the parent is gone: stop as on Ctrl-C
            stop_once()
            raise

    try:
        summary = target(scenario, out_dir, on_round=report)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):  # the parent may be gone
            messages.send(("interrupted", None))
        return
    except (ScenarioError, Ns3ImportError) as err:  # found while building the run: the user's to fix
        messages.send(("user_error", str(err)))
        return
    except BaseException as err:
        messages.send(("error", f"{type(err).__name__}: {err}"))
        raise
    messages.send(("done", summary))


def _describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the simulation process was killed by {name}"
    return f"the simulation process exited with code {exitcode}"


def _mark_interrupted(out_dir: Path, reason: str) -> None:
    """Mark the run in ``out_dir`` interrupted with ``reason``; a child that died before it
    wrote anything leaves a manifest holding only these two fields."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    if manifest.get("status") == "complete":
        return
    manifest.update(status="interrupted", reason=reason)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)


def run_guarded(
    scenario: Scenario,
    out_dir: Path,
    on_round: Callable[[RoundInfo], None] | None = None,
    *,
    target: Callable[..., dict[str, Any]] = run_scenario,
) -> dict[str, Any]:
    """Like :func:`run_scenario`, in a child process; raises :class:`RunCrashed` if it dies.

    ``target`` is what the child calls (``run_scenario`` or a function with its
    signature, importable by module name).
    """
    ctx = mp.get_context("spawn")
    messages, child_end = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(scenario, out_dir, child_end, target), daemon=True)
    child.start()
    child_end.close()
    summary: dict[str, Any] | None = None
    error: str | None = None
    user_error: str | None = None
    interrupted = False
    while True:
        try:
            kind, payload = messages.recv()
        except EOFError:  # the child has exited and everything it sent was read
            break
        except KeyboardInterrupt:
            # Ctrl-C reaches the child too: let it write its tables and manifest first.
            child.join(timeout=60)
            raise
        if kind == "round" and on_round is not None:
            on_round(payload)
        elif kind == "done":
            summary = payload
        elif kind == "error":
            error = payload
        elif kind == "user_error":
            user_error = payload
        elif kind == "interrupted":
            interrupted = True
    child.join()
    if interrupted:
        raise KeyboardInterrupt
    if user_error is not None:
        raise ScenarioError(user_error)
    if summary is None:
        reason = error or _describe(child.exitcode)
        try:
            _mark_interrupted(out_dir, reason)
        except OSError as err:  # the crash is the news; say why it could not be recorded
            raise RunCrashed(f"{reason}; {out_dir} could not be marked interrupted: {err}") from None
        raise RunCrashed(f"{reason}; {out_dir} is marked interrupted")
    return summary
