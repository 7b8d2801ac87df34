"""Ctrl-C while constriction runs: the handler waits until the native call is over (no Rust panic, no
"damaged stream" for an interrupted decode); and a Ctrl-C while a batch starts its workers is not lost."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import constriction
import numpy as np
import pytest

from hificli.entropy import coder
from hificli.entropy.interrupts import deferred_interrupts
from hificli.entropy.tables import latent_tables


@pytest.fixture
def events() -> Iterator[list[str]]:
    """A SIGINT handler that logs "handler" and raises KeyboardInterrupt, like Python's own."""
    log: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        log.append("handler")
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield log
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_inside_the_block_runs_its_handler_on_exit(events: list[str]) -> None:
    installed = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # twice: the handler still runs once
        sum(range(1000))  # bytecode after the signal: where Python would run the handler
        events.append("block finished")
    assert events == ["block finished", "handler"]
    assert signal.getsignal(signal.SIGINT) is installed


def test_no_signal_leaves_handlers_as_they_were(events: list[str]) -> None:
    installed = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with deferred_interrupts():
        pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == installed
    assert events == []


class _SignalledAnsCoder:
    """constriction's AnsCoder, with a SIGINT arriving during each decode (as Ctrl-C might)."""

    def __init__(self, log: list[str], *args: Any) -> None:
        self._coder = constriction.stream.stack.AnsCoder(*args)
        self._log = log

    def _signalled(self, call: Any, *args: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))
        out = call(*args)
        self._log.append("native call returned")
        return out

    def decode(self, *args: Any) -> Any:
        return self._signalled(self._coder.decode, *args)

    def encode_reverse(self, *args: Any) -> Any:
        return self._signalled(self._coder.encode_reverse, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._coder, name)


@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_coding_interrupted_in_constriction_raises_keyboard_interrupt_after_it(
    direction: str, events: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = latent_tables("gaussian")
    rng = np.random.default_rng(0)
    indexes = rng.integers(0, table.num_rows, size=(4, 16, 16))
    symbols = rng.integers(-3, 4, size=indexes.shape).astype(np.int32)
    data = coder.encode_symbols(symbols, indexes, table)
    stream = constriction.stream
    fake = SimpleNamespace(
        stack=SimpleNamespace(AnsCoder=lambda *args: _SignalledAnsCoder(events, *args)), model=stream.model
    )
    monkeypatch.setattr(coder, "_constriction", lambda: fake)
    with pytest.raises(KeyboardInterrupt):  # for decode: not CorruptFileError
        if direction == "encode":
            coder.encode_symbols(symbols, indexes, table)
        else:
            coder.decode_symbols(data, indexes, table)
    assert events[-1] == "handler" and events.count("handler") == 1
    assert "native call returned" in events
    monkeypatch.undo()
    assert np.array_equal(coder.decode_symbols(data, indexes, table), symbols)


def test_sigint_while_workers_start_is_delivered_after(events: list[str]) -> None:
    """A Ctrl-C while a batch starts its workers (SIGINT held for them) is not lost: it arrives after the
    block. The signal is sent to the main thread itself: sent to the process, another thread of it
    (pytest-xdist's) may take it at any moment, even after the check is over, and stop the test run."""
    import threading

    from hificli.cli.batch import _sigint_held

    def send() -> None:
        if hasattr(signal, "pthread_kill"):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt), _sigint_held():
        send()
        sum(range(1000))
        events.append("workers started")
    assert events == ["workers started", "handler"]
