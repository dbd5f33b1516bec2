"""Where long work is: throttled status lines for builds, and a heartbeat for silent runs.

A stage (cmake configure, a ninja build, the image build) is fed its output lines; at most one status line
every ``interval_s`` seconds says how far it got (``[123/456] 27%`` from ninja, ``step 3/9`` from a docker
build) and how long it has run, and a final line gives the elapsed time. Compile lines themselves are never
printed: they go to the stage's log only, so console logs stay small. Under GitHub Actions
(GITHUB_ACTIONS=true) a stage is a collapsible group (``::group::`` / ``::endgroup::``); elsewhere no markers.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from time import monotonic
from types import TracebackType

Clock = Callable[[], float]
Say = Callable[[str], None]

NINJA = re.compile(r"^\[(\d+)/(\d+)\]\s")  # ninja's default NINJA_STATUS, "[finished/total] "
DOCKER_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")  # the classic builder, as the Docker SDK streams it
DETAIL_CHARS = 70


def elapsed_text(seconds: float) -> str:
    """45s, 2m05s, 1h02m."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def in_github_actions(env: Mapping[str, str] | None = None) -> bool:
    return (os.environ if env is None else env).get("GITHUB_ACTIONS") == "true"


def _clip(text: str) -> str:
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


class Progress:
    """One long stage. Use as a context manager; feed it output with ``feed`` (safe from one reader thread)."""

    def __init__(
        self,
        title: str,
        *,
        say: Say = print,
        interval_s: float = 10.0,
        clock: Clock | None = None,
        github: bool | None = None,
    ) -> None:
        self.title = title
        self.say = say
        self.interval_s = interval_s
        self.clock = clock or monotonic  # looked up here, so tests can replace the module's clock
        self.github = in_github_actions() if github is None else github
        self.done = 0
        self.total = 0
        self.step_text = ""  # the docker step being run
        self.last_line = ""  # the latest line that carried no counter (cmake's "-- Detecting ...")
        self.outcome = "done"  # the caller may set "failed (exit 1)" before the stage ends
        self._kind = ""
        self._start = 0.0
        self._last_said = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> Progress:
        self._start = self._last_said = self.clock()
        if self.github:
            self.say(f"::group::{self.title}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and self.outcome == "done":
            self.outcome = "interrupted"
        if self.github:
            self.say("::endgroup::")  # the final line goes after it, so it shows with the group collapsed
        counter = f" ({self._counter()})" if self.total else ""
        self.say(f"  {self.title}: {self.outcome} in {elapsed_text(self.clock() - self._start)}{counter}")

    def feed(self, text: str) -> None:
        """One or more output lines (a docker stream chunk may hold several)."""
        with self._lock:
            for raw in text.splitlines():
                line = raw.strip()
                if not line:
                    continue
                if m := NINJA.match(line):
                    self._kind, self.done, self.total = "ninja", int(m[1]), int(m[2])
                elif m := DOCKER_STEP.match(line):
                    self._kind, self.done, self.total = "docker", int(m[1]), int(m[2])
                    self.step_text = m[3].strip()
                else:
                    self.last_line = line
            self._maybe_say()

    def tick(self) -> None:
        """Say the status if it is due, without new output (for callers with their own timer)."""
        with self._lock:
            self._maybe_say()

    def status(self) -> str:
        parts = [f"  {self.title}:"]
        if self.total:
            parts.append(self._counter())
        parts.append(f"{elapsed_text(self.clock() - self._start)} elapsed")
        line = " ".join(parts)
        if self._kind == "docker" and self.step_text:
            line += f": {_clip(self.step_text)}"
        elif not self.total and self.last_line:
            line += f", last: {_clip(self.last_line)}"
        return line

    def _counter(self) -> str:
        if self._kind == "docker":
            return f"step {self.done}/{self.total}"
        return f"[{self.done}/{self.total}] {self.done * 100 // self.total}%"

    def _maybe_say(self) -> None:
        now = self.clock()
        if now - self._last_said >= self.interval_s:
            self._last_said = now
            self.say(self.status())


@contextmanager
def heartbeat(
    title: str,
    *,
    say: Say = print,
    detail: Callable[[], str | None] = lambda: None,
    interval_s: float = 30.0,
    clock: Clock | None = None,
) -> Iterator[None]:
    """Every ``interval_s`` while the block runs: ``  TITLE: 1m00s elapsed, DETAIL`` (for runs that print nothing).

    ``detail`` is asked on the heartbeat's thread; a failure there costs the detail, never the run.
    """
    stop = threading.Event()
    now = clock or monotonic
    start = now()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                extra = detail()
            except Exception:
                extra = None
            say(f"  {title}: {elapsed_text(now() - start)} elapsed" + (f", {extra}" if extra else ""))

    thread = threading.Thread(target=beat, name=f"heartbeat {title}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
