"""Analysis of a finished run: latency breakdown, communication, accuracy around events, reports.

Reads only the trace (docs/trace.md) through pandas; nothing here imports the engine,
SimPy or torch.  :mod:`cosim.analysis.report` (matplotlib) is imported only when used.
"""

from cosim.analysis.breakdown import (
    MEMBERSHIP_KINDS,
    PHASES,
    accuracy_timeline,
    communication_totals,
    event_recovery,
    group_bits,
    latency_breakdown,
    round_breakdown,
)
from cosim.analysis.compare import (
    against_retrain,
    beside_replay,
    compare_runs,
    difference_cell,
    difference_cells,
    mean_spread,
    p_cell,
    paired_difference,
    saving,
)
from cosim.analysis.load import (
    Run,
    experiment_arguments,
    experiment_report,
    load_run,
    load_runs,
    one_run_each,
)

__all__ = [
    "MEMBERSHIP_KINDS",
    "PHASES",
    "Run",
    "accuracy_timeline",
    "against_retrain",
    "beside_replay",
    "communication_totals",
    "compare_runs",
    "difference_cell",
    "difference_cells",
    "event_recovery",
    "experiment_arguments",
    "experiment_report",
    "group_bits",
    "latency_breakdown",
    "load_run",
    "load_runs",
    "mean_spread",
    "one_run_each",
    "p_cell",
    "paired_difference",
    "round_breakdown",
    "saving",
]
