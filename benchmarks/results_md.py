"""Write one benchmark's section into ``benchmarks/RESULTS.md``, leaving the others alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(text: str, path: Path = RESULTS) -> None:
    """Put ``text`` (which starts with its ``## `` heading) in place of that section of ``path``.

    The section runs from its heading to the next ``## `` heading; a new section goes at the end.
    """
    heading = text.splitlines()[0]
    if not heading.startswith("## "):
        raise ValueError(f"a section starts with its '## ' heading, not {heading!r}")
    old = path.read_text() if path.is_file() else "# Benchmark results\n"
    text = text.strip("\n") + "\n"
    if heading in old.splitlines():
        head, _, rest = old.partition(heading + "\n")
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def measured_line() -> str:
    """The line that opens a section's body: when it was measured, and that the command follows."""
    return f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Command (repository root):"


def publish(lines: list[str], path: Path = RESULTS) -> None:
    """Print a section's lines and write them into ``path`` (:func:`write_section`)."""
    text = "\n".join(lines)
    print(text)
    write_section(text, path)
