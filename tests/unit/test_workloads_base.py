"""The one session loop (workloads/base.py, issue 23) with a fake workload: whatever moment a signal comes, the
reports are written whole with what finished, the cells that did not run are named, and the exit says the
signal; a clean run exits with the workload's own code."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import interrupts
from mnnrepro.workloads import base


def _signal(signum: int = signal.SIGTERM) -> None:
    os.kill(os.getpid(), signum)


@dataclass
class Fake:
    """Three cells "a", "b", "c"; ``hooks`` send a signal at a named moment ("run b", "summarize", ...)."""

    results: Path
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)
    midway: bool = True  # stopped_midway keeps the partial result of the stopped cell
    code: int = 7
    said: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    shown: dict[str, Any] = field(default_factory=dict)

    def _at(self, moment: str) -> None:
        self.calls.append(moment)
        if moment in self.hooks:
            self.hooks[moment]()

    def plan(self) -> list[str]:
        return ["a", "b", "c"]

    def begin(self) -> None:
        self._at("begin")

    def run(self, cell: str) -> str:
        self._at(f"run {cell}")
        return f"{cell}: done"

    def stopped_midway(self, cell: str) -> str | None:
        self._at(f"midway {cell}")
        return f"{cell}: partial" if self.midway else None

    def summarize(self, runs: list[str], stopped: BaseException | None, not_run: list[str]) -> dict[str, Any]:
        self._at("summarize")
        return {"runs": list(runs), "stopped": interrupts.signal_name(stopped) if stopped else None, "not_run": not_run}

    def write_reports(self, summary: dict[str, Any]) -> list[Path]:
        self._at("write_reports")
        path = self.results / "summary.txt"
        path.write_text(json.dumps(summary))
        return [path]

    def show(
        self, summary: dict[str, Any], runs: list[str], written: list[Path], stopped: BaseException | None
    ) -> None:
        self._at("show")
        self.shown = {"runs": list(runs), "written": written, "stopped": stopped}

    def exit_code(self, summary: dict[str, Any], runs: list[str]) -> int:
        self._at("exit_code")
        return self.code


def _loop(fake: Fake) -> int:
    with interrupts.installed():  # as `python -m mnnrepro` runs a session
        return base.session_loop(fake, say=fake.said.append)


def _report(fake: Fake) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((fake.results / "summary.txt").read_text())
    return summary


def test_a_signal_during_the_second_cell_reports_the_first_and_the_partial_second(tmp_path: Path) -> None:
    fake = Fake(tmp_path, hooks={"run b": _signal})
    assert _loop(fake) == 128 + signal.SIGTERM
    assert _report(fake) == {"runs": ["a: done", "b: partial"], "stopped": "SIGTERM", "not_run": ["c"]}
    assert "run c" not in fake.calls and "midway b" in fake.calls
    assert fake.said == ["\nSIGTERM: stopping; writing the reports of the cells that finished"]
    assert fake.shown["runs"] == ["a: done", "b: partial"] and fake.shown["written"] == [tmp_path / "summary.txt"]
    assert isinstance(fake.shown["stopped"], interrupts.Interrupted) and "exit_code" not in fake.calls


def test_a_stopped_cell_that_keeps_nothing_is_not_run(tmp_path: Path) -> None:
    fake = Fake(tmp_path, hooks={"run b": lambda: _signal(signal.SIGINT)}, midway=False)
    assert _loop(fake) == 128 + signal.SIGINT
    assert _report(fake) == {"runs": ["a: done"], "stopped": "SIGINT", "not_run": ["b", "c"]}


def test_a_signal_after_the_last_cell_still_writes_whole_reports(tmp_path: Path) -> None:
    """The signal comes while the reports are made: held, the reports say every cell finished, the exit says it."""
    for moment in ("summarize", "write_reports"):
        fake = Fake(tmp_path, hooks={moment: _signal})
        assert _loop(fake) == 128 + signal.SIGTERM, moment
        assert _report(fake) == {"runs": ["a: done", "b: done", "c: done"], "stopped": None, "not_run": []}
        assert fake.calls == ["begin", "run a", "run b", "run c", "summarize", "write_reports", "show"], moment
        assert isinstance(fake.shown["stopped"], interrupts.Interrupted) and fake.said == []


def test_a_signal_before_the_first_cell_runs_none_and_reports(tmp_path: Path) -> None:
    fake = Fake(tmp_path, hooks={"begin": _signal})
    assert _loop(fake) == 128 + signal.SIGTERM
    assert _report(fake) == {"runs": [], "stopped": "SIGTERM", "not_run": ["a", "b", "c"]}
    assert not any(c.startswith(("run", "midway")) for c in fake.calls)


def test_a_clean_run_exits_with_the_workloads_own_code(tmp_path: Path) -> None:
    for code in (0, 1, 7):
        fake = Fake(tmp_path, code=code)
        assert _loop(fake) == code
        assert fake.calls == ["begin", "run a", "run b", "run c", "summarize", "write_reports", "show", "exit_code"]
        assert _report(fake) == {"runs": ["a: done", "b: done", "c: done"], "stopped": None, "not_run": []}
        assert fake.shown["stopped"] is None and fake.said == []


def test_an_error_in_a_cell_is_no_interrupt(tmp_path: Path) -> None:
    """Only a signal is reported as a stop: any other error of a cell leaves the loop as it came (the caller's)."""

    def broken() -> None:
        raise RuntimeError("a harness bug")

    fake = Fake(tmp_path, hooks={"run b": broken})
    with pytest.raises(RuntimeError, match="a harness bug"):
        _loop(fake)
    assert not (tmp_path / "summary.txt").exists()


def test_a_stopped_cell_that_cannot_be_read_back_still_leaves_the_reports(tmp_path: Path) -> None:
    """Reading the stopped cell back fails (an unreadable result file, say): the finished cells' reports are
    written all the same, the stopped cell counts as not run, and the exit says the signal."""

    def unreadable() -> None:
        raise OSError("result.json: unreadable")

    fake = Fake(tmp_path, hooks={"run b": _signal, "midway b": unreadable})
    assert _loop(fake) == 128 + signal.SIGTERM
    summary = json.loads((tmp_path / "summary.txt").read_text())
    assert summary == {"runs": ["a: done"], "stopped": "SIGTERM", "not_run": ["b", "c"]}
    assert any("could not be read back (OSError: result.json: unreadable)" in line for line in fake.said)
