"""Hold back Python signal handlers while native code (constriction) runs.

constriction calls back into Python (numpy's API capsule on first use), and a Python signal handler
may run there. One that raises (KeyboardInterrupt on Ctrl-C) makes the Rust side panic: a panic
message on stderr and a PanicException that reads as a damaged stream. Inside
:func:`deferred_interrupts` SIGINT and SIGTERM only get recorded; their handlers run when it exits.
Blocking the signals (``pthread_sigmask``) would not do: another thread (torch's) may take the
signal, and CPython still runs the handler in the main thread, wherever it is.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Record SIGINT/SIGTERM while the block runs; then raise each one again (once) for its own handler.

    Only Python-level handlers are held (a default SIGTERM still ends the process at once), and only
    in the main thread, the one where CPython runs them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: set[int] = set()

    def record(signum: int, frame: FrameType | None) -> None:
        caught.add(signum)

    previous: dict[int, Any] = {}
    for signum in HELD_SIGNALS:
        if callable(signal.getsignal(signum)):
            previous[signum] = signal.signal(signum, record)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in sorted(caught):  # each handler runs now; once one raises (KeyboardInterrupt), the
            signal.raise_signal(signum)  # process is stopping and the rest are not raised again
