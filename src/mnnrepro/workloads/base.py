"""The protocol a workload implements and the one session loop that runs it (issue 23: the tail written once).

A workload plans its cells from data, runs and judges each, summarizes, writes its reports and shows its table;
``session_loop`` owns everything between: from ``begin`` to the last report a signal is held (interrupts.held),
and it raises only while the cells run (interrupts.unheld), so none escapes between the last cell and the
reports. On an interrupt the cell it stopped is the workload's to judge from what it finished
(``stopped_midway``), every planned cell without a result is named as not run, and the reports are written whole
all the same. The exit is 128 + N for a signal (also one held while the reports were written, once they are),
the workload's own code otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .. import interrupts

C = TypeVar("C")  # a cell: what the workload plans and runs one at a time
R = TypeVar("R")  # a cell's judged result
Summary = dict[str, Any]  # what the reports are written from (summary.json's content)


class Workload(Protocol[C, R]):
    """One room's part of a session; the loop calls these in this order."""

    def plan(self) -> Sequence[C]:
        """Every cell the session will run, in order (from the workload's data)."""
        ...

    def begin(self) -> None:
        """The first step with signals held (e.g. the results directory made and named); a signal that comes in it
        stops the session before its first cell."""
        ...

    def run(self, cell: C) -> R:
        """Run one cell and judge it."""
        ...

    def stopped_midway(self, cell: C) -> R | None:
        """The cell an interrupt stopped, judged from what it finished; None keeps nothing of it (not run)."""
        ...

    def summarize(self, runs: list[R], stopped: BaseException | None, not_run: list[C]) -> Summary:
        """The reports' content: the results in plan order (the last one partial where ``stopped_midway`` kept
        one), the interrupt that stopped the cells (None: every cell ran) and the planned cells with no result."""
        ...

    def write_reports(self, summary: Summary) -> list[Path]:
        """Write every report; the files written."""
        ...

    def show(self, summary: Summary, runs: list[R], written: list[Path], stopped: BaseException | None) -> None:
        """The terminal's account: table, reports, and for a stopped session what it says of the stop."""
        ...

    def exit_code(self, summary: Summary, runs: list[R]) -> int:
        """The exit code of a session whose cells all ran and that no signal stopped (and its last words)."""
        ...


def session_loop(workload: Workload[C, R], *, say: Callable[[str], None]) -> int:
    """Run ``workload``'s planned cells and own the tail: interrupt, not-run cells, held signals, reports, table,
    exit code."""
    cells = list(workload.plan())
    runs: list[R] = []
    begun = 0  # cells whose run started: one more than finished is the cell an interrupt stopped midway
    stopped: BaseException | None = None
    with interrupts.held() as late:
        workload.begin()
        try:
            with interrupts.unheld(late):
                for index, cell in enumerate(cells):
                    begun = index + 1
                    runs.append(workload.run(cell))
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (interrupts.py): report what finished, then stop
            stopped = exc
            say(f"\n{interrupts.signal_name(exc)}: stopping; writing the reports of the cells that finished")
            if begun > len(runs) and (partial := _what_it_finished(workload, cells[len(runs)], say)) is not None:
                runs.append(partial)
        ran = cells[: len(runs)]  # not run: a planned cell equal to none that has a result (as named by id before)
        summary = workload.summarize(runs, stopped, [c for c in cells if c not in ran])
        written = workload.write_reports(summary)
    if late and stopped is None:  # every cell had finished: the reports are complete, the exit says the signal
        stopped = interrupts.Interrupted(late[0])
    workload.show(summary, runs, written, stopped)
    if stopped is not None:
        return interrupts.exit_code(stopped)
    return workload.exit_code(summary, runs)


def _what_it_finished(workload: Workload[C, R], cell: C, say: Callable[[str], None]) -> R | None:
    """The stopped cell as its workload judges it; a failure to read it back keeps nothing of it (not run) rather
    than the reports of every cell that did finish."""
    try:
        return workload.stopped_midway(cell)
    except Exception as exc:
        say(f"  the stopped cell could not be read back ({type(exc).__name__}: {exc}): it counts as not run")
        return None
