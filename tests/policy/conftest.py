"""Fixtures of the policy tests: residual terms built by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest


@dataclass(frozen=True, eq=False)
class Terms:
    """The attributes `decide` reads (cosim.learning.residuals.Residuals has the same)."""

    learn: np.ndarray
    drift: np.ndarray
    consensus: np.ndarray
    disagreement: np.ndarray
    kappa: np.ndarray
    magnitude: np.ndarray | float = 1.0
    gamma: float = 0.5
    n_components: int = 1
    eta: float = 0.1
    tau: int = 5


@pytest.fixture
def make_terms() -> Callable[..., Terms]:
    """``make_terms(learn=..., drift=..., consensus=..., **rest)``: three groups, all terms 0.1 unless given.

    ``disagreement`` defaults to ``consensus`` (no exchanges planned), ``kappa`` to 0.5.
    """

    def make(**values: Any) -> Terms:
        def array(name: str, default: Any) -> np.ndarray:
            return np.asarray(values.pop(name, default), dtype=float)

        learn, drift, consensus = (array(k, [0.1, 0.1, 0.1]) for k in ("learn", "drift", "consensus"))
        return Terms(
            learn=learn,
            drift=drift,
            consensus=consensus,
            disagreement=array("disagreement", consensus),
            kappa=array("kappa", np.full(len(learn), 0.5)),
            **values,
        )

    return make
