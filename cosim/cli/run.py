"""``cosim run``: progress while it runs, a summary at the end."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cosim.engine.guard import RunCrashed, run_guarded
from cosim.engine.simulation import RoundInfo
from cosim.scenario import Scenario
from cosim.trace.writer import RUN_FILES

# A device whose slot-exchange messages got through less often than this (over at least
# CUT_OFF_MIN_MESSAGES sent) is named at the end of a run.
CUT_OFF_SHARE = 0.25
CUT_OFF_MIN_MESSAGES = 10


def _format_acc(acc: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.2f}" for k, v in acc.items())


def _after_interrupt(out_dir: Path) -> str:
    """What an interrupted ``cosim run`` left in ``out_dir``, from its manifest."""
    try:
        status = json.loads((out_dir / "manifest.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if status == "complete":
        return f"{out_dir} holds the whole run: it had finished"
    if status is None:
        return f"before the run started; nothing was written to {out_dir}"
    return f"{out_dir} holds the rounds traced so far, its manifest marked {status}"


def run_command(spec: Scenario, out_dir: Path, *, quiet: bool, console: Console) -> None:
    console.print(
        f"[bold]cosim[/] running '{spec.name}': {spec.devices.count} devices, {spec.training.rounds} rounds, "
        f"{len(spec.events)} events, network {spec.network.backend} -> {out_dir}"
    )
    last: dict[str, float] = {}
    progress = Progress(
        TextColumn("rounds done"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
        transient=False,
    )

    # Without a terminal (logs, CI) print a plain line every tenth of the run instead of a bar.
    every = max(1, spec.training.rounds // 10)
    plain = not quiet and not console.is_terminal

    def on_round(info: RoundInfo) -> None:
        if info.accuracy:
            last.update(info.accuracy)
        status = f"t={info.time_s:7.2f}s  live {info.live}  loss {info.loss:.3f}  {_format_acc(last)}"
        progress.update(task, completed=info.round + 1, status=status)
        if plain and ((info.round + 1) % every == 0 or info.round + 1 == info.rounds):
            # Rounds are numbered from 0, as in the scenario's events and the trace.
            console.print(
                f"round {info.round:>4} done ({info.round + 1}/{info.rounds})  {status}", highlight=False
            )

    with progress:
        task = progress.add_task("rounds", total=spec.training.rounds, status="")
        try:
            summary = run_guarded(spec, out_dir, on_round=on_round)
        except RunCrashed as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted:[/] {_after_interrupt(out_dir)}", highlight=False)
            raise SystemExit(130) from None

    table = Table(title=f"{spec.name}: summary", show_header=True)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("simulated time", f"{summary['simulated_s']:.2f} s")
    table.add_row("rounds", str(summary["rounds"]))
    table.add_row("live devices at the end", str(summary["live_devices"]))
    table.add_row("bits sent", f"{summary['bits_sent'] / 1e6:.1f} Mbit")
    messages = summary.get("gossip_messages", [])
    if messages:
        sent = sum(m["sent"] for m in messages)
        worst = min(messages, key=lambda m: (m["delivered"] / m["sent"], m["device"]))
        table.add_row(
            "exchange messages through (lowest device)",
            f"{sum(m['delivered'] for m in messages)}/{sent} "
            f"(device {worst['device']}: {worst['delivered']}/{worst['sent']})",
        )
    table.add_row("memory of a device's slot copies", f"{summary['copy_bytes_per_device'] / 2**20:.2f} MiB")
    if "history_bytes" in summary:
        table.add_row(
            "stored update history (largest device / all)",
            f"{summary['history_bytes_per_device'] / 2**20:.2f} / {summary['history_bytes'] / 2**20:.2f} MiB",
        )
    for split, acc in summary["final_accuracy"].items():
        table.add_row(f"final {split} accuracy", f"{acc:.3f}")
    console.print(table)
    for m in messages:
        if m["sent"] >= CUT_OFF_MIN_MESSAGES and m["delivered"] < CUT_OFF_SHARE * m["sent"]:
            console.print(
                f"[yellow]device {m['device']}: {m['delivered']} of its {m['sent']} slot-exchange messages "
                f"got through by the deadline[/] (the rest were cut off and not mixed), so its "
                "neighbours' copies of its slot lag. A longer network.slot_s, or a budget that "
                "fits each message into the slot (allocation.method: priority with a "
                "budget_fraction near 1 / the number of neighbours), lets them through.",
                highlight=False,
            )
    for event in summary.get("events_not_reached", []):
        when = f"round {event['round']}" if "round" in event else f"time_s {event['time_s']:g}"
        console.print(
            f"[yellow]events.{event['index']} ({event['kind']} at {when}) did not happen:[/] the run "
            f"ended at {summary['simulated_s']:.2f} simulated s, after its last round began",
            highlight=False,
        )
    for entry in summary["around_events"]:
        before, after = entry["before_event"], entry["after_event"]
        changes = "  ".join(f"{k} {before[k]:.2f}->{after[k]:.2f}" for k in after if k in before)
        console.print(f"round {entry['round']} ({', '.join(entry['events'])}): accuracy {changes}")
    written = [name for name in RUN_FILES if (out_dir / name).exists()]
    console.print(f"trace: {out_dir}/ ({', '.join(written)})", highlight=False)
