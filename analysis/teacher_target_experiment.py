"""Local correction towards the pre-leave model's logits against towards the answers, over many seeds.

Reads two ``cosim experiments`` directories of the same leaves and seeds: the first made
as the scenarios are (``correction.local_target: answers``), the second with ``--set
correction.local_target=teacher``.  The option only changes what ``priority`` and
``local`` fit in their extra local steps, so ``none`` and ``retrain`` must come out the
same in both: the script checks that every such run present in both has the same
figures (a ``ValueError`` otherwise) and takes them from the first.  The second
directory's ``priority`` and ``local`` runs become ``priority (teacher)`` and ``local
(teacher)``.  Then it prints the tables of ``leave_seeds_experiment.py`` (against retrain
and against the replay) for every policy found, and one more:

* **teacher against answers** (paired by seed, per regime and policy): retained
  accuracy two rounds after the leave and at the end, the MIA AUC at the end, the extra
  local steps, and the seeds 5x cheaper than the replay in both seconds and bits under
  each target.

    S="--seed 1 --seed 2 --seed 3 --seed 4 --seed 5 --seed 6 --seed 7 --seed 8 --seed 9 --seed 10"
    .venv/bin/cosim experiments scenarios/regimes --out runs/r14 --event leave \\
        --policy none --policy priority --policy retrain $S
    .venv/bin/cosim experiments scenarios/regimes --out runs/r14-teacher --event leave \\
        --policy none --policy priority --policy retrain $S --set correction.local_target=teacher
    .venv/bin/python analysis/teacher_target_experiment.py runs/r14 runs/r14-teacher
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from cosim.analysis import difference_cells, experiment_report, one_run_each, paired_difference

CORRECTING = ("priority", "local")  # the policies whose extra steps the option changes
SAME = ("none", "retrain")  # the policies it does not touch
# The figures of a run that must agree between the directories for the policies in SAME.
CHECKED = ("retain_acc", "forget_acc", "test_acc", "mia_auc", "correction_seconds", "correction_bits")


def _leave_seeds() -> ModuleType:
    """``leave_seeds_experiment.py`` beside this script, whose tables this one prints too."""
    path = Path(__file__).with_name("leave_seeds_experiment.py")
    spec = importlib.util.spec_from_file_location("leave_seeds_experiment", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LEAVE_SEEDS = _leave_seeds()


def teacher_label(policy: str) -> str:
    return f"{policy} (teacher)"


def combine(answers: pd.DataFrame, teacher: pd.DataFrame) -> pd.DataFrame:
    """The leaves of both results tables, one row per regime, policy and seed (see the module)."""
    answers = answers[answers["event"] == "leave"]
    teacher = teacher[teacher["event"] == "leave"]
    key = ["regime", "policy", "seed"]
    both = answers[answers["policy"].isin(SAME)].merge(
        teacher[teacher["policy"].isin(SAME)], on=key, suffixes=("", "_other")
    )
    for column in CHECKED:
        if column not in both:
            continue
        a, b = both[column].to_numpy(dtype=float), both[f"{column}_other"].to_numpy(dtype=float)
        differs = ~np.isclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True)
        if differs.any():
            row = both[differs].iloc[0]
            first, second = float(a[differs][0]), float(b[differs][0])
            raise ValueError(
                f"{row['regime']} {row['policy']} seed {row['seed']}: {column} is {first:g} in the first "
                f"directory and {second:g} in the second; the option cannot change it, so the two "
                "directories do not hold the same runs"
            )
    relabelled = teacher[teacher["policy"].isin(CORRECTING)].copy()
    relabelled["policy"] = relabelled["policy"].map(teacher_label)
    kept = answers[answers["policy"].isin((*SAME, *CORRECTING))]
    return one_run_each(pd.concat([kept, relabelled], ignore_index=True), key)


def load(directories: list[Path]) -> pd.DataFrame:
    if len(directories) != 2:
        raise ValueError(
            f"{len(directories)} directories given; expected two: the runs with local_target answers, "
            "then those with local_target teacher"
        )
    first, second = (pd.read_parquet(d / "results.parquet") for d in directories)
    return combine(first, second)


def _policies(df: pd.DataFrame) -> tuple[str, ...]:
    order = ("none", *CORRECTING, *map(teacher_label, CORRECTING))
    return tuple(p for p in order if p in set(df["policy"]))


def against_retrain(df: pd.DataFrame) -> str:
    return LEAVE_SEEDS.against_retrain(df, _policies(df))


def against_replay(df: pd.DataFrame) -> str:
    return LEAVE_SEEDS.against_replay(df, _policies(df))


def teacher_against_answers(df: pd.DataFrame) -> str:
    lines = [
        "| regime | policy | seeds | retained +2 rounds: teacher − answers [95 % CI] | p "
        "| final retained: teacher − answers [95 % CI] | p | MIA AUC: teacher − answers [95 % CI] | p "
        "| extra local steps: answers / teacher | seeds 5x cheaper in both: answers / teacher |",
        "|---|---|---:|---|---:|---|---:|---|---:|---|---|",
    ]
    costs = LEAVE_SEEDS.cost_rows(df, _policies(df)).set_index(["regime", "policy", "seed"])["meets"]
    for regime, rows in df.groupby("regime", sort=True):
        for policy in CORRECTING:
            ans = rows[rows["policy"] == policy].set_index("seed")
            tea = rows[rows["policy"] == teacher_label(policy)].set_index("seed")
            seeds = ans.index.intersection(tea.index)
            if seeds.empty:
                continue
            ans, tea = ans.loc[seeds], tea.loc[seeds]
            cells = [str(len(seeds))]
            for column in ("retain_acc_early", "retain_acc", "mia_auc"):
                cells += difference_cells(paired_difference(tea[column] - ans[column]))
            steps = [float(x["correction_extra_local_steps"].mean()) for x in (ans, tea)]
            cells.append(f"{steps[0]:.0f} / {steps[1]:.0f}")
            meets = [
                int(costs.loc[[(regime, p, s) for s in seeds]].sum()) for p in (policy, teacher_label(policy))
            ]
            cells.append(f"{meets[0]}/{len(seeds)} / {meets[1]}/{len(seeds)}")
            lines.append(f"| {regime} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    experiment_report(__doc__.splitlines()[0], load, against_retrain, against_replay, teacher_against_answers)


if __name__ == "__main__":
    main()
