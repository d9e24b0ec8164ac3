"""The benchmark scripts time methods by name: those names must exist."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench_quickstart():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_quickstart

        yield bench_quickstart
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_quickstart_benchmark_times_methods_that_exist(bench_quickstart) -> None:
    from cosim.learning.learner import SlotLearner
    from cosim.network.builtin import BuiltinBackend
    from cosim.network.ns3.backend import Ns3Backend

    missing = [n for n in bench_quickstart.LEARNER_METHODS if not callable(getattr(SlotLearner, n, None))]
    missing += [
        f"{cls.__name__}.{n}"
        for cls in (BuiltinBackend, Ns3Backend)
        for n in bench_quickstart.NETWORK_METHODS
        if not callable(getattr(cls, n, None))
    ]
    assert missing == []
