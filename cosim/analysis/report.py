"""A Markdown report of one or more runs, with PNG figures (matplotlib, Agg backend).

``write_report(run_dirs, out_dir)`` writes ``out_dir/report.md`` and, per run, four
figures beside it: accuracy over simulated time with the membership events marked,
the latency phases of each round's critical path, the mean PHY rate of every link,
and the bits sent per round.  The report refers to the figures by relative path, so
the folder can be moved or zipped as a whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cosim.analysis.breakdown import (
    MEMBERSHIP_KINDS,
    PHASES,
    accuracy_timeline,
    communication_totals,
    event_recovery,
    group_bits,
    round_breakdown,
)
from cosim.analysis.load import Run, load_run

__all__ = ["write_report"]

_PHASE_LABELS = {
    "correction_s": "correction (extra exchanges and steps)",
    "pull_s": "pull (newcomer)",
    "compute_s": "compute",
    "medium_s": "medium busy (waiting to send)",
    "access_s": "channel access",
    "transmission_s": "transmission",
    "retransmission_s": "retransmission (loss)",
    "waiting_s": "waiting",
}
_PHASE_COLORS = {
    "correction_s": "#ff7f0e",
    "pull_s": "#8c564b",
    "compute_s": "#1f77b4",
    "medium_s": "#e377c2",
    "access_s": "#9467bd",
    "transmission_s": "#2ca02c",
    "retransmission_s": "#d62728",
    "waiting_s": "#c7c7c7",
}
_SPLIT_ORDER = ("retain", "forget", "test", "newcomer")
_FIGURES = ("accuracy", "latency", "link_rates", "bits", "group_bits")  # <run>_<figure>.png


def write_report(
    run_dirs: str | Path | Iterable[str | Path],
    out_dir: str | Path,
    *,
    allow_incomplete: bool = False,
    tolerance: float = 0.02,
    join_target: float = 0.9,
) -> Path:
    """Write ``report.md`` and its figures into ``out_dir`` (created if needed); returns the
    path of ``report.md``.  Each run gets its own section and figures; ``tolerance`` and
    ``join_target`` go to :func:`~cosim.analysis.breakdown.event_recovery`."""
    import matplotlib

    matplotlib.use("Agg")

    dirs = [run_dirs] if isinstance(run_dirs, str | Path) else list(run_dirs)
    if not dirs:
        raise ValueError("write_report: no run directories given")
    seen: dict[Path, str | Path] = {}
    for d in dirs:
        if (key := Path(d).resolve()) in seen:
            raise ValueError(f"RUN {d}: given twice (as {seen[key]} before); name each run once")
        seen[key] = d
    runs = [load_run(d, allow_incomplete=allow_incomplete) for d in dirs]
    for run in runs:
        if run.rounds.empty:
            raise ValueError(
                f"{run.path}: its trace holds no round (rounds.parquet is empty); nothing to report"
            )
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{out}: cannot make the report's directory ({err.strerror or err})") from None
    slugs = _unique_slugs([run.path.name for run in runs])
    # A run is named by its directory; where two share a name, by the path as given.
    names = [run.path.name for run in runs]
    labels = [str(run.path) if names.count(run.path.name) > 1 else run.path.name for run in runs]
    _remove_earlier_report(out)

    lines = ["# cosim report", ""]
    lines += ["| run | scenario | seed | status | backend | rounds | simulated time (s) | bits sent (Mbit) |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for run, label in zip(runs, labels, strict=True):
        summary = run.manifest.get("summary", {})
        rounds: int | str = int(run.rounds["round"].max()) + 1
        if not run.transfers.empty and int(run.transfers["round"].max()) >= int(rounds):
            # An interrupted run: its last round sent messages but did not finish; its bits count.
            rounds = f"{rounds} (and round {int(run.transfers['round'].max())} unfinished)"
        lines.append(
            f"| `{label}` | {run.name} | {run.seed} | {run.manifest.get('status')} "
            f"| {run.manifest.get('backend')} | {rounds} | {_num(summary.get('simulated_s', math.nan))} "
            f"| {_num(run.transfers['delivered_bits'].sum() / 1e6)} |"
        )
    lines.append("")
    for run, slug, label in zip(runs, slugs, labels, strict=True):
        lines += _run_section(run, slug, label, out, tolerance, join_target)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- one run


def _run_section(
    run: Run, slug: str, label: str, out: Path, tolerance: float, join_target: float
) -> list[str]:
    per_round = round_breakdown(run, "critical")
    mean_round = round_breakdown(run, "mean")
    recovery = event_recovery(run, tolerance=tolerance, join_target=join_target)
    comm = communication_totals(run)
    figures = {
        "accuracy": _plot_accuracy(run, out / f"{slug}_accuracy.png"),
        "latency": _plot_latency(per_round, out / f"{slug}_latency.png"),
        "link_rates": _plot_link_rates(run, out / f"{slug}_link_rates.png"),
        "bits": _plot_bits(comm, out / f"{slug}_bits.png"),
        "group_bits": _plot_group_bits(group_bits(run), out / f"{slug}_group_bits.png"),
    }
    lines = [f"## Run `{label}`", ""]
    lines += [f"Scenario `{run.name}`, seed {run.seed}, {run.manifest.get('backend')} network.", ""]

    lines += ["### Accuracy", ""]
    lines += [
        "Network-wide accuracy (mean over the live devices, after each round's exchange) "
        "against simulated time; dashed lines mark joins and leaves.",
        "",
        f"![Accuracy over simulated time]({figures['accuracy'].name})",
        "",
    ]
    final = run.manifest.get("summary", {}).get("final_accuracy", {})
    if final:
        lines += ["| split | final accuracy |", "|---|---|"]
        order = [s for s in _SPLIT_ORDER if s in final] + sorted(set(final) - set(_SPLIT_ORDER))
        lines += [f"| {split} | {_num(final[split])} |" for split in order]
        lines.append("")

    lines += ["### Recovery after membership events", ""]
    if recovery.empty:
        lines += ["No joins or leaves in this run.", ""]
    else:
        lines += [
            f"A leave is recovered when the retain accuracy is back within {tolerance:g} of its value "
            f"just before the event; a join when the newcomer accuracy reaches {join_target:g} (its "
            "knowledge has spread). Rounds count the event's own round."
            + (
                " A silent leave (`leave_silent`) is measured from when the device went quiet, "
                "against the accuracy before that; its slot is deleted later, when the leave is "
                "detected."
                if (recovery["kind"] == "leave_silent").any()
                else ""
            ),
            "",
            "| round | time (s) | event | device | split | before | just after | threshold "
            "| recovered at round | recovery time (s) | rounds |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in recovery.itertuples(index=False):
            lines.append(
                f"| {row.round} | {_num(row.time_s)} | {row.kind} | {row.device} | {row.split} "
                f"| {_num(row.baseline)} | {_num(row.after_event)} | {_num(row.threshold)} "
                f"| {_int(row.recovery_round)} | {_num(row.recovery_s)} | {_int(row.recovery_rounds)} |"
            )
        lines.append("")

    lines += ["### Latency breakdown", ""]
    lines += [
        "Each round's duration split into phases, for the device whose last message ended "
        "last (the critical path; among several sending until the deadline, the lowest id) "
        "and averaged over the live devices. Medium busy is time a message was ready but "
        "waited for the shared medium (other senders on the air) or for the device's radio "
        "(serving a newcomer's pull), and at ns-3 packet fidelity the MAC's overhead and "
        "contention, among the device's own flows too; channel access is the fixed delay per "
        "message; "
        "transmission is airtime at the loss-free rate (bits / (PHY rate x MAC "
        "efficiency)); retransmission is the extra airtime due to packet loss; waiting is "
        "idle time after the device's last message, until the round ends.",
        "",
        f"![Latency phases per round]({figures['latency'].name})",
        "",
        "| phase | critical path: total (s) | share | mean device: total (s) | share |",
        "|---|---|---|---|---|",
    ]
    total_crit = float(per_round["duration_s"].sum()) or math.nan
    total_mean = float(mean_round["duration_s"].sum()) or math.nan
    for phase in PHASES:
        crit, mean = float(per_round[phase].sum()), float(mean_round[phase].sum())
        lines.append(
            f"| {_PHASE_LABELS[phase]} | {_num(crit)} | {_pct(crit / total_crit)} "
            f"| {_num(mean)} | {_pct(mean / total_mean)} |"
        )
    lines += [f"| **round duration** | {_num(total_crit)} | 100% | {_num(total_mean)} | 100% |", ""]

    lines += ["### Network", ""]
    lines += [
        "Mean PHY rate of each link over the transfers it carried (empty: never used).",
        "",
        f"![Mean PHY rate per link]({figures['link_rates'].name})",
        "",
        "Bits sent per round (slot exchanges, split into delivered and lost, a correction's "
        "extra exchanges, and newcomer pulls).",
        "",
        f"![Bits sent per round]({figures['bits'].name})",
        "",
        "Payload bits per layer group and round (from the `allocations` table: each slot's "
        "layer groups at the precision they travelled at; a newcomer's pull counts whole slots).",
        "",
        f"![Bits per layer group]({figures['group_bits'].name})",
        "",
    ]
    by_device = comm.groupby("device")[["messages", "messages_delivered", "bits", "bits_delivered"]].sum()
    lines += [
        "Messages per sending device: slot exchanges, a correction's extra exchanges and the "
        "copies it sent a newcomer's pull (`cosim run`'s summary counts the slot-exchange "
        "messages only; its bits sent include the others).",
        "",
    ]
    lines += ["| device | messages | delivered | Mbit sent | Mbit delivered | delivered ratio |"]
    lines += ["|---|---|---|---|---|---|"]
    for device, row in by_device.iterrows():
        ratio = row["bits_delivered"] / row["bits"] if row["bits"] else math.nan
        lines.append(
            f"| {device} | {row['messages']} | {row['messages_delivered']} | {_num(row['bits'] / 1e6)} "
            f"| {_num(row['bits_delivered'] / 1e6)} | {_pct(ratio)} |"
        )
    lines.append("")
    return lines


# --------------------------------------------------------------------------- figures


def _plot_accuracy(run: Run, path: Path) -> Path:
    import matplotlib.pyplot as plt

    timeline = accuracy_timeline(run)
    timeline = timeline[timeline["stage"].isin(("initial", "round"))]
    splits = [s for s in _SPLIT_ORDER if s in set(timeline["split"])]
    splits += sorted(set(timeline["split"]) - set(splits))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for split in splits:
        part = timeline[timeline["split"] == split]
        ax.plot(part["time_s"], part["accuracy"], marker=".", markersize=4, label=split)
    events = run.events[run.events["kind"].isin(MEMBERSHIP_KINDS)]
    for k, (t, kind, device) in enumerate(events[["time_s", "kind", "device"]].itertuples(index=False)):
        color = "tab:green" if kind == "join" else "tab:red"
        ax.axvline(t, color=color, linestyle="--", linewidth=1)
        ax.annotate(
            f"{kind} (device {device})",
            xy=(t, 0.5 - 0.15 * (k % 3)),
            xycoords=("data", "axes fraction"),
            xytext=(3, 0),
            textcoords="offset points",
            rotation=90,
            va="center",
            color=color,
            fontsize=9,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("accuracy (mean over live devices)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(f"{run.name}: accuracy per split")
    ax.grid(alpha=0.3)
    _legend(ax, title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def _plot_latency(per_round: pd.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    bottom = np.zeros(len(per_round))
    for phase in PHASES:
        values = per_round[phase].to_numpy(dtype=float)
        if not np.any(values > 1e-12):
            continue
        ax.bar(
            per_round["round"],
            values,
            bottom=bottom,
            width=0.85,
            color=_PHASE_COLORS[phase],
            label=_PHASE_LABELS[phase],
        )
        bottom += values
    ax.set_xlabel("round")
    _headroom(ax, bottom)
    ax.set_ylabel("time (s)")
    ax.set_title("Round latency on the critical path")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="phase")
    return _save(fig, path)


def _plot_link_rates(run: Run, path: Path) -> Path:
    import matplotlib.pyplot as plt

    used = run.transfers[run.transfers["rate_bps"] > 0]
    devices = sorted(set(run.rounds["device"]) | set(used["src"]) | set(used["dst"]))
    index = {d: i for i, d in enumerate(devices)}
    grid = np.full((len(devices), len(devices)), np.nan)
    for (src, dst), rate in used.groupby(["src", "dst"])["rate_bps"].mean().items():
        grid[index[src], index[dst]] = rate / 1e6
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(grid, cmap="viridis", origin="upper")
    ax.set_xticks(range(len(devices)), [str(d) for d in devices])
    ax.set_yticks(range(len(devices)), [str(d) for d in devices])
    ax.set_xlabel("receiver (device)")
    ax.set_ylabel("sender (device)")
    ax.set_title("Mean PHY rate per link")
    fig.colorbar(image, ax=ax, label="rate (Mbit/s)")
    return _save(fig, path)


def _bits_series(comm: pd.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rounds and the stacked series of the bits plot: every bit sent, by what it carried."""
    per_round = comm.pivot_table(
        index="round", columns="purpose", values=["bits", "bits_delivered"], aggfunc="sum", fill_value=0
    )
    series = {
        "slot exchange, delivered": _column(per_round, "bits_delivered", "gossip"),
        "slot exchange, lost": _column(per_round, "bits", "gossip")
        - _column(per_round, "bits_delivered", "gossip"),
        "correction's extra exchanges": _column(per_round, "bits", "sync"),
        "newcomer pull": _column(per_round, "bits", "pull"),
    }
    return per_round.index.to_numpy(), series


def _plot_bits(comm: pd.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    rounds, series = _bits_series(comm)
    colors = {
        "slot exchange, delivered": "#1f77b4",
        "slot exchange, lost": "#d62728",
        "correction's extra exchanges": "#ff7f0e",
        "newcomer pull": "#8c564b",
    }
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bottom = np.zeros(len(rounds))
    for label, values in series.items():
        if not np.any(values > 0):
            continue
        ax.bar(rounds, values / 1e6, bottom=bottom, width=0.85, color=colors[label], label=label)
        bottom += values / 1e6
    ax.set_xlabel("round")
    _headroom(ax, bottom)
    ax.set_ylabel("bits sent (Mbit)")
    ax.set_title("Bits sent per round, all devices")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def _plot_group_bits(per_group: pd.DataFrame, path: Path) -> Path:
    import matplotlib.pyplot as plt

    table = per_group.pivot_table(
        index="round", columns="group", values="bits_sent", aggfunc="sum", fill_value=0
    )
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bottom = np.zeros(len(table))
    for g in table.columns:
        values = table[g].to_numpy(dtype=float) / 1e6
        ax.bar(table.index.to_numpy(), values, bottom=bottom, width=0.85, label=f"group {g}")
        bottom += values
    _headroom(ax, bottom)
    ax.set_xlabel("round")
    ax.set_ylabel("payload bits sent (Mbit)")
    ax.set_title("Bits per layer group and round, all devices")
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, title="layer group", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


# --------------------------------------------------------------------------- helpers


def _remove_earlier_report(out: Path) -> None:
    """A report cosim wrote into ``out`` before is replaced: its figures go with it, so that
    none is left that the new report.md does not show.  Other files are left alone; a
    ``report.md`` cosim did not write is a ``ValueError``."""
    earlier = out / "report.md"
    if not earlier.is_file():
        return
    text = earlier.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("# cosim report"):
        raise ValueError(f"{earlier}: not a report cosim wrote, so it is not replaced; choose another --out")
    figures = "|".join(_FIGURES)
    for name in re.findall(rf"!\[[^\]]*\]\(([^)/]+_(?:{figures})\.png)\)", text):
        (out / name).unlink(missing_ok=True)


def _headroom(ax: Any, tops: np.ndarray) -> None:
    """Stacked bars from 0 with 5 % of room above the tallest (matplotlib's margins stop at bars)."""
    if len(tops) and float(np.max(tops)) > 0:
        ax.set_ylim(0, 1.05 * float(np.max(tops)))


def _legend(ax: Any, **kwargs: Any) -> None:
    """A legend of what was drawn; a figure with nothing drawn says so instead."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)
    else:
        ax.text(0.5, 0.5, "nothing to show", transform=ax.transAxes, ha="center", va="center", color="0.4")


def _column(frame: pd.DataFrame, value: str, purpose: str) -> np.ndarray:
    if (value, purpose) in frame.columns:
        return frame[(value, purpose)].to_numpy(dtype=float)
    return np.zeros(len(frame))


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _unique_slugs(names: Sequence[str]) -> list[str]:
    slugs: list[str] = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "run"
        slug, k = base, 2
        while slug in slugs:
            slug, k = f"{base}_{k}", k + 1
        slugs.append(slug)
    return slugs


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if abs(float(value)) < 1e-9:
        return "0"
    return f"{float(value):.3g}" if abs(float(value)) < 1000 else f"{float(value):,.0f}"


def _int(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(int(value))


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}%"
