"""Execute the sweep latency notebook headless on a sweep directory.

    .venv/bin/python analysis/run_notebook.py runs/slot_time executed.ipynb

Writes the executed notebook (tables and figures in its outputs) to the given path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbclient
import nbformat

NOTEBOOK = Path(__file__).resolve().parent / "sweep_latency.ipynb"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    sweep_dir, out = Path(argv[0]), Path(argv[1])
    if not (sweep_dir / "summary.parquet").is_file():
        print(f"error: {sweep_dir}: not a sweep directory (no summary.parquet)", file=sys.stderr)
        return 2
    os.environ["COSIM_SWEEP_DIR"] = str(sweep_dir.resolve())
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    nbformat.write(nb, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
