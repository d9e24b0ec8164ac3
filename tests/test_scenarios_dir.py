"""Every scenario and sweep that ships with cosim validates."""

from pathlib import Path

import pytest

from cosim.scenario import load_scenario
from cosim.sweep import load_sweep, plan_sweep

ROOT = Path(__file__).resolve().parent.parent / "scenarios"
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
SCENARIOS = sorted(p for p in ROOT.rglob("*.yaml") if p not in SWEEPS)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_validates(path: Path) -> None:
    spec = load_scenario(path)
    assert spec.name == path.stem


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_shipped_sweep_plans(path: Path) -> None:
    spec, base, base_dir = load_sweep(path)
    plan = plan_sweep(spec, base, base_dir)
    assert len(plan) == len(spec.seeds) * max(1, len(list(_product(spec.grid)))) * max(1, len(spec.runs))


def _product(grid: dict) -> list:
    import itertools

    return list(itertools.product(*grid.values())) if grid else []
