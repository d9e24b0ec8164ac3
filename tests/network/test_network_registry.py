"""create_network: backend lookup by name."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from cosim.network import BACKENDS, create_network
from cosim.network.builtin import BuiltinBackend
from cosim.scenario import BuiltinNetwork


def test_builtin_backend_is_created() -> None:
    net = create_network(BuiltinNetwork(), [0, 1, 2], seed=5)
    assert isinstance(net, BuiltinBackend)
    assert net.positions(0.0, [0, 1, 2]).shape == (3, 2)


def test_unknown_backend_lists_the_known_ones() -> None:
    spec: Any = SimpleNamespace(backend="omnet")
    with pytest.raises(ValueError, match=r"unknown network backend 'omnet'; known: builtin"):
        create_network(spec, [0, 1], seed=0)


def test_every_registered_backend_names_a_module_and_class() -> None:
    for name, target in BACKENDS.items():
        module, _, cls = target.partition(":")
        assert module.startswith("cosim.network.") and cls, name
