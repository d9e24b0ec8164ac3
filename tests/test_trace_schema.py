from pathlib import Path

from cosim.trace.schema import TABLES, describe

DOC = Path(__file__).resolve().parent.parent / "docs" / "trace.md"


def test_the_trace_doc_is_generated_from_the_schema() -> None:
    assert DOC.read_text().endswith(describe())


def test_every_table_has_round_and_simulated_time() -> None:
    for table, cols in TABLES.items():
        names = [c for c, _, _ in cols]
        assert names[:2] == ["round", "time_s"], table
        assert len(set(names)) == len(names), table
