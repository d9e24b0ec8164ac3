"""Where the membership signal after a leave comes from: the forget facts themselves, or their answers.

The loss-threshold attack of the ``evaluations`` table compares each forget fact's loss
(a member) with each held-out fact's (a non-member).  A gap from retrain's AUC can come
from two places, which this script tells apart by re-scoring the same models:

* the **answers**: the model favours or disfavours the leaver's answer values on any
  question.  The *answer-matched* AUC compares the forget losses with the held-out
  questions asked for the forget answers (every held-out question with every forget
  answer); it removes the answers' part and keeps what is specific to the facts;
* the **relations**: the *relation-matched* AUC keeps, for each forget answer, only the
  held-out questions of the forget fact's own relation;
* the **entities**: the *entity-swapped* AUC asks the forget questions for the held-out
  answers (every forget question with every held-out answer) against the held-out facts.
  A model that treats the leaver's entities like any unseen one gives 0.5 here.

An AUC below 0.5 means members have the higher loss: the model answers the forget facts
*worse* than unseen facts of the same kind, which a model that never saw them does not
do.  Every loss is the mean over the active devices' models (as the trace's network-wide
AUC); the figures are taken just before the leave, right after it (before any training)
and at the end of the run, and every ``--every`` rounds.

The runs are ordinary ``cosim experiments`` runs (the same plan, names and tables), made
here so that each model can be re-scored when it exists; each run directory gets an
``imprint.parquet`` beside its trace.  A run directory with one is not made again.

    .venv/bin/python analysis/mia_imprint_experiment.py scenarios/regimes --out runs/imprint \\
        --regime regime_consensus --policy none --policy retrain --seed 1 --seed 2 --jobs 2 \\
        --set events.0.round=112 --set training.rounds=140 --set training.learning_rate=0.001
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cosim.analysis import difference_cells, paired_difference
from cosim.learning.privacy import mia_auc

STAGES = ("before_event", "after_event", "distilled", "end")
AUCS = ("auc", "auc_answer", "auc_relation", "auc_entity")


def imprint_figures(
    forget_logp: np.ndarray,
    heldout_logp: np.ndarray,
    forget_answers: np.ndarray,
    heldout_answers: np.ndarray,
    forget_relations: np.ndarray,
    heldout_relations: np.ndarray,
) -> dict[str, float]:
    """The attack's AUC and its three controls from the models' log-probabilities of the answers.

    ``forget_logp`` is ``(devices, n_forget, values)`` and ``heldout_logp`` ``(devices,
    n_heldout, values)``: each device's log-probability of every candidate answer; answers
    are indices into the last axis.  Losses are averaged over the devices first.
    """
    lf = -np.asarray(forget_logp, dtype=np.float64).mean(axis=0)  # (n_forget, values)
    lh = -np.asarray(heldout_logp, dtype=np.float64).mean(axis=0)
    fa, ha = np.asarray(forget_answers), np.asarray(heldout_answers)
    members = lf[np.arange(len(fa)), fa]
    others = lh[np.arange(len(ha)), ha]
    answer_matched = lh[:, fa].ravel()
    same_relation = [
        lh[np.asarray(heldout_relations) == rel, a] for rel, a in zip(forget_relations, fa, strict=True)
    ]
    relation_matched = np.concatenate(same_relation) if same_relation else np.zeros(0)
    entity_swapped = lf[:, ha].ravel()
    return {
        "auc": mia_auc(members, others),
        "auc_answer": mia_auc(members, answer_matched),
        "auc_relation": mia_auc(members, relation_matched),
        "auc_entity": mia_auc(entity_swapped, others),
        "forget_loss": float(members.mean()),
        "heldout_loss": float(others.mean()),
        "answer_matched_loss": float(answer_matched.mean()),
    }


def _probed_run(
    scenario: Any,
    out_dir: str,
    labels: dict[str, Any],
    every: int,
    blind: bool = False,
    distil: int = 0,
    whole: bool = False,
) -> str:
    """Run one scenario, re-scoring its models at the event and every ``every`` rounds.

    ``blind``: the counterfactual without co-adaptation.  The leaver's slot is left out of
    every other device's training views (as if it were zero there), so no other slot
    learns beside it; the leaver trains, sends and is evaluated as usual.

    ``distil``: right after the deletion (and the *after_event* scoring) every remaining
    device takes that many steps on its own slot towards its own model's answer logits
    from just before the leave, on its own training questions (:func:`_distil`), and the
    models are scored again (stage *distilled*).  The steps cost no simulated time or
    bits: it asks whether such a correction could remove the imprint, not what it costs.
    """
    import torch

    from cosim.engine.simulation import Simulation

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    leavers = {e.device for e in scenario.events if e.kind == "leave"}
    variant = {"blind": blind, "distil": distil, "whole": whole}

    class Probed(Simulation):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if blind:
                _blind_others(self.learner, leavers)
            self.teacher: dict[int, Any] = {}

        def _evaluate(self, stage: str) -> dict[str, float]:
            means = super()._evaluate(stage)
            if stage == "before_event" and distil:
                self.teacher = self.learner.teacher_logits(self.members.active)
            last = self._round == self.scenario.training.rounds + self._extra_rounds - 1
            if stage in ("before_event", "after_event") or (
                stage == "round" and (last or self._round % every == 0)
            ):
                splits = self.learner.task.splits
                if {"forget", "heldout"} <= set(splits) and self.members.active:
                    row = _score(self.learner, self.members.active, splits["forget"], splits["heldout"])
                    label = "end" if stage == "round" and last else stage
                    rows.append({**labels, **variant, "round": self._round, "stage": label, **row})
                    if stage == "after_event" and distil:
                        _distil(self.learner, self.members.active, self.teacher, distil)
                        row = _score(self.learner, self.members.active, splits["forget"], splits["heldout"])
                        rows.append({**labels, **variant, "round": self._round, "stage": "distilled", **row})
            return means

    Probed(scenario, Path(out_dir)).run()
    pd.DataFrame(rows).to_parquet(Path(out_dir) / "imprint.parquet")
    return out_dir


def _distil(learner: Any, devices: list[int], teacher: dict[int, Any], steps: int) -> None:
    """``steps`` optimizer steps per device on its own slot: the mean squared distance of its
    centred answer logits from ``teacher``'s, on all its training questions."""
    import torch

    for d in devices:
        if d not in teacher:
            continue
        x = torch.as_tensor(learner.task.train[d].inputs)
        for _ in range(steps):
            learner._set_views([d], train=True)
            try:
                logits = learner._answer_logits(x)
            finally:
                learner._clear_views()
            loss = ((logits - logits.mean(dim=1, keepdim=True) - teacher[d]) ** 2).mean()
            learner.optimizers[d].zero_grad(set_to_none=True)
            loss.backward()
            learner.optimizers[d].step()
    learner._sync_own([d for d in devices if d in teacher])


def run_overrides(overrides: Sequence[str], whole_steps: bool) -> tuple[str, ...]:
    """The ``--set`` overrides of every run; ``--whole-steps`` is ``correction.step_share=whole``."""
    return (*overrides, "correction.step_share=whole") if whole_steps else tuple(overrides)


def _blind_others(learner: Any, leavers: set[int]) -> None:
    """Zero the leavers' slots in the training views of every device but their owners."""
    import torch

    set_views = learner._set_views

    def blinded(devices: list[int], train: bool) -> None:
        set_views(devices, train)
        if not train:
            return
        for leaver in leavers & set(learner.slot_of):
            rows = torch.as_tensor([i for i, d in enumerate(devices) if d != leaver], dtype=torch.long)
            first = learner.slot_of[leaver] * learner.rank  # views are (n, d_out, K r): the slot's r columns
            for layer in learner.layers.values():
                layer.views[rows, :, first : first + learner.rank] = 0.0

    learner._set_views = blinded


def _score(learner: Any, devices: list[int], forget: Any, heldout: Any) -> dict[str, float]:
    import torch

    first = int(learner.task.value_tokens[0])

    def logp(inputs: np.ndarray) -> np.ndarray:
        """(devices, n, values): log-probabilities over the candidate answers (as the trace's losses)."""
        with torch.no_grad():
            logits = [learner.device_logits(d, torch.as_tensor(inputs))[:, -1, values] for d in devices]
        return torch.log_softmax(torch.stack(logits), dim=2).numpy()

    values = torch.as_tensor(learner.task.value_tokens)
    return imprint_figures(
        logp(forget.inputs),
        logp(heldout.inputs),
        forget.answers - first,
        heldout.answers - first,
        forget.inputs[:, 2],
        heldout.inputs[:, 2],
    )


def collect(out_dir: Path) -> pd.DataFrame:
    """Every ``imprint.parquet`` under ``out_dir``, one table."""
    files = sorted(out_dir.glob("*/imprint.parquet"))
    if not files:
        raise SystemExit(f"{out_dir}: no run with an imprint.parquet")
    df = pd.concat([_with_accuracy(f) for f in files], ignore_index=True)
    if "blind" in df:  # the counterfactual runs: a policy of their own in the tables
        blind = df["blind"].fillna(False).astype(bool)
        df.loc[blind, "policy"] = df.loc[blind, "policy"] + " (blind)"
    if "whole" in df:
        whole = df["whole"].fillna(False).astype(bool)
        df.loc[whole, "policy"] = df.loc[whole, "policy"] + " (whole steps)"
    if "distil" in df:
        steps = df["distil"].fillna(0).astype(int)
        df.loc[steps > 0, "policy"] = df["policy"] + " (distil " + steps.astype(str) + ")"
    return df


ACCURACY = ("retain", "forget", "test")


def _with_accuracy(imprint: Path) -> pd.DataFrame:
    """A run's imprint rows; the *end* row gains the run's network-wide retained, forget and
    test accuracy at its last evaluation (``evaluations.parquet``; NaN where absent)."""
    rows = pd.read_parquet(imprint)
    evaluations = imprint.parent / "evaluations.parquet"
    for split in ACCURACY:
        rows[f"{split}_acc"] = float("nan")
    if evaluations.exists():
        e = pd.read_parquet(evaluations)
        e = e[e["device"].isna() & (e["round"] == e["round"].max()) & (e["stage"] == "round")]
        for split in ACCURACY:
            acc = e.loc[e["split"] == split, "accuracy"]
            if len(acc):
                rows.loc[rows["stage"] == "end", f"{split}_acc"] = float(acc.iloc[-1])
    return rows


def accuracy_against_retrain(df: pd.DataFrame) -> str:
    """At the end of each run, paired by seed: retained, forget and test accuracy minus retrain's."""
    end = df[df["stage"] == "end"]
    header = "retained − retrain | p | forget − retrain | p | test − retrain | p"
    return _paired_with_retrain(end, header, [f"{split}_acc" for split in ACCURACY])


def _paired_with_retrain(end: pd.DataFrame, header: str, columns: list[str]) -> str:
    """One row per regime and policy: each column minus the same seed's retrain run's, as
    :func:`~cosim.analysis.difference_cells`; ``header`` names the cells after *seeds*."""
    end = end.set_index(["regime", "policy", "seed"])
    if "retrain" not in set(end.index.get_level_values("policy")):
        return "(no retrain runs to compare with)"
    lines = [f"| regime | policy | seeds | {header} |", "|---|---|---:|" + "---|---:|" * len(columns)]
    for (regime, policy), g in end.groupby(level=["regime", "policy"], sort=True):
        if policy == "retrain":
            continue
        ref = end.xs((regime, "retrain"), level=("regime", "policy"))
        mine = g.droplevel(["regime", "policy"])
        results = [paired_difference((mine[c] - ref[c]).dropna()) for c in columns]
        cells = [str(max(int(r["n"]) for r in results))]
        for r in results:
            cells += difference_cells(r)
        lines.append(f"| {regime} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_table(df: pd.DataFrame) -> str:
    """Per regime, policy and stage: the four AUCs and the losses, means over seeds."""
    lines = [
        "| regime | policy | stage | seeds | AUC | answer-matched | relation-matched | entity-swapped "
        "| forget loss | held-out loss | held-out, forget answers |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = df[df["stage"].isin(STAGES)]
    order = {s: i for i, s in enumerate(STAGES)}
    for (regime, policy, stage), g in sorted(
        rows.groupby(["regime", "policy", "stage"]), key=lambda kv: (kv[0][0], kv[0][1], order[kv[0][2]])
    ):
        m = g.mean(numeric_only=True)
        cells = [f"{m[c]:.2f}" for c in AUCS] + [
            f"{m[c]:.2f}" for c in ("forget_loss", "heldout_loss", "answer_matched_loss")
        ]
        lines.append(f"| {regime} | {policy} | {stage} | {g['seed'].nunique()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def against_retrain(df: pd.DataFrame) -> str:
    """At the end of each run, paired by seed: each AUC minus the retrain run's, and the
    answers' part of the AUC (AUC minus answer-matched) minus retrain's."""
    end = df[df["stage"] == "end"].assign(answers=df["auc"] - df["auc_answer"])
    header = (
        "AUC − retrain | p | answer-matched − retrain | p | entity-swapped − retrain | p "
        "| answers' part − retrain | p"
    )
    return _paired_with_retrain(end, header, ["auc", "auc_answer", "auc_entity", "answers"])


def against_blind(df: pd.DataFrame) -> str:
    """Each policy against its ``--blind`` runs, paired by seed: the AUC and the forget split's
    loss above the held-out split's, right after the leave and at the end (with minus without
    co-adaptation)."""
    df = df.assign(gap=df["forget_loss"] - df["heldout_loss"])
    lines = [
        "| regime | policy | seeds | stage | AUC: with − without co-adaptation | p "
        "| forget − held-out loss: with − without | p |",
        "|---|---|---:|---|---|---:|---|---:|",
    ]
    blind = df[df["policy"].str.endswith(" (blind)")]
    for (regime, policy), g in blind.groupby(["regime", "policy"], sort=True):
        plain = df[(df["regime"] == regime) & (df["policy"] == policy.removesuffix(" (blind)"))]
        for stage in ("after_event", "end"):
            mine = plain[plain["stage"] == stage].set_index("seed")
            theirs = g[g["stage"] == stage].set_index("seed")
            results = [paired_difference((mine[c] - theirs[c]).dropna()) for c in ("auc", "gap")]
            cells = [str(max(int(r["n"]) for r in results)), stage]
            for r in results:
                cells += difference_cells(r)
            lines.append(f"| {regime} | {policy.removesuffix(' (blind)')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else "(no --blind runs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="the regime scenarios (cosim experiments' directory)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--regime", action="append", default=[])
    parser.add_argument("--policy", action="append", default=[])
    parser.add_argument("--seed", action="append", type=int, default=[])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--every", type=int, default=14, help="also re-score every this many rounds")
    parser.add_argument(
        "--blind",
        action="store_true",
        help="the counterfactual: no other device trains beside the leaver's slot (run names end in -blind)",
    )
    parser.add_argument(
        "--distil",
        type=int,
        default=0,
        metavar="STEPS",
        help="right after the deletion, STEPS steps of each device towards its model's logits from "
        "before the leave (run names end in -distilSTEPS)",
    )
    parser.add_argument(
        "--whole-steps",
        action="store_true",
        help="every device of a local correction keeps its whole displacement, not 1/m of it: "
        "--set correction.step_share=whole (run names end in -whole)",
    )
    parser.add_argument("--report", action="store_true", help="only print the tables of --out's runs")
    args = parser.parse_args()
    if not args.report:
        _make(args)
    df = collect(args.out)
    print(stage_table(df))
    print()
    print(against_retrain(df))
    print()
    print(against_blind(df))
    print()
    print(accuracy_against_retrain(df))


def _make(args: argparse.Namespace) -> None:
    import multiprocessing as mp

    from cosim.experiments import plan_experiments
    from cosim.scenario import ScenarioError

    if args.every < 1:
        raise SystemExit(f"--every: {args.every} is not a round count; allowed: 1 or more")
    try:
        plan = plan_experiments(
            args.directory,
            tuple(args.seed) or (1, 2, 3),
            tuple(args.policy) or ("none", "retrain"),
            ("leave",),
            overrides=run_overrides(args.overrides, args.whole_steps),
            only=tuple(args.regime),
        )
    except ScenarioError as err:
        raise SystemExit(str(err)) from None
    if args.distil < 0:
        raise SystemExit(f"--distil: {args.distil} is not a step count; allowed: 0 or more")
    suffix = (
        ("-blind" if args.blind else "")
        + (f"-distil{args.distil}" if args.distil else "")
        + ("-whole" if args.whole_steps else "")
    )
    todo = [run for run in plan if not (args.out / (run.name + suffix) / "imprint.parquet").exists()]
    args.out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=mp.get_context("spawn")) as pool:
        futures = [
            pool.submit(
                _probed_run,
                run.scenario,
                str(args.out / (run.name + suffix)),
                run.overrides,
                args.every,
                args.blind,
                args.distil,
                args.whole_steps,
            )
            for run in todo
        ]
        for i, future in enumerate(futures, 1):
            print(f"[{i}/{len(todo)}] {Path(future.result()).name}", flush=True)


if __name__ == "__main__":
    main()
