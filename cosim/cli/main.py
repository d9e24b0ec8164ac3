"""The ``cosim`` command line: a thin layer over the package's public functions."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cosim.scenario import Scenario, ScenarioError, load_scenario

app = typer.Typer(
    name="cosim",
    help="Co-simulate decentralized LoRA fine-tuning with joins and leaves over D2D wireless links.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a field, e.g. --set training.rounds=10 (repeatable).", metavar="a.b=value"
    ),
]
RerunOutdatedOption = Annotated[
    bool,
    typer.Option(
        "--rerun-outdated",
        help="Run again the finished runs that another version of cosim's source made.",
    ),
]


def fail(message: str) -> None:
    """Print a user error and exit with code 2 (no traceback)."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code=2)


def _check_inputs(spec: Scenario) -> None:
    """The model's and the data's files, when the scenario names any (no weights are loaded),
    and, for the ns3 backend, that ns-3's bindings are installed (not imported: that is slow)."""
    if spec.network.backend == "ns3":
        import importlib.util

        from cosim.network.ns3._loader import INSTALL_HINT

        if importlib.util.find_spec("cppyy") is None or importlib.util.find_spec("ns") is None:
            raise ScenarioError(
                "network.backend: 'ns3' needs ns-3's Python bindings, which are not installed: "
                f"{INSTALL_HINT}; allowed without them: 'builtin'"
            )
    if spec.model.is_tiny and spec.data.task == "facts":
        return
    from cosim.learning.preflight import check_inputs

    check_inputs(spec)


@app.command()
def validate(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    set_: SetOption = None,
) -> None:
    """Check a scenario file and print its resolved form (every default filled in) as YAML."""
    import yaml

    try:
        spec = load_scenario(scenario, set_ or [])
        _check_inputs(spec)
    except ScenarioError as err:
        fail(str(err))
    typer.echo(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), nl=False)
    console.print(
        f"[green]ok[/] {scenario}: scenario '{spec.name}', {spec.devices.count} devices, "
        f"{spec.training.rounds} rounds, {len(spec.events)} events"
    )


def _not_a_file(path: Path, option: str) -> None:
    """Exit 2 when ``path``, a directory to write into, is an existing file or lies under one,
    or cannot be looked at (a name too long, a parent that cannot be searched)."""
    try:
        if path.exists() and not path.is_dir():
            fail(f"{option} {path}: exists and is not a directory")
        for parent in path.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    fail(f"{option} {path}: {parent} is a file, so no directory can be made under it")
                return
    except OSError as err:
        fail(f"{option} {path}: cannot be used as a directory ({err.strerror or err})")


def _check_executor(executor: str, address: str | None) -> None:
    """Exit 2 before anything is written on an unknown executor, an ``address`` without Ray,
    or one that names no Ray cluster."""
    from cosim.sweep import check_ray_address

    if executor not in ("local", "ray"):
        fail(f"--executor: {executor!r} is not an executor; allowed: local, ray")
    if address is not None and executor != "ray":
        fail(f"--address {address}: a Ray cluster's address, used only with --executor ray")
    try:
        check_ray_address(address)
    except ScenarioError as err:
        fail(str(err))


def _make_room(out_dir: Path, overwrite: bool) -> None:
    """Leave an earlier run in ``out_dir`` alone (exit 2), or with ``overwrite`` remove its files first.

    Removing them before the run starts means a run that then fails leaves its own
    files only, never a mix of two runs.
    """
    from cosim.trace.writer import RUN_FILES

    _not_a_file(out_dir, "--out")
    found = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    if not found:
        return
    if not overwrite:
        try:
            manifest = json.loads((out_dir / "manifest.json").read_text())
            what = f"a {manifest['status']} run of scenario '{manifest['scenario']['name']}'"
        except (OSError, ValueError, KeyError, TypeError):
            what = "the files of a run"
        fail(
            f"--out {out_dir}: already holds {what}; pass --overwrite to replace it, or choose another --out"
        )
    for path in found:
        path.unlink()


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/<name>).")] = None,
    set_: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a run already in the run directory.")
    ] = False,
) -> None:
    """Run a scenario and write its trace to runs/<name>/ (or --out)."""
    from cosim.cli.run import run_command

    try:
        spec = load_scenario(scenario, set_ or [])
        _check_inputs(spec)
    except ScenarioError as err:
        fail(str(err))
    out_dir = out or Path("runs") / spec.name
    _make_room(out_dir, overwrite)
    try:
        run_command(spec, out_dir, quiet=quiet, console=console)
    except ScenarioError as err:
        fail(str(err))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.", metavar="RUN")],
    out_dir: Annotated[Path, typer.Argument(help="Where to write the PEFT adapter.", metavar="DIR")],
    device: Annotated[int, typer.Option("--device", help="Device whose model to export.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an adapter exported into DIR before.")
    ] = False,
) -> None:
    """Write one device's final model as a PEFT adapter directory (base model included).

    DIR must be new or empty, or hold an earlier export (replaced with --overwrite).
    """
    from cosim.learning.export import ExportError, export_device

    _not_a_file(out_dir, "DIR")
    try:
        export_device(run_dir, device, out_dir, overwrite=overwrite)
    except ExportError as err:
        fail(str(err))
    console.print(
        f"[green]wrote[/] {out_dir}: device {device}'s adapter "
        "(load with PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(DIR/'base'), DIR))"
    )


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="One or more run directories.", metavar="RUN...")],
    out: Annotated[Path, typer.Option("--out", help="Where to write report.md and its figures.")] = Path(
        "report"
    ),
    allow_incomplete: Annotated[
        bool, typer.Option("--allow-incomplete", help="Also report runs that did not complete.")
    ] = False,
) -> None:
    """Write a Markdown report with latency breakdowns, accuracy timelines and plots."""
    from cosim.analysis.report import write_report

    _not_a_file(out, "--out")
    try:
        path = write_report(runs, out, allow_incomplete=allow_incomplete)
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    except OSError as err:  # reading a run's file or writing into --out
        fail(f"{err.filename or out}: {err.strerror or err}")
    console.print(f"[green]wrote[/] {path}")


@app.command()
def sweep(
    sweep_file: Annotated[
        Path, typer.Argument(help="Sweep YAML (base scenario, grid, seeds).", metavar="SWEEP")
    ],
    out: Annotated[Path | None, typer.Option("--out", help="Sweep directory (default: runs/<name>).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs at the same time (local).")] = 2,
    executor: Annotated[str, typer.Option("--executor", help="local or ray.")] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address (ray executor; default: local Ray).")
    ] = None,
    rerun_outdated: RerunOutdatedOption = False,
) -> None:
    """Run a sweep in parallel; finished runs are skipped, so an interrupted sweep resumes."""
    from cosim.sweep import load_sweep, plan_sweep

    _check_executor(executor, address)
    try:
        spec, base, base_dir = load_sweep(sweep_file)
        plan = plan_sweep(spec, base, base_dir)
    except ScenarioError as err:
        fail(str(err))
    out_dir = out or Path("runs") / spec.name
    _not_a_file(out_dir, "--out")
    console.print(f"[bold]cosim sweep[/] '{spec.name}': {len(plan)} runs -> {out_dir}")
    summary = _run_plan(plan, out_dir, jobs, executor, address, rerun_outdated)
    console.print(f"summary: {summary}")


def _run_plan(
    plan: list[Any],
    out_dir: Path,
    jobs: int,
    executor: str,
    address: str | None,
    rerun_outdated: bool = False,
) -> Path:
    """Run (or resume) a list of runs with a progress bar; exit 1 naming the runs that failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cosim.sweep import run_sweep

    def on_stale(runs) -> None:  # type: ignore[no-untyped-def]
        names = ", ".join(r.name for r in runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
        console.print(
            f"[yellow]{len(runs)} complete runs in {out_dir} were made from another version of their "
            f"scenario[/] ({names}): they are run again and replaced",
            highlight=False,
        )

    progress = Progress(
        TextColumn("runs"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        console=console,
    )
    failed: list[str] = []
    outdated: list[str] = []
    task = progress.add_task("runs", total=len(plan), last="")

    def on_done(run, status: str) -> None:  # type: ignore[no-untyped-def]
        if status.startswith("failed"):
            failed.append(f"{run.name}: {status}")
        if status.startswith("skipped (complete; made by"):
            outdated.append(run.name)
        progress.update(task, advance=1, last=f"{run.name}: {status}")
        if not console.is_terminal:
            console.print(f"{run.name}: {status}", highlight=False)

    with progress:
        try:
            ran, summary = run_sweep(
                plan,
                out_dir,
                jobs=jobs,
                executor=executor,
                address=address,
                on_done=on_done,
                rerun_outdated=rerun_outdated,
                on_stale=on_stale,
            )
        except ScenarioError as err:
            fail(str(err))
        except KeyboardInterrupt:
            console.print(
                f"[yellow]interrupted:[/] the finished runs in {out_dir} are kept, and the same "
                "command runs the rest",
                highlight=False,
            )
            raise typer.Exit(code=130) from None
    console.print(f"ran {len(ran)}, skipped {len(plan) - len(ran)}")
    if outdated:
        console.print(
            f"[yellow]{len(outdated)} of the skipped runs were made by another version of cosim's "
            "source[/] (same scenario, so kept); --rerun-outdated runs them again",
            highlight=False,
        )
    if failed:
        console.print("[red]failed runs:[/]\n" + "\n".join(failed), highlight=False)
        raise typer.Exit(code=1)
    return summary


@app.command()
def experiments(
    regimes: Annotated[
        Path, typer.Argument(help="Directory of regime scenarios (one leave each).", metavar="DIR")
    ] = Path("scenarios/regimes"),
    out: Annotated[Path, typer.Option("--out", help="Where the runs and results go.")] = Path("runs/regimes"),
    seeds: Annotated[list[int] | None, typer.Option("--seed", help="A seed (repeat; default 1 2 3).")] = None,
    policy: Annotated[
        list[str] | None, typer.Option("--policy", help="Only this policy (repeat; default: all).")
    ] = None,
    event: Annotated[
        list[str] | None, typer.Option("--event", help="leave or join (repeat; default both).")
    ] = None,
    regime: Annotated[
        list[str] | None,
        typer.Option(
            "--regime", help="Only this regime: its file name without .yaml (repeat; default: all)."
        ),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs at the same time (local).")] = 2,
    executor: Annotated[str, typer.Option("--executor", help="local or ray.")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster address.")] = None,
    rerun_outdated: RerunOutdatedOption = False,
    adapters: Annotated[
        str,
        typer.Option(
            "--adapters",
            help="orthogonal (the method) or shared (the non-orthogonal baseline: policies none, "
            "retrain, federaser).",
        ),
    ] = "orthogonal",
    no_run: Annotated[
        bool,
        typer.Option(
            "--no-run",
            help="Run nothing: build the tables from the complete runs of this plan already in --out, "
            "also those made from another version of their scenario (which a run without --no-run "
            "makes again and replaces).",
        ),
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a field of every regime scenario, e.g. --set events.0.round=28 (repeatable).",
            metavar="a.b=value",
        ),
    ] = None,
) -> None:
    """Every correction policy on every regime, leave and join, several seeds: one results table."""
    from cosim.experiments import (
        EVENTS,
        POLICIES,
        aggregate,
        markdown,
        plan_experiments,
        results,
        runs_outside,
    )

    _check_executor(executor, address)
    _not_a_file(out, "--out")
    # A value given twice names one run once (two runs into one directory would clash).
    events = tuple(dict.fromkeys(event or EVENTS))
    bad = [e for e in events if e not in EVENTS]
    if bad:
        fail(f"--event: {bad[0]!r} is not an event; allowed: {', '.join(EVENTS)}")
    try:
        from cosim.scenario import SHARED_POLICIES

        default = POLICIES if adapters != "shared" else SHARED_POLICIES
        plan = plan_experiments(
            regimes,
            tuple(dict.fromkeys(seeds or (1, 2, 3))),
            tuple(dict.fromkeys(policy or default)),
            events,
            adapters,
            tuple(overrides or ()),
            tuple(dict.fromkeys(regime or ())),
        )
    except ScenarioError as err:
        fail(str(err))
    console.print(f"[bold]cosim experiments[/] {regimes}: {len(plan)} runs -> {out}")
    if no_run:
        from cosim.sweep import run_status

        status = [run_status(out / run.name, run.scenario) for run in plan]
        missing, stale = status.count("missing"), status.count("stale")
        console.print(
            f"--no-run: {status.count('complete')} runs complete, {missing} missing or unfinished (left "
            f"out), {stale} complete from another version of their scenario (read as they are)"
        )
        if not status.count("complete") + stale:
            fail(f"--no-run: no complete run of this plan in {out}; run it without --no-run first")
    else:
        _run_plan(plan, out, jobs, executor, address, rerun_outdated)
    table = results(plan, out)
    table.to_parquet(out / "results.parquet", index=False)
    summary = aggregate(table)
    summary.to_parquet(out / "results_summary.parquet", index=False)
    (out / "results.md").write_text(markdown(summary) + "\n", encoding="utf-8")
    console.print(
        f"results: {out}/results.parquet (per run), {out}/results_summary.parquet and "
        f"{out}/results.md (mean and spread per regime, event and policy)"
    )
    outside = runs_outside(plan, out)
    if outside:
        named = ", ".join(outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3 else "")
        console.print(
            f"[yellow]{len(outside)} finished runs in {out} are not in this command's plan[/] ({named}): "
            "the tables cover the plan alone; name their --regime, --event, --policy and --seed "
            "(with --no-run) to put them in",
            highlight=False,
        )


@app.command()
def doctor() -> None:
    """Report the installed versions and whether ns-3 imports, how long it takes, and its models."""
    from rich.table import Table

    from cosim.network.ns3.doctor import ns3_report
    from cosim.trace.writer import package_versions

    versions = Table(title="packages", show_header=False)
    for name, version in package_versions().items():
        versions.add_row(name, version)
    console.print(versions)
    console.print("importing ns-3 (5-30 s, once per process) ...")
    report = ns3_report()
    if not report["available"]:
        console.print(f"[red]ns-3 unavailable:[/] {escape(str(report['error']))}")
        raise typer.Exit(code=1)
    console.print(f"ns-3 {report['version']}: imported in {report['import_s']:.1f} s")
    models = Table(title="ns-3 models", show_header=True)
    models.add_column("role")
    models.add_column("model")
    models.add_column("available")
    for role, entries in report.items():
        if isinstance(entries, dict):
            for name, ok in entries.items():
                models.add_row(role, name, "[green]yes[/]" if ok else "[red]no[/]")
    console.print(models)


def main() -> None:
    # Nothing is ever fetched from a model hub: models are built, shipped or local.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        app()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
