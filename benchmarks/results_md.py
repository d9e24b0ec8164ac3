"""Write one benchmark's section into ``benchmarks/RESULTS.md``, leaving the others alone."""

from __future__ import annotations

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
