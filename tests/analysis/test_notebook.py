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
    # As scenarios/sweeps/slot_time.yaml: a grid, and a set block every run shares.
    sweep = {
        "name": "nb",
        "base": "base.yaml",
        "seeds": [1, 2],
        "grid": {"network.slot_s": [0.5, 1.0]},
        "set": {"training.local_steps": 2},
    }
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
    # The phase shares are drawn, and the settings compared are the swept slot times, not
    # the override every run shares.
    assert any("image/png" in o.get("data", {}) for cell in outputs for o in cell)
    comparison = outputs[-1][-1]["data"]["text/plain"]
    assert "network.slot_s" in comparison and "training.local_steps" not in comparison
    assert "0.5" in comparison and "1.0" in comparison


def test_the_notebook_runner_names_bad_input(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pandas as pd

    pytest.importorskip("nbclient")
    runner = NOTEBOOK.parent / "run_notebook.py"
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    summary = pd.DataFrame({"run": ["a", "b"], "status": ["interrupted", "failed"]})
    summary.to_parquet(sweep / "summary.parquet")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(runner), *args], capture_output=True, text=True)

    missing_dir = run(str(sweep), str(tmp_path / "nowhere" / "out.ipynb"))
    assert missing_dir.returncode == 2 and "no directory" in missing_dir.stderr
    assert "Traceback" not in missing_dir.stderr
    nothing_complete = run(str(sweep), str(tmp_path / "out.ipynb"))
    assert nothing_complete.returncode == 2
    assert "no complete run to analyse (runs: 1 interrupted, 1 failed)" in nothing_complete.stderr
    assert not (tmp_path / "out.ipynb").exists()
