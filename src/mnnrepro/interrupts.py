"""Ctrl-C and SIGTERM end a session within seconds, with what finished kept and nothing left running.

SIGINT and SIGTERM (what a cancelled CI job or a `kill` sends) both raise ``Interrupted``, a KeyboardInterrupt,
in the main thread. The runners stop their child process group or container when it passes through them
(runner.py, docker_runner.py); the session writes its reports, with the cells that did not finish marked
INTERRUPTED, and exits 128 + the signal number. While reports are written, further signals are held back.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_stopping = False  # the first signal is being handled: later ones do not interrupt the cleanup it started


def _raise(signum: int, _frame: FrameType | None) -> None:
    global _stopping
    if _stopping:
        return
    _stopping = True
    raise Interrupted(signum)


def install_for_process() -> None:
    """`python -m mnnrepro`: the handlers stay until the process exits, so a signal between the end of the
    command and the exit still ends in 128 + N (__main__ catches it), never in a death by the default handler."""
    global _stopping
    _stopping = False
    for sig in HANDLED:
        signal.signal(sig, _raise)


def signal_name(exc: BaseException) -> str:
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


def exit_code(exc: BaseException) -> int:
    """128 + N, as a shell reports a process ended by signal N (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


@contextmanager
def installed() -> Iterator[None]:
    """SIGINT/SIGTERM raise Interrupted inside the block; the previous handlers come back after it."""
    global _stopping
    _stopping = False
    previous: dict[int, Any] = {}
    try:
        for sig in HANDLED:
            previous[sig] = signal.signal(sig, _raise)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def held() -> Iterator[list[int]]:
    """Signals that arrive inside the block are recorded, not raised (reports are written whole); the list
    names them."""
    seen: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    try:
        for sig in HANDLED:
            previous[sig] = signal.signal(sig, note)
    except ValueError:
        yield seen
        return
    try:
        yield seen
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
