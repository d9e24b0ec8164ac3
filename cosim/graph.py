"""Pure graph math for gossip: mixing weights, spectral gap, connectivity, flooding."""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["components", "hop_distances", "metropolis_hastings", "spectral_gap"]


def metropolis_hastings(adjacency: np.ndarray) -> np.ndarray:
    """Metropolis-Hastings mixing matrix of an undirected graph.

    ``w_ij = 1 / (1 + max(deg_i, deg_j))`` for each edge, ``w_ii = 1 - sum_j w_ij``.
    The result is symmetric and doubly stochastic.
    """
    adj = np.asarray(adjacency, dtype=bool)
    if adj.shape[0] != adj.shape[1] or not np.array_equal(adj, adj.T):
        raise ValueError("adjacency must be a square symmetric matrix")
    adj = adj & ~np.eye(len(adj), dtype=bool)
    deg = adj.sum(axis=1)
    w = np.where(adj, 1.0 / (1.0 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    w[np.diag_indices_from(w)] = 1.0 - w.sum(axis=1)
    return w


def spectral_gap(weights: np.ndarray) -> float:
    """``1 - max(|lambda_2|, |lambda_n|)`` of a symmetric mixing matrix (0 for a single node).

    A modulus within the eigen-solver's rounding (``8 n eps``) of 0 is 0: the complete
    graph's ``W = J / n`` has the gap 1 exactly, not ``1 - 1e-16``, whose ``(1 - gamma)^(2u)``
    of 1e-32 would make a consensus residual of float noise (and a ratio of 1e30 against
    it when a link drops).
    """
    if len(weights) < 2:
        return 0.0
    eig = np.sort(np.linalg.eigvalsh(weights))
    second = max(abs(eig[-2]), abs(eig[0]))
    if second <= 8 * len(weights) * np.finfo(float).eps:
        second = 0.0
    return float(1.0 - second)


def components(adjacency: np.ndarray) -> list[list[int]]:
    """Connected components (lists of indices, each sorted; ordered by their first index)."""
    n = len(adjacency)
    seen = np.zeros(n, dtype=bool)
    out = []
    for start in range(n):
        if seen[start]:
            continue
        dist = hop_distances(adjacency, [start])
        members = [i for i in range(n) if dist[i] >= 0]
        seen[members] = True
        out.append(members)
    return out


def hop_distances(adjacency: np.ndarray, sources: list[int]) -> np.ndarray:
    """Fewest hops from any source to each node (breadth-first); -1 where unreachable."""
    n = len(adjacency)
    dist = np.full(n, -1, dtype=np.int64)
    queue: deque[int] = deque()
    for s in sources:
        dist[s] = 0
        queue.append(s)
    while queue:
        u = queue.popleft()
        for v in np.flatnonzero(adjacency[u]):
            if dist[v] < 0:
                dist[v] = dist[u] + 1
                queue.append(int(v))
    return dist
