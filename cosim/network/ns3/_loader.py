"""Import ns-3 once per process, safely.

``from ns import ns`` parses the ns-3 headers with cling (15-25 s) and, while doing
so, looks for ns-3 libraries by globbing ``**/*.so*`` under the working directory and
every PATH / LD_LIBRARY_PATH entry.  Importing from a large working directory (``/``,
a home directory) crawls the disk, and a second ns-3 build reachable that way makes
the import fail with "There are multiple build profiles for module ...".  So the
import runs with the working directory switched to a small empty directory, and
that failure becomes an :class:`Ns3ImportError` that names its cause.

Python caches the module, so every call after the first is free.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from functools import cache
from typing import Any

__all__ = ["INSTALL_HINT", "Ns3ImportError", "cpp", "import_seconds", "load_ns"]

INSTALL_HINT = "pip install 'ns3==3.44.post0' (or: pip install 'cosim[ns3]')"


class Ns3ImportError(ImportError):
    """ns-3's Python bindings are missing or cannot be loaded; the message says why and what to do."""


@cache
def _load() -> tuple[Any, float]:
    try:
        import cppyy  # noqa: F401  (a cheap probe: is the wheel installed at all?)
    except ImportError as err:
        raise Ns3ImportError(
            f"the ns3 backend needs ns-3's Python bindings: {INSTALL_HINT} ({err})"
        ) from None
    started = time.perf_counter()
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="cosim-ns3-import-") as quiet_dir:
        os.chdir(quiet_dir)
        try:
            from ns import ns
        except Exception as err:
            text = str(err)
            if "multiple build profiles" in text:
                raise Ns3ImportError(
                    "ns-3 found more than one ns-3 build: the ns3 package globs for ns-3 libraries in "
                    "every PATH and LD_LIBRARY_PATH entry, so another ns-3 install (a second virtualenv, "
                    "an ns-3 build tree) reachable from them clashes with the one in this environment. "
                    f"Remove it from PATH/LD_LIBRARY_PATH. Original error: {text}"
                ) from None
            raise Ns3ImportError(f"importing ns-3 failed: {text}; reinstall with {INSTALL_HINT}") from err
        finally:
            with contextlib.suppress(OSError):
                os.chdir(previous)
    _default_abort()
    return ns, time.perf_counter() - started


def _default_abort() -> None:
    """Let an ns-3 abort end the process at once.

    cling installs its own SIGABRT/SIGSEGV handlers, which print a stack trace through
    gdb; in a forked run process that can hang instead of dying, and then nobody learns
    that the run failed.  With the default action the process dies and ``cosim run``
    marks the run interrupted with the signal.
    """
    import signal

    for sig in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE):
        with contextlib.suppress(ValueError, OSError):  # not in the main thread
            signal.signal(sig, signal.SIG_DFL)


def load_ns() -> Any:
    """The ``ns`` namespace of ns-3's cppyy bindings (imported on the first call)."""
    return _load()[0]


def import_seconds() -> float:
    """Wall-clock seconds the first :func:`load_ns` took in this process."""
    return _load()[1]


def cpp() -> Any:
    """cppyy's global C++ namespace (``std``, and what :func:`cppyy.cppdef` added), after ns-3."""
    load_ns()
    import cppyy

    return cppyy.gbl
