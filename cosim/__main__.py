"""``python -m cosim``: the same as the ``cosim`` command."""

from cosim.cli.main import main

main()
