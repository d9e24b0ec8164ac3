"""Graph math against hand-computed values and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.graph import components, hop_distances, metropolis_hastings, spectral_gap
from cosim.learning.residuals import consensus_residual

SEEDS = range(12)


def random_graph(seed: int, n: int | None = None, p: float | None = None) -> np.ndarray:
    """A random undirected graph (symmetric bool adjacency, empty diagonal)."""
    rng = np.random.default_rng(seed)
    n = n if n is not None else int(rng.integers(2, 13))
    p = p if p is not None else float(rng.uniform(0.1, 0.8))
    upper = np.triu(rng.random((n, n)) < p, k=1)
    return upper | upper.T


def floyd_warshall(adjacency: np.ndarray) -> np.ndarray:
    """All-pairs fewest hops; inf where unreachable."""
    n = len(adjacency)
    dist = np.where(adjacency, 1.0, np.inf)
    np.fill_diagonal(dist, 0.0)
    for k in range(n):
        for i in range(n):
            for j in range(n):
                if dist[i, k] + dist[k, j] < dist[i, j]:
                    dist[i, j] = dist[i, k] + dist[k, j]
    return dist


# --------------------------------------------------------------------------- Metropolis-Hastings


def test_path_of_four_matches_the_hand_formula() -> None:
    # 0 - 1 - 2 - 3: degrees 1, 2, 2, 1, so every edge weighs 1 / (1 + 2) = 1/3.
    adjacency = np.zeros((4, 4), dtype=bool)
    for i in range(3):
        adjacency[i, i + 1] = adjacency[i + 1, i] = True
    third = 1.0 / 3.0
    expected = np.array(
        [
            [1 - third, third, 0.0, 0.0],
            [third, 1 - 2 * third, third, 0.0],
            [0.0, third, 1 - 2 * third, third],
            [0.0, 0.0, third, 1 - third],
        ]
    )
    np.testing.assert_allclose(metropolis_hastings(adjacency), expected, rtol=0, atol=1e-15)


def test_star_matches_the_hand_formula() -> None:
    # Hub 0 with 3 leaves: hub degree 3, every edge weighs 1 / (1 + 3) = 1/4.
    adjacency = np.zeros((4, 4), dtype=bool)
    adjacency[0, 1:] = adjacency[1:, 0] = True
    w = metropolis_hastings(adjacency)
    np.testing.assert_allclose(w[0], [0.25, 0.25, 0.25, 0.25], atol=1e-15)
    np.testing.assert_allclose(np.diag(w)[1:], [0.75, 0.75, 0.75], atol=1e-15)
    assert w[1, 2] == w[2, 3] == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_weights_are_symmetric_doubly_stochastic_and_on_the_graph(seed: int) -> None:
    adjacency = random_graph(seed)
    w = metropolis_hastings(adjacency)
    deg = adjacency.sum(axis=1)
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=0, atol=1e-12)
    assert (w >= 0).all()
    off_graph = ~adjacency & ~np.eye(len(w), dtype=bool)
    assert (w[off_graph] == 0).all()
    for i, j in zip(*np.nonzero(adjacency), strict=True):
        assert w[i, j] == 1.0 / (1.0 + max(deg[i], deg[j]))


def test_self_loops_in_the_adjacency_are_ignored() -> None:
    adjacency = random_graph(3, n=6, p=0.5)
    looped = adjacency | np.eye(6, dtype=bool)
    np.testing.assert_array_equal(metropolis_hastings(looped), metropolis_hastings(adjacency))


def test_an_isolated_node_keeps_all_its_weight() -> None:
    adjacency = np.zeros((3, 3), dtype=bool)
    adjacency[0, 1] = adjacency[1, 0] = True
    w = metropolis_hastings(adjacency)
    assert w[2, 2] == 1.0
    assert w[2, :2].sum() == 0.0


@pytest.mark.parametrize(
    "adjacency",
    [np.zeros((2, 3), dtype=bool), np.array([[False, True], [False, False]])],
    ids=["not square", "not symmetric"],
)
def test_a_bad_adjacency_is_rejected(adjacency: np.ndarray) -> None:
    with pytest.raises(ValueError, match="adjacency must be a square symmetric matrix"):
        metropolis_hastings(adjacency)


# --------------------------------------------------------------------------- spectral gap


@pytest.mark.parametrize("seed", SEEDS)
def test_spectral_gap_matches_a_dense_eigenvalue_computation(seed: int) -> None:
    w = metropolis_hastings(random_graph(seed))
    moduli = np.sort(np.abs(np.linalg.eigvals(w)))[::-1]
    # The largest eigenvalue of a doubly stochastic W is 1; the gap is 1 - the next modulus.
    assert moduli[0] == pytest.approx(1.0, abs=1e-12)
    assert spectral_gap(w) == pytest.approx(1.0 - moduli[1], abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 6, 7, 16])
def test_spectral_gap_of_the_complete_graph(n: int) -> None:
    # K_n: every weight 1/n, W = J/n, eigenvalues 1 and 0 (n - 1 times): gap 1, exactly, so
    # one exchange leaves no disagreement: (1 - gamma)^(2u) D is 0, not float noise.
    adjacency = ~np.eye(n, dtype=bool)
    w = metropolis_hastings(adjacency)
    np.testing.assert_allclose(w, np.full((n, n), 1 / n), atol=1e-15)
    assert spectral_gap(w) == 1.0
    assert consensus_residual(spectral_gap(w), np.array([1.0]), np.array([3.0]))[0] == 0.0


def test_spectral_gap_of_the_path_of_four() -> None:
    # Eigenvalues of the path's MH matrix (weights 1/3): 1, (1 + 2 cos(k pi / 4)) / 3 for k = 1..3.
    adjacency = np.zeros((4, 4), dtype=bool)
    for i in range(3):
        adjacency[i, i + 1] = adjacency[i + 1, i] = True
    expected = 1.0 - (1.0 + 2.0 * np.cos(np.pi / 4)) / 3.0
    assert spectral_gap(metropolis_hastings(adjacency)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_disconnected_graph_has_no_gap(seed: int) -> None:
    a, b = random_graph(seed, n=4), random_graph(seed + 100, n=5)
    adjacency = np.zeros((9, 9), dtype=bool)
    adjacency[:4, :4], adjacency[4:, 4:] = a, b
    assert spectral_gap(metropolis_hastings(adjacency)) == pytest.approx(0.0, abs=1e-12)


def test_a_single_node_has_no_gap() -> None:
    assert spectral_gap(np.ones((1, 1))) == 0.0


# --------------------------------------------------------------------------- connectivity


@pytest.mark.parametrize("seed", SEEDS)
def test_hop_distances_match_floyd_warshall(seed: int) -> None:
    adjacency = random_graph(seed, p=0.25)
    n = len(adjacency)
    all_pairs = floyd_warshall(adjacency)
    rng = np.random.default_rng(seed)
    for sources in ([0], [n - 1], sorted(rng.choice(n, size=min(3, n), replace=False).tolist())):
        brute = all_pairs[sources].min(axis=0)
        expected = np.where(np.isinf(brute), -1, brute).astype(np.int64)
        np.testing.assert_array_equal(hop_distances(adjacency, sources), expected)


def test_hop_distances_with_no_sources_reach_nothing() -> None:
    np.testing.assert_array_equal(hop_distances(random_graph(0, n=4, p=1.0), []), [-1, -1, -1, -1])


@pytest.mark.parametrize("seed", SEEDS)
def test_components_match_floyd_warshall(seed: int) -> None:
    adjacency = random_graph(seed, p=0.2)
    reach = np.isfinite(floyd_warshall(adjacency))
    expected: list[list[int]] = []
    for i in range(len(adjacency)):
        if not any(i in c for c in expected):
            expected.append([j for j in range(len(adjacency)) if reach[i, j]])
    assert components(adjacency) == expected


def test_components_by_hand() -> None:
    adjacency = np.zeros((6, 6), dtype=bool)
    for i, j in [(0, 3), (3, 5), (1, 4)]:
        adjacency[i, j] = adjacency[j, i] = True
    assert components(adjacency) == [[0, 3, 5], [1, 4], [2]]
