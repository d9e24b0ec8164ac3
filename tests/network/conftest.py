"""Fixtures of the network tests: one ns-3 import per test session, shared by every ns3 test."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ns() -> Any:
    """ns-3's ``ns`` namespace, imported once (about 15-25 s); skips the test without the ns3 package."""
    if importlib.util.find_spec("ns") is None or importlib.util.find_spec("cppyy") is None:
        pytest.skip("the ns3 package is not installed (pip install 'ns3==3.44.post0')")
    from cosim.network.ns3._loader import load_ns

    return load_ns()
