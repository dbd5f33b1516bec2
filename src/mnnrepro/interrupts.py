"""Ctrl-C and SIGTERM end a session within seconds, with what finished kept and nothing left running.

SIGINT and SIGTERM (what a cancelled CI job or a `kill` sends) both raise ``Interrupted``, a KeyboardInterrupt,
in the main thread. The runners stop their child process group or container when it passes through them
(runner.py, docker_runner.py); the session writes its reports, with the cells that did not finish marked
INTERRUPTED, and exits 128 + the signal number. While reports are written, further signals are held back.

No moment is left where a signal escapes that handling: a session holds signals from the moment its results
directory exists and lets them raise only while its cells run (``held`` around ``unheld``, in the one session
loop: workloads/base.py); a child is started with signals ``deferred`` until the runner knows it (so an
interrupt can stop it); and the process's last word (``last_word``) blocks them before it exits, so one that
came in time still ends in 128 + N.
"""

from __future__ import annotations

import signal
import threading
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
_noted: list[int] | None = None  # inside deferred() or last_word(): a signal is noted here instead of raised


def _raise(signum: int, _frame: FrameType | None) -> None:
    global _stopping
    if _noted is not None:
        _noted.append(signum)
        return
    if _stopping:
        return
    _stopping = True
    raise Interrupted(signum)


def _raise_noted(signums: list[int]) -> None:
    """The first signal noted while raising was put off, raised now (as _raise would have)."""
    global _stopping
    if signums and not _stopping:
        _stopping = True
        raise Interrupted(signums[0])


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
    with _handling(_raise):
        yield


@contextmanager
def deferred() -> Iterator[None]:
    """A signal inside the block raises Interrupted when the block ends, not inside it: for a step that must not
    be cut in two, e.g. starting a child, which an interrupt must find named to stop it (subprocess.Popen cut
    after its fork leaves the child running and unknown). Main thread only (signals are handled there)."""
    global _noted
    if _noted is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    _noted = []
    try:
        yield
    finally:
        noted, _noted = _noted, None
    _raise_noted(noted)


def last_word() -> int | None:
    """The process is about to exit: signals are blocked from here (one that comes later is too late and is
    dropped with the process; the fault battery reads this mask in /proc to know that), and the first one that
    came before is returned (its exit is then 128 + N)."""
    global _noted
    _noted = []  # from here a signal that _raise handles is noted, never raised
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)  # runs the handlers of signals that came before: noted
    pending = signal.sigpending()
    came = _noted + [sig for sig in HANDLED if sig in pending]
    return int(came[0]) if came else None


@contextmanager
def held() -> Iterator[list[int]]:
    """Signals that arrive inside the block are recorded, not raised (reports are written whole); the list
    names them."""
    seen: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)

    with _handling(note):
        yield seen


@contextmanager
def unheld(seen: list[int]) -> Iterator[None]:
    """Inside ``held`` (whose list is ``seen``): signals raise Interrupted again in this block, a signal held
    before it at once. Leaving the block holds them again; one that comes while it is left raises from the
    ``with`` statement, so a caller's ``except KeyboardInterrupt`` around it sees every signal that was not
    held."""
    with _handling(_raise) as handling:
        if handling:
            _raise_noted(seen)
        yield


@contextmanager
def _handling(handler: Callable[[int, FrameType | None], Any]) -> Iterator[bool]:
    """``handler`` for every handled signal inside the block (True), the previous handlers back after it, also when
    a signal that came meanwhile raises while they are put back (_restore). Outside the main thread signals are
    left alone (False): Python handles them there only."""
    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    try:
        for sig in HANDLED:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        yield False
        return
    try:
        yield True
    finally:
        _restore(previous)


def _restore(previous: dict[int, Any]) -> None:
    """Every handler back, also when a signal that came meanwhile raises from signal.signal (which runs pending
    handlers first); that Interrupted is raised after."""
    raised: KeyboardInterrupt | None = None
    for sig, handler in previous.items():
        try:
            signal.signal(sig, handler)
        except KeyboardInterrupt as exc:
            raised = exc
            signal.signal(sig, handler)  # the handler that raised set _stopping: it does not raise again
    if raised is not None:
        raise raised
