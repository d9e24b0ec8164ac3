"""The ns-3 network backend (``network.backend: ns3``); see :mod:`cosim.network.ns3.backend`.

Nothing here imports ns-3: importing this package is free, and ns-3 (about 20 s) is
imported once per process, on first use, by :mod:`cosim.network.ns3._loader`.
"""
