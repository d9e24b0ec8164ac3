"""Regime experiments: every correction policy on every regime scenario, several seeds, one table.

A regime directory holds one scenario per regime, each with a single leave event.
:func:`plan_experiments` derives, for every regime, the leave scenario and a join
scenario (the same round, a newcomer instead of the leave), and runs each under every
policy in :data:`POLICIES` and every seed (``seed`` and ``data.seed`` both set, so the
data and the channel change with it).  ``federaser`` runs the regime with shared
(non-orthogonal) adapters: the standard decentralized LoRA baseline, unlearning a leave
from stored updates.  The runs are ordinary run directories, run and
resumed like a sweep (:func:`cosim.sweep.run_sweep`).

:func:`results` reads them back, one row per run, with the figures compared against
the ``retrain`` run of the same regime, event and seed (the unlearning reference):

* final retain / test / forget / newcomer accuracy and the forget split's
  membership-inference AUC, and their gaps to retrain; ``<split>_acc_early``: the
  accuracy two rounds after the event's round (while a correction is still under way);
* ``adapter_distance``: per device, ``|dW - dW_retrain|_F / |dW_retrain|_F`` of its
  model's merged adapter, averaged over the live devices.  The slot projections are
  orthonormal, so ``|dW|_F^2 = s^2 sum_k |B_k|_F^2`` and the distance follows from
  the saved copies without the projections (NaN against a reference with the other
  kind of adapters, e.g. a ``federaser`` run against the orthogonal retrain: another
  projection);
* ``history_bytes_per_device``: the most memory one device's stored updates took
  (federaser; 0 for the others, which store no history);
* the correction's own cost (``correction_end``: rounds, simulated seconds, bits,
  extra local steps; for retrain the replayed rounds), and ``correction_acting_rounds``,
  the rounds in which it did something (a correction that waits, ``wait_rounds``, lasts
  rounds in which it does nothing);
* ``target_s`` and ``target_bits``: simulated seconds and bits from the event until the
  event's target split (retain after a leave, newcomer after a join) is first within
  ``target_tol`` of the retrain run's final value (NaN: never within the run;
  ``target_reached`` says which); means over seeds count the seeds that reached it;
* ``caught_up_s`` and ``caught_up_bits``: the same, until the target split is within
  ``target_tol`` of the retrain run's value at the end of its replay (the model trained
  from scratch without the leaver, or with the newcomer, as far as the event; for the
  retrain run itself at most its replay, the cost a correction is compared against).

:func:`aggregate` gives mean and standard deviation over seeds per regime, event and
policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cosim.scenario import (
    SHARED_POLICIES,
    ScenarioError,
    apply_overrides,
    copy_tree,
    overridden,
    parse_scenario,
    read_yaml,
)
from cosim.sweep import SweepRun, finished_manifest

__all__ = [
    "EVENTS",
    "POLICIES",
    "REFERENCES",
    "aggregate",
    "correction_decisions",
    "markdown",
    "plan_experiments",
    "results",
    "runs_outside",
    "target_accuracy",
]

POLICIES = ("none", "priority", "local", "proximal", "sync", "topology", "retrain", "federaser")
REFERENCES = ("retrain", "federaser")  # the baselines, not corrections of the model as it is
EVENTS = ("leave", "join")
TARGET_SPLIT = {"leave": "retain", "join": "newcomer"}
EARLY_ROUNDS = 2  # ``<split>_acc_early``: accuracy at the end of the event's round + this


def target_accuracy(rows: pd.DataFrame, event: str, suffix: str = "") -> pd.Series:
    """The event's target split's accuracy in results rows (``suffix`` "" at the end, "_early"
    ``EARLY_ROUNDS`` rounds on), indexed by seed."""
    return rows.set_index("seed")[f"{TARGET_SPLIT[event]}_acc{suffix}"].astype(float)


def _regimes(directory: Path, overrides: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    if not directory.exists():
        raise ScenarioError(
            f"{directory}: no such directory; DIR is a directory of regime scenarios (*.yaml)"
        )
    if directory.is_file():
        raise ScenarioError(
            f"{directory}: is a file; DIR is a directory of regime scenarios (*.yaml), e.g. scenarios/regimes"
        )
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ScenarioError(f"{directory}: no regime scenarios (*.yaml) found")
    out = {}
    for path in files:
        raw = apply_overrides(read_yaml(path), list(overrides), str(path))
        scenario = parse_scenario(raw, source=overridden(str(path), overrides), base_dir=directory)
        leaves = [e for e in scenario.events if e.kind == "leave"]
        if len(scenario.events) != 1 or not leaves or leaves[0].round is None:
            raise ScenarioError(f"{path}: events: a regime scenario has exactly one leave, given by round")
        out[path.stem] = raw
    return out


def plan_experiments(
    directory: Path,
    seeds: tuple[int, ...],
    policies: tuple[str, ...] = POLICIES,
    events: tuple[str, ...] = EVENTS,
    adapters: str = "orthogonal",
    overrides: tuple[str, ...] = (),
    only: tuple[str, ...] = (),
) -> list[SweepRun]:
    """Every regime x event x policy x seed as a run (named ``regime-event-policy-sSEED``, with
    ``-shared`` before the seed for shared adapters).

    ``overrides`` (``a.b=value``, as ``cosim run --set``) apply to every regime scenario
    before the event, policy and seed are set, e.g. ``events.0.round=28`` moves the leave
    (and the join made from it) later.

    ``only`` names the regimes to run, by file name without ``.yaml`` (the ``regime``
    column of the results; empty: every regime).

    ``adapters="shared"`` runs every regime with shared (non-orthogonal) adapters, where only
    the policies of :data:`cosim.scenario.SHARED_POLICIES` apply; ``federaser`` always does.
    """
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        named = ", ".join(map(repr, unknown))
        verb = "is not a policy" if len(unknown) == 1 else "are not policies"
        raise ScenarioError(f"--policy: {named} {verb}; allowed: {', '.join(POLICIES)}")
    if adapters not in ("orthogonal", "shared"):
        raise ScenarioError(f"--adapters: {adapters!r} is not an adapter kind; allowed: orthogonal, shared")
    if adapters == "shared" and (bad := [p for p in policies if p not in SHARED_POLICIES]):
        raise ScenarioError(
            f"--policy: {', '.join(bad)} need orthogonal slots; allowed with shared adapters: "
            f"{', '.join(SHARED_POLICIES)}"
        )
    found = _regimes(directory, overrides)
    if unknown := [r for r in only if r not in found]:
        raise ScenarioError(f"--regime: {', '.join(unknown)} not in {directory}; allowed: {', '.join(found)}")
    plan = []
    for regime, raw in found.items():
        if only and regime not in only:
            continue
        leave = raw["events"][0]
        for event in events:
            for policy in policies:
                for seed in seeds:
                    spec = copy_tree(raw, regime)
                    spec["seed"] = seed
                    spec.setdefault("data", {})["seed"] = seed
                    if event == "join":
                        spec["events"] = [{"kind": "join", "round": leave["round"]}]
                    spec.setdefault("correction", {})["policy"] = policy
                    if policy == "federaser" or adapters == "shared":
                        spec.setdefault("model", {})["adapters"] = "shared"
                    name = _run_name(regime, event, policy, seed, adapters)
                    labels = {
                        "regime": regime,
                        "event": event,
                        "policy": policy,
                        "seed": seed,
                        "adapters": adapters,
                    }
                    scenario = parse_scenario(spec, source=name, base_dir=directory)
                    plan.append(SweepRun(name, labels, scenario))
    return plan


def _run_name(regime: str, event: str, policy: str, seed: int, adapters: str) -> str:
    """``regime-event-policy-sSEED``; with ``adapters="shared"`` ``regime-event-policy-shared-sSEED``,
    so that the two kinds of runs never share a directory."""
    kind = "-shared" if adapters == "shared" else ""
    return f"{regime}-{event}-{policy}{kind}-s{seed}"


# _run_name's orthogonal runs; shared-adapter runs (-shared before the seed) estimate no residuals.
_ORTHOGONAL_RUN = re.compile(r"^(?P<regime>.+)-(?P<event>leave|join)-(?P<policy>[a-z]+)-s\d+$")


def correction_decisions(
    directory: Path, policy: str
) -> Iterator[tuple[str, str, str, list[dict[str, Any]]]]:
    """``(regime, event, run name, decisions)`` for every finished orthogonal run of ``policy``
    in a ``cosim experiments --out`` directory, in name order: the ``detail`` of each of its
    ``correction`` events, in order."""
    for run_dir in sorted(Path(directory).iterdir()):
        name = _ORTHOGONAL_RUN.match(run_dir.name)
        if name is None or name["policy"] != policy or not (run_dir / "events.parquet").is_file():
            continue
        events = pd.read_parquet(run_dir / "events.parquet", columns=["kind", "detail"])
        decisions = [json.loads(d) for d in events.loc[events["kind"] == "correction", "detail"]]
        yield name["regime"], name["event"], run_dir.name, decisions


def _copies(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.numpy import load_file

    state = json.loads((run_dir / "state.json").read_text())
    return load_file(str(run_dir / "state.safetensors")), state


def _adapter_distance(run_dir: Path, reference_dir: Path) -> float:
    copies, state = _copies(run_dir)
    ref, ref_state = _copies(reference_dir)
    distances = []
    if any(copies[n].shape != ref[n].shape for n in ref):
        return float("nan")  # the other kind of adapters: another projection, not comparable slot by slot
    for device in state["live"]:
        if device not in ref_state["live"]:
            continue
        diff = sum(float(np.sum((copies[n][device] - ref[n][device]) ** 2)) for n in copies)
        norm = sum(float(np.sum(ref[n][device] ** 2)) for n in ref)
        distances.append(np.sqrt(diff / norm) if norm > 0 else np.nan)
    return float(np.mean(distances)) if distances else float("nan")


def _figures(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The run's figures from its tables and its manifest's ``summary``."""
    evals = pd.read_parquet(run_dir / "evaluations.parquet")
    events = pd.read_parquet(run_dir / "events.parquet")
    transfers = pd.read_parquet(run_dir / "transfers.parquet")
    means = evals[evals["device"].isna()]
    last = means[means["round"] == means["round"].max()]
    final = last.groupby("split")["accuracy"].last()
    forget = last[last["split"] == "forget"]
    membership = events[events["kind"].isin(["leave", "join"])]
    row: dict[str, Any] = {f"{split}_acc": float(final[split]) for split in final.index}
    row["mia_auc"] = float(forget["mia_auc"].iloc[-1]) if len(forget) else float("nan")
    row["event_round"] = int(membership["round"].iloc[0]) if len(membership) else -1
    row["event_s"] = float(membership["time_s"].iloc[0]) if len(membership) else float("nan")
    ends = events[events["kind"] == "correction_end"]
    row["correction_end_round"] = int(ends["round"].iloc[0]) if len(ends) else -1
    cost = {"rounds": 0, "seconds": 0.0, "bits": 0, "extra_local_steps": 0}
    for detail in ends["detail"]:
        d = json.loads(detail)
        for key in cost:
            cost[key] += d[key]
    row.update({f"correction_{k}": v for k, v in cost.items()})
    # The rounds in which a correction did something (NaN for runs from before they were counted).
    acting = [json.loads(detail).get("acting_rounds") for detail in ends["detail"]]
    row["correction_acting_rounds"] = float("nan") if None in acting else sum(acting)
    timeline = means[means["stage"].isin(["round", "after_event"])]
    row["timeline"] = timeline[["round", "stage", "time_s", "split", "accuracy"]]
    early = means[(means["stage"] == "round") & (means["round"] == row["event_round"] + EARLY_ROUNDS)]
    for split, acc in early.groupby("split")["accuracy"].last().items():
        row[f"{split}_acc_early"] = float(acc)
    row["transfers"] = transfers[["round", "time_s", "delivered_bits"]]
    row["history_bytes_per_device"] = summary.get("history_bytes_per_device", 0)
    return row


def _to_target(fig: dict[str, Any], split: str, target: float, tol: float) -> tuple[float, float]:
    """Seconds and bits from the event until ``split`` first reaches ``target - tol``.

    Candidates are the evaluation just after the event (0 s, 0 bits) and the end of
    every round from the event's on; a round's evaluation is stamped at its end, and
    its bits are those of the transfers of the rounds from the event's to it.
    """
    timeline = fig["timeline"]
    r0 = fig["event_round"]
    of_split = timeline[timeline["split"] == split]
    right_after = of_split[(of_split["stage"] == "after_event") & (of_split["round"] == r0)]
    if len(right_after) and float(right_after["accuracy"].iloc[0]) >= target - tol:
        return 0.0, 0.0
    later = of_split[(of_split["stage"] == "round") & (of_split["round"] >= r0)].sort_values("round")
    hit = later[later["accuracy"] >= target - tol]
    if hit.empty:
        return float("nan"), float("nan")
    first = hit.iloc[0]
    tr = fig["transfers"]
    window = tr["round"].between(r0, int(first["round"]))
    return float(first["time_s"]) - fig["event_s"], float(tr.loc[window, "delivered_bits"].sum())


def _level_at(fig: dict[str, Any], split: str, r: int) -> float:
    """Network-wide accuracy of ``split`` at the end of round ``r``.

    With ``training.eval_every`` > 1 round ``r`` may not be evaluated: then the first
    evaluated round after it (NaN if there is none).
    """
    if r < 0:  # the reference never finished its replay
        return float("nan")
    timeline = fig["timeline"]
    at = timeline[(timeline["split"] == split) & (timeline["stage"] == "round") & (timeline["round"] >= r)]
    if not len(at):
        return float("nan")
    first = at[at["round"] == at["round"].min()]
    return float(first["accuracy"].iloc[-1])


def _complete_figures(run_dir: Path) -> dict[str, Any] | None:
    """The figures of a complete run directory, None when it is missing or unfinished."""
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    return _figures(run_dir, manifest["summary"]) if manifest.get("status") == "complete" else None


def results(plan: list[SweepRun], out_dir: Path, target_tol: float = 0.01) -> pd.DataFrame:
    """One row per finished run, compared with the retrain run of its regime, event and seed.

    The retrain run is read from ``out_dir`` whether or not ``plan`` holds it, so runs of
    one policy compare with the references already there.
    """
    figures = {}
    for run in plan:
        fig = _complete_figures(out_dir / run.name)
        if fig is not None:
            figures[run.name] = (run, fig)
    references: dict[str, dict[str, Any] | None] = {name: fig for name, (_, fig) in figures.items()}
    rows = []
    for name, (run, fig) in figures.items():
        o = run.overrides
        ref_name = _run_name(o["regime"], o["event"], "retrain", o["seed"], o.get("adapters", "orthogonal"))
        if ref_name not in references:
            references[ref_name] = _complete_figures(out_dir / ref_name)
        ref = references[ref_name]
        row = {k: o[k] for k in ("regime", "event", "policy", "seed")}
        row.update({k: v for k, v in fig.items() if k not in ("timeline", "transfers")})
        split = TARGET_SPLIT[o["event"]]
        if ref is not None:
            for key in ("retain_acc", "test_acc", "forget_acc", "newcomer_acc", "mia_auc"):
                if key in fig and key in ref:
                    row[f"{key}_vs_retrain"] = fig[key] - ref[key]
            row["target_s"], row["target_bits"] = _to_target(fig, split, ref[f"{split}_acc"], target_tol)
            row["target_reached"] = float(not np.isnan(row["target_s"]))
            level = _level_at(ref, split, ref["correction_end_round"])
            row["caught_up_s"], row["caught_up_bits"] = _to_target(fig, split, level, target_tol)
            row["caught_up"] = float(not np.isnan(row["caught_up_s"]))
            row["adapter_distance"] = _adapter_distance(out_dir / name, out_dir / ref_name)
        rows.append(row)
    return pd.DataFrame(rows)


def runs_outside(plan: list[SweepRun], out_dir: Path) -> list[str]:
    """The finished runs in ``out_dir`` that ``plan`` does not name, sorted by name.

    ``results`` covers the plan's runs only (its regimes, events, policies and seeds), so
    a directory filled by several narrower commands keeps runs that a table built by one
    of them leaves out: the command names them.
    """
    planned = {run.name for run in plan}
    return [
        path.parent.name
        for path in sorted(out_dir.glob("*/manifest.json"))
        if path.parent.name not in planned and finished_manifest(path.parent) is not None
    ]


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every figure, per regime, event and policy."""
    keys = ["regime", "event", "policy"]
    numeric = [
        c for c in table.columns if c not in [*keys, "seed"] and pd.api.types.is_numeric_dtype(table[c])
    ]
    grouped = table.groupby(keys, sort=False)[numeric]
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    out["seeds"] = table.groupby(keys, sort=False)["seed"].nunique()
    return out.reset_index()


def _cell(row: pd.Series, key: str, scale: float = 1.0, digits: int = 2) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None or pd.isna(mean):
        return "–"
    spread = "" if std is None or pd.isna(std) else f" ± {std * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f}{spread}"


def markdown(summary: pd.DataFrame) -> str:
    """The aggregated table as Markdown (mean ± standard deviation over seeds)."""
    header = (
        "| regime | event | policy | target split +2 rounds | retain − retrain | test − retrain "
        "| forget (− retrain) "
        "| MIA AUC (− retrain) | newcomer | correction s | correction Mbit | s to target "
        "| Mbit to target | reached | s to catch up | Mbit to catch up | caught up | adapter distance "
        "| history KiB per device |"
    )
    lines = [header, "|" + "---|" * 3 + "---:|" * 16]
    for _, row in summary.iterrows():
        lines.append(
            f"| {row['regime']} | {row['event']} | {row['policy']} "
            f"| {_cell(row, TARGET_SPLIT[row['event']] + '_acc_early')} "
            f"| {_cell(row, 'retain_acc_vs_retrain')} | {_cell(row, 'test_acc_vs_retrain')} "
            f"| {_cell(row, 'forget_acc')} ({_cell(row, 'forget_acc_vs_retrain')}) "
            f"| {_cell(row, 'mia_auc')} ({_cell(row, 'mia_auc_vs_retrain')}) "
            f"| {_cell(row, 'newcomer_acc')} | {_cell(row, 'correction_seconds', digits=1)} "
            f"| {_cell(row, 'correction_bits', 1e-6, 0)} | {_cell(row, 'target_s', digits=1)} "
            f"| {_cell(row, 'target_bits', 1e-6, 0)} "
            f"| {row.get('target_reached_mean', float('nan')) * row['seeds']:.0f}/{row['seeds']} "
            f"| {_cell(row, 'caught_up_s', digits=1)} | {_cell(row, 'caught_up_bits', 1e-6, 0)} "
            f"| {row.get('caught_up_mean', float('nan')) * row['seeds']:.0f}/{row['seeds']} "
            f"| {_cell(row, 'adapter_distance')} "
            f"| {_cell(row, 'history_bytes_per_device', 1 / 1024, 0)} |"
        )
    return "\n".join(lines)
