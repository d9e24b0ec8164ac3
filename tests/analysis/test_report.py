"""cosim.analysis.report: the Markdown report and its figures."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from cosim.analysis.report import write_report

EVENTS = "events=[{kind: leave, device: 1, round: 1}, {kind: join, round: 2}]"
FIGURES = ("accuracy", "latency", "link_rates", "bits", "group_bits")


@pytest.fixture(scope="module")
def report(run_tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(report.md, the run directory) for the tiny run with a leave and a join."""
    run_dir = run_tiny(EVENTS).out_dir
    out = tmp_path_factory.mktemp("report")
    return write_report([run_dir], out), run_dir


def test_report_references_every_figure_and_they_exist(report: tuple[Path, Path]) -> None:
    path, run_dir = report
    assert path.name == "report.md" and path.is_file()
    text = path.read_text(encoding="utf-8")
    referenced = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", text)
    assert sorted(referenced) == sorted(f"{run_dir.name}_{name}.png" for name in FIGURES)
    for name in referenced:
        figure = path.parent / name
        assert figure.is_file() and figure.stat().st_size > 0, name
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # No figure on disk that the report does not mention.
    assert sorted(p.name for p in path.parent.glob("*.png")) == sorted(referenced)


def test_report_has_the_tables(report: tuple[Path, Path]) -> None:
    text = report[0].read_text(encoding="utf-8")
    for heading in (
        "### Accuracy",
        "### Recovery after membership events",
        "### Latency breakdown",
        "### Network",
    ):
        assert heading in text
    assert "| 1 |" in text and "| leave | 1 | retain |" in text
    assert "| join | 4 | newcomer |" in text
    for phase in ("compute", "transmission", "retransmission (loss)", "waiting", "**round duration**"):
        assert f"| {phase} |" in text


def test_two_runs_of_the_same_name_get_distinct_figures(report: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir = report[1]
    twin = tmp_path / "elsewhere" / run_dir.name  # another run directory of the same name
    shutil.copytree(run_dir, twin)
    path = write_report([run_dir, twin], tmp_path)
    referenced = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", path.read_text(encoding="utf-8"))
    assert len(referenced) == 2 * len(FIGURES) == len(set(referenced))
    text = path.read_text(encoding="utf-8")
    assert f"## Run `{run_dir}`" in text and f"## Run `{twin}`" in text
    assert all((tmp_path / name).stat().st_size > 0 for name in referenced)


def test_report_rejects_the_same_run_given_twice(report: tuple[Path, Path], tmp_path: Path) -> None:
    run_dir = report[1]
    with pytest.raises(ValueError, match="given twice"):
        write_report([run_dir, run_dir / ".." / run_dir.name], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_rejects_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        write_report([tmp_path], tmp_path / "out")


def test_the_bits_plot_stacks_every_bit_sent() -> None:
    import pandas as pd

    from cosim.analysis.report import _bits_series

    comm = pd.DataFrame(
        {
            "round": [0, 0, 1, 1, 1],
            "purpose": ["gossip", "gossip", "gossip", "sync", "pull"],
            "bits": [100, 50, 80, 30, 40],
            "bits_delivered": [100, 0, 60, 30, 40],
        }
    )
    rounds, series = _bits_series(comm)
    assert rounds.tolist() == [0, 1]
    assert sum(series.values()).tolist() == [150, 150]  # every purpose, the sync round included
    assert series["correction's extra exchanges"].tolist() == [0, 30]
    assert series["slot exchange, lost"].tolist() == [50, 20]


def test_a_trace_without_rounds_is_refused(report: tuple[Path, Path], tmp_path: Path) -> None:
    import pandas as pd

    empty = tmp_path / "empty"
    shutil.copytree(report[1], empty)
    rounds = pd.read_parquet(empty / "rounds.parquet")
    rounds.iloc[0:0].to_parquet(empty / "rounds.parquet")
    with pytest.raises(ValueError, match=r"empty: its trace holds no round \(rounds.parquet is empty\)"):
        write_report([empty], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_unfinished_last_round_is_named_in_the_header(report: tuple[Path, Path], tmp_path: Path) -> None:
    import pandas as pd

    cut = tmp_path / "cut"
    shutil.copytree(report[1], cut)
    rounds = pd.read_parquet(cut / "rounds.parquet")
    last = int(rounds["round"].max())
    rounds[rounds["round"] < last].to_parquet(cut / "rounds.parquet")  # its messages stay in transfers
    text = write_report([cut], tmp_path / "out").read_text(encoding="utf-8")
    assert f"| {last} (and round {last} unfinished) |" in text


def test_a_report_written_again_leaves_no_figure_of_the_earlier_one(
    report: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir = report[1]
    other = tmp_path / "other_run"
    shutil.copytree(run_dir, other)
    out = tmp_path / "out"
    write_report([run_dir, other], out)
    (out / "notes.txt").write_text("mine")
    assert len(list(out.glob("*.png"))) == 2 * len(FIGURES)
    path = write_report([run_dir], out)
    referenced = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", path.read_text(encoding="utf-8"))
    assert sorted(p.name for p in out.glob("*.png")) == sorted(referenced)
    assert (out / "notes.txt").read_text() == "mine"


def test_a_report_md_cosim_did_not_write_is_not_replaced(report: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "notes"
    out.mkdir()
    mine = "# Notes\n\n![the design](architecture.png)\n![old](run_bits.png)\n"
    (out / "report.md").write_text(mine)
    (out / "run_bits.png").write_bytes(b"mine")
    with pytest.raises(ValueError, match=r"notes/report.md: not a report cosim wrote, so it is not replaced"):
        write_report([report[1]], out)
    assert (out / "report.md").read_text() == mine
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "run_bits.png"]
