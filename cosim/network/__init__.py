"""Network backends behind one seam (see :mod:`cosim.network.base`).

:func:`create_network` builds the backend a scenario names.  Backends are looked up
by name and imported only when used, so a heavy backend (ns-3) costs nothing to a
run that does not ask for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

from cosim.network.base import LinkState, Message, NetworkBackend, TransferResult

if TYPE_CHECKING:
    from cosim.scenario import Network

__all__ = ["BACKENDS", "LinkState", "Message", "NetworkBackend", "TransferResult", "create_network"]

BACKENDS = MappingProxyType(
    {"builtin": "cosim.network.builtin:BuiltinBackend", "ns3": "cosim.network.ns3.backend:Ns3Backend"}
)
"""Backend name (``network.backend`` in a scenario) -> ``"module:Class"``; the class is called
as ``Class(spec, device_ids, seed)``."""


def create_network(spec: Network, device_ids: Sequence[int], seed: int) -> NetworkBackend:
    """The backend named by ``spec.backend``, for ``device_ids`` (every device that ever takes part).

    ValueError if the backend name is unknown; the message lists the known ones.
    """
    name = getattr(spec, "backend", None)
    target = BACKENDS.get(name) if isinstance(name, str) else None
    if target is None:
        raise ValueError(f"unknown network backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    module_name, _, class_name = target.partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: NetworkBackend = backend_class(spec, device_ids, seed)
    return backend
