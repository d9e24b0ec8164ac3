import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cosim.analysis.compare import compare_runs, difference_cell, mean_spread, p_cell, paired_difference


def test_means_intervals_and_differences_match_scipy() -> None:
    a = [0.80, 0.84, 0.82, 0.86]
    b = [0.70, 0.75, 0.71]
    summary = pd.DataFrame({"slot_s": [1.0] * 4 + [2.5] * 3, "acc": a + b})
    out = compare_runs(summary, "slot_s", "acc", baseline=2.5).set_index("slot_s")
    low, high = stats.t.interval(0.95, len(a) - 1, loc=np.mean(a), scale=stats.sem(a))
    assert out.loc[1.0, "mean"] == pytest.approx(np.mean(a))
    assert (out.loc[1.0, "ci_low"], out.loc[1.0, "ci_high"]) == pytest.approx((low, high))
    # The Welch interval contains 0 exactly when Welch's t-test has p > 0.05.
    test = stats.ttest_ind(a, b, equal_var=False)
    diff_low, diff_high = out.loc[1.0, "diff_ci_low"], out.loc[1.0, "diff_ci_high"]
    assert out.loc[1.0, "diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert (diff_low > 0) == (test.pvalue < 0.05)
    # Half width = t * se with Welch's degrees of freedom, checked through the t statistic.
    se = (out.loc[1.0, "diff"]) / test.statistic
    dof = test.df
    assert (diff_high - diff_low) / 2 == pytest.approx(stats.t.ppf(0.975, dof) * se)
    assert np.isnan(out.loc[2.5, "diff"])


def test_unknown_columns_and_baselines_are_named() -> None:
    summary = pd.DataFrame({"x": [1, 2], "y": [0.1, 0.2]})
    with pytest.raises(KeyError, match="no column 'z'"):
        compare_runs(summary, "z", "y")
    with pytest.raises(KeyError, match="baseline 7"):
        compare_runs(summary, "x", "y", baseline=7)


def test_mean_spread_is_the_mean_and_sample_deviation_of_the_values_present() -> None:
    # 1, 2, 4 (and a missing value): mean 7/3, sample variance ((4/3)^2 + (1/3)^2 + (5/3)^2) / 2 = 7/3.
    assert mean_spread([1.0, 2.0, np.nan, 4.0], 3) == f"{7 / 3:.3f} ± {np.sqrt(7 / 3):.3f}"
    assert mean_spread([2e6], 0, 1e-6) == "2 ± 0"  # one value: no spread
    assert mean_spread([np.nan], 1) == "–" and mean_spread([], 1, empty="never") == "never"


def test_saving_is_how_many_times_the_cost_goes_into_the_reference() -> None:
    from cosim.analysis import saving

    assert saving(10.0, 4.0) == "2.5x"
    assert saving(10.0, 0.0) == "already there"
    assert saving(10.0, float("nan")) == "–"


def test_experiment_arguments_exit_2_naming_directories_without_results(
    tmp_path, monkeypatch, capsys
) -> None:
    from cosim.analysis import experiment_arguments

    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "results.parquet").write_bytes(b"")
    monkeypatch.setattr("sys.argv", ["script", str(tmp_path / "done")])
    assert experiment_arguments("d")[1] == [tmp_path / "done"]
    monkeypatch.setattr("sys.argv", ["script", str(tmp_path / "done"), str(tmp_path / "empty")])
    with pytest.raises(SystemExit) as exit_info:
        experiment_arguments("d")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"no results.parquet in {tmp_path / 'empty'};" in err and "done" not in err.split("in ", 1)[1]


def test_paired_difference_gives_the_t_interval_and_p_value_of_the_differences() -> None:
    r = paired_difference(pd.Series([1.0, 2.0, 3.0, float("nan")]))
    # mean 2, sd 1, n 3: half width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051; t = 2 sqrt(3).
    assert r["n"] == 3 and r["mean"] == pytest.approx(2.0)
    assert r["high"] - r["mean"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert r["low"] == pytest.approx(2.0 - 4.302653 / math.sqrt(3), rel=1e-6)
    assert r["p"] == pytest.approx(0.07418, abs=1e-4)  # two-sided, t = 3.4641 on 2 degrees of freedom
    same = paired_difference(pd.Series([0.0, 0.0, 0.0]))
    assert same["mean"] == 0.0 and math.isnan(same["p"])  # no spread: no test
    rounding = paired_difference(pd.Series([0.86 - 0.80, 0.96 - 0.90, 0.66 - 0.60]))  # 0.06 up to rounding
    assert rounding["mean"] == pytest.approx(0.06) and math.isnan(rounding["p"])
    assert math.isnan(paired_difference(pd.Series([0.5]))["low"])
    assert difference_cell(r) == "+2.00 [-0.48, +4.48]" and p_cell(r) == "0.07"
    assert difference_cell(paired_difference(pd.Series([], dtype=float))) == "–" and p_cell(same) == "–"
