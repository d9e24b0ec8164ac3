"""Execute the sweep latency notebook headless on a sweep directory.

    .venv/bin/python analysis/run_notebook.py runs/slot_time executed.ipynb

Writes the executed notebook (tables and figures in its outputs) to the given path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbclient
import nbclient.exceptions
import nbformat
import pandas as pd

NOTEBOOK = Path(__file__).resolve().parent / "sweep_latency.ipynb"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    sweep_dir, out = Path(argv[0]), Path(argv[1])
    if not (sweep_dir / "summary.parquet").is_file():
        print(f"error: {sweep_dir}: not a sweep directory (no summary.parquet)", file=sys.stderr)
        return 2
    if not out.parent.is_dir():
        print(f"error: {out}: no directory {out.parent} to write the notebook into", file=sys.stderr)
        return 2
    if out.is_dir():
        print(f"error: {out}: is a directory; give the path of the notebook file to write", file=sys.stderr)
        return 2
    status = pd.read_parquet(sweep_dir / "summary.parquet", columns=["status"])["status"]
    if not (status == "complete").any():
        counts = ", ".join(f"{n} {s}" for s, n in status.value_counts().items()) or "none"
        print(f"error: {sweep_dir}: no complete run to analyse (runs: {counts})", file=sys.stderr)
        return 2
    os.environ["COSIM_SWEEP_DIR"] = str(sweep_dir.resolve())
    nb = nbformat.read(NOTEBOOK, as_version=4)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    except nbclient.exceptions.CellExecutionError as err:
        failed = [
            i
            for i, c in enumerate(nb.cells)
            if any(o.get("output_type") == "error" for o in c.get("outputs", []))
        ]
        cell = failed[0] if failed else "?"
        print(
            f"error: {sweep_dir}: the notebook stopped at cell {cell}: {err.ename}: {err.evalue}",
            file=sys.stderr,
        )
        return 2
    nbformat.write(nb, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
