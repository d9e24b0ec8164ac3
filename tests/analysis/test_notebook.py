"""The batch-analysis notebook runs headless on a small sweep, and its outputs hold the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

NOTEBOOK = Path(__file__).resolve().parents[2] / "analysis" / "sweep_latency.ipynb"


def test_the_notebook_runs_on_a_sweep(tmp_path: Path, tiny_scenario: dict[str, Any], monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from cosim.sweep import load_sweep, plan_sweep, run_sweep

    base = tiny_scenario | {
        "training": {"rounds": 4},
        "events": [{"kind": "leave", "device": 1, "round": 2}],
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"name": "nb", "base": "base.yaml", "seeds": [1, 2], "grid": {"network.slot_s": [0.5, 1.0]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    spec, raw, base_dir = load_sweep(tmp_path / "sweep.yaml")
    run_sweep(plan_sweep(spec, raw, base_dir), tmp_path / "out", jobs=2)

    monkeypatch.setenv("COSIM_SWEEP_DIR", str(tmp_path / "out"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()

    outputs = [cell.get("outputs", []) for cell in nb.cells if cell.cell_type == "code"]
    html = ["".join(o.get("data", {}).get("text/html", "")) for cell in outputs for o in cell]
    text = "\n".join(html)
    for column in ("compute_s", "transmission_s", "waiting_s", "recovery_s"):
        assert column in text, column
    assert text.count("<table") >= 5
    assert "diff_ci_low" in text
    assert not any(o.get("output_type") == "error" for cell in outputs for o in cell)
