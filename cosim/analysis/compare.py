"""Comparing runs across seeds: means with confidence intervals, and differences to a baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "against_retrain",
    "beside_replay",
    "compare_runs",
    "difference_cell",
    "difference_cells",
    "mean_spread",
    "p_cell",
    "paired_difference",
    "saving",
]


def mean_spread(values: Any, digits: int, scale: float = 1.0, empty: str = "–") -> str:
    """``"mean ± std"`` of the values that are not missing, times ``scale``, to ``digits`` decimals.

    The spread is the sample standard deviation (0 for a single value); ``empty`` when no
    value is left.  The cells of the experiment tables (one value per seed).
    """
    kept = pd.Series(values, dtype=float).dropna() * scale
    if kept.empty:
        return empty
    spread = float(kept.std(ddof=1)) if len(kept) > 1 else 0.0
    return f"{kept.mean():.{digits}f} ± {spread:.{digits}f}"


def saving(reference: float, cost: float) -> str:
    """How many times ``cost`` goes into ``reference``, as a table cell: ``"4.0x"``.

    ``"already there"`` when the cost is 0, ``"–"`` when it is missing (NaN).
    """
    if np.isnan(cost):
        return "–"
    return "already there" if cost == 0 else f"{reference / cost:.1f}x"


def paired_difference(values: Any) -> dict[str, float]:
    """Mean, 95 % t interval and paired t test p value of per-seed differences (NaN left out).

    ``n`` is how many differences are left.  With fewer than two there is no interval
    (NaN); differences equal up to rounding do not vary, so there is no test either (the
    t test would report p near 0 for them).
    """
    d = pd.Series(values, dtype=float).dropna().to_numpy()
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "low": float("nan"), "high": float("nan"), "p": float("nan")}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / np.sqrt(n)
    p = float(stats.ttest_1samp(d, 0.0).pvalue) if sd > 1e-12 * max(1.0, abs(mean)) else float("nan")
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half, "p": p}


def difference_cell(r: dict[str, float], digits: int = 2) -> str:
    """A :func:`paired_difference` as a table cell: ``"+0.05 [+0.03, +0.07]"`` (``"–"`` when empty)."""
    if np.isnan(r["mean"]):
        return "–"
    text = f"{r['mean']:+.{digits}f}"
    if not np.isnan(r["low"]):
        text += f" [{r['low']:+.{digits}f}, {r['high']:+.{digits}f}]"
    return text


def p_cell(r: dict[str, float]) -> str:
    """A :func:`paired_difference`'s p value as a table cell (``"–"`` without a test)."""
    return "–" if np.isnan(r["p"]) else f"{r['p']:.2f}"


def difference_cells(r: dict[str, float], digits: int = 2) -> list[str]:
    """A :func:`paired_difference` as its two table cells: :func:`difference_cell`, :func:`p_cell`."""
    return [difference_cell(r, digits), p_cell(r)]


def beside_replay(
    df: pd.DataFrame, policies: tuple[str, ...], factor: float, keys: tuple[str, ...] = ("regime", "seed")
) -> pd.DataFrame:
    """The rows of ``policies`` in a ``cosim experiments`` results table, each beside the retrain
    run with the same ``keys`` (its replay's cost as ``correction_seconds_replay`` and
    ``correction_bits_replay``), with ``meets``: caught up at least ``factor`` times cheaper than
    that replay in seconds and in bits both (a run already there after the event costs 0; a run
    without a retrain run to compare with does not meet it)."""
    replay = (
        df[df["policy"] == "retrain"]
        .set_index(list(keys))[["correction_seconds", "correction_bits"]]
        .add_suffix("_replay")
    )
    rows = df[df["policy"].isin(policies)].join(replay, on=list(keys))
    rows["meets"] = (
        (rows["caught_up"] > 0)
        & (rows["caught_up_s"] * factor <= rows["correction_seconds_replay"])
        & (rows["caught_up_bits"] * factor <= rows["correction_bits_replay"])
    )
    return rows


def against_retrain(df: pd.DataFrame, policies: tuple[str, ...], within: float | None = None) -> str:
    """A markdown table, one row per regime and policy of ``policies`` (regimes sorted,
    policies in the order given): retained accuracy, forget accuracy and MIA AUC at the end
    of each run minus the same seed's retrain run (the ``*_vs_retrain`` columns of a
    ``cosim experiments`` results table), each as :func:`paired_difference`'s cells, after
    the seeds that have a retrain run to pair with (a policy without one has no row).

    With ``within``, a last column counts the seeds whose retained accuracy ends at most
    ``within`` below retrain's (a gap equal to ``within`` up to rounding counts).
    """
    columns = ("retain_acc_vs_retrain", "forget_acc_vs_retrain", "mia_auc_vs_retrain")
    head = "| regime | policy | seeds | retain − retrain [95 % CI] | p | forget − retrain [95 % CI] | p "
    head += "| MIA AUC − retrain [95 % CI] | p |"
    rule = "|---|---|---:|---|---:|---|---:|---|---:|"
    if within is not None:
        head += f" retained at most {within:.2f} below retrain |"
        rule += "---:|"
    lines = [head, rule]
    groups = dict(iter(df[df["policy"].isin(policies)].groupby(["regime", "policy"], sort=True)))
    for (regime, policy), rows in sorted(groups.items(), key=lambda g: (g[0][0], policies.index(g[0][1]))):
        results = [paired_difference(rows[c]) for c in columns]
        n = max(r["n"] for r in results)  # the seeds with a retrain run to pair with
        if n == 0:
            continue
        cells = [str(n)]
        for r in results:
            cells += difference_cells(r)
        if within is not None:
            gaps = rows["retain_acc_vs_retrain"].dropna()
            cells.append(f"{int((gaps >= -within - 1e-9).sum())}/{len(gaps)}")
        lines.append(f"| {regime} | {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_runs(
    summary: pd.DataFrame, by: str, metric: str, *, baseline: Any = None, confidence: float = 0.95
) -> pd.DataFrame:
    """Per value of ``by``: the mean of ``metric`` over its runs (seeds) with a t confidence
    interval, and its difference to the ``baseline`` value with a Welch t interval.

    ``summary`` has one row per run (e.g. a sweep's ``summary.parquet``).  Columns of the
    result: ``by``, ``n``, ``mean``, ``std``, ``ci_low``, ``ci_high``, ``diff``,
    ``diff_ci_low``, ``diff_ci_high`` (the last three NaN without a baseline, or for
    the baseline itself).
    """
    for column in (by, metric):
        if column not in summary.columns:
            raise KeyError(f"no column {column!r}; available: {', '.join(map(str, summary.columns))}")
    groups = {key: frame[metric].dropna().to_numpy(dtype=float) for key, frame in summary.groupby(by)}
    if baseline is not None and baseline not in groups:
        raise KeyError(f"baseline {baseline!r} is not a value of {by!r}; values: {sorted(groups)}")
    alpha = 1.0 - confidence
    rows = []
    for key, values in groups.items():
        n = len(values)
        mean = float(values.mean()) if n else np.nan
        std = float(values.std(ddof=1)) if n > 1 else np.nan
        half = float(stats.t.ppf(1 - alpha / 2, n - 1) * std / np.sqrt(n)) if n > 1 else np.nan
        row = {by: key, "n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}
        row |= {"diff": np.nan, "diff_ci_low": np.nan, "diff_ci_high": np.nan}
        if baseline is not None and key != baseline:
            row |= _welch(values, groups[baseline], alpha)
        rows.append(row)
    return pd.DataFrame(rows)


def _welch(a: np.ndarray, b: np.ndarray, alpha: float) -> dict[str, float]:
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "diff_ci_low": np.nan, "diff_ci_high": np.nan}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return {"diff": diff, "diff_ci_low": diff, "diff_ci_high": diff}
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(1 - alpha / 2, dof) * se)
    return {"diff": diff, "diff_ci_low": diff - half, "diff_ci_high": diff + half}
