"""Every scenario that ships with cosim validates."""

from pathlib import Path

import pytest

from cosim.scenario import load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").rglob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_shipped_scenario_validates(path: Path) -> None:
    spec = load_scenario(path)
    assert spec.name == path.stem
