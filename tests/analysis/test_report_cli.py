"""`cosim report` on a (shrunk) quickstart run writes every figure it references."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from cosim.cli.main import app


def test_cosim_report_on_the_quickstart(tmp_path: Path, tiny_overrides: list[str]) -> None:
    runner = CliRunner()
    root = Path(__file__).resolve().parents[2]
    args = ["run", str(root / "scenarios" / "quickstart.yaml"), "--out", str(tmp_path / "run"), "-q"]
    for override in [*tiny_overrides, "training.rounds=6", "events.0.round=2", "events.1.round=4"]:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report" / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(figures) == 5
    for name in figures:
        path = tmp_path / "report" / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A run's manifest given for the run, and a report directory that cannot be made.
    manifest = tmp_path / "run" / "manifest.json"
    result = runner.invoke(app, ["report", str(manifest), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2
    assert "not a run directory (a file; give the directory that holds it)" in " ".join(result.output.split())
    # Nothing can be made under /proc, not even by root.
    result = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", "/proc/cosim-report"])
    assert result.exit_code == 2
    assert "cannot make the report's directory" in " ".join(result.output.split())
