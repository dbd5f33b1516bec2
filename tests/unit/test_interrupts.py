"""Ctrl-C and SIGTERM: the runner stops its child's whole process group; reports come out whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mnnrepro import interrupts
from mnnrepro.runner import HostRunner


def _group_alive(pgid: int) -> bool:
    """A live (not zombie) process in the group. Zombies do not count: where PID 1 does not reap (a container
    whose init is `sleep`), an orphan killed by us stays a zombie forever without running anything."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _wait_for(path: Path, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("streaming", [False, True])
def test_a_signal_stops_the_child_group_and_raises_interrupted(tmp_path: Path, signum: int, streaming: bool) -> None:
    pid_file = tmp_path / "pgid"
    # A child that ignores SIGTERM and leaves a grandchild: only SIGKILL of the whole group ends both.
    script = f"trap '' TERM; echo $$ > {pid_file}; sleep 60 & sleep 60"

    sent_at: list[float] = []

    def send() -> None:
        _wait_for(pid_file, timeout_s=60)  # a loaded machine can take seconds to start sh
        sent_at.append(time.monotonic())
        os.kill(os.getpid(), signum)

    threading.Thread(target=send, daemon=True).start()
    with interrupts.installed(), pytest.raises(interrupts.Interrupted) as info:
        HostRunner().run(
            ["sh", "-c", script],
            timeout_s=60,
            stdout_path=tmp_path / "out.txt",
            on_line=(lambda line: None) if streaming else None,
        )
    assert info.value.signum == signum
    assert interrupts.exit_code(info.value) == 128 + signum
    stopped_after = time.monotonic() - sent_at[0]
    pgid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(pgid), "a process of the interrupted command outlived it"
    assert stopped_after < 10, f"stopped {stopped_after:.1f} s after the signal"


def test_handlers_are_restored_after_the_block() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with interrupts.installed():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_signals_are_held_while_reports_are_written() -> None:
    with interrupts.installed():
        with interrupts.held() as seen:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            finished = True  # not interrupted
        assert finished and seen == [signal.SIGTERM]


def test_a_finished_command_leaves_no_process_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "pgid"
    res = HostRunner().run(
        ["sh", "-c", f"echo $$ > {pid_file}; (trap '' HUP; sleep 60) >/dev/null 2>&1 & exit 0"], timeout_s=30
    )
    assert res.returncode == 0
    pgid = int(_wait_for(pid_file))
    deadline = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(pgid)


def test_a_signal_while_a_child_starts_stops_that_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut right after its fork (before Popen returns), a child used to run on unknown to the runner: it outlived
    the interrupted session (issue 21). The signal now waits until the runner names the child, then stops it."""
    real = subprocess.Popen._execute_child  # type: ignore[attr-defined]
    forked: list[int] = []

    def forked_then_signalled(self: subprocess.Popen[bytes], *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)
        forked.append(self.pid)  # its own session: pid = process group id
        os.kill(os.getpid(), signal.SIGTERM)  # lands here, inside Popen, at the next bytecode

    monkeypatch.setattr(subprocess.Popen, "_execute_child", forked_then_signalled)
    with interrupts.installed(), pytest.raises(interrupts.Interrupted):
        HostRunner().run(["sh", "-c", "sleep 60"], timeout_s=60)
    monkeypatch.undo()
    deadline = time.monotonic() + 10
    while _group_alive(forked[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _group_alive(forked[0]), "the child started as the signal came outlived the interrupted run"


def test_held_signals_raise_only_inside_unheld() -> None:
    """The session's shape: held from its results directory to its reports, raising only while cells run."""
    with interrupts.installed():
        with interrupts.held() as late:
            os.kill(os.getpid(), signal.SIGTERM)  # before the cells: held, then raised as they start
            with pytest.raises(interrupts.Interrupted) as info, interrupts.unheld(late):
                raise AssertionError("unheld let the cells run after a held signal")
            assert info.value.signum == signal.SIGTERM
            os.kill(os.getpid(), signal.SIGINT)  # while the reports are written: held, nothing raised
            time.sleep(0.01)
        assert late == [signal.SIGTERM, signal.SIGINT]


def test_a_signal_inside_deferred_raises_at_its_end() -> None:
    reached = []
    with interrupts.installed(), pytest.raises(interrupts.Interrupted) as info:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            reached.append("the end of the block")
    assert reached and info.value.signum == signal.SIGINT


def test_last_word_counts_a_signal_that_came_after_the_command() -> None:
    """`python -m mnnrepro` whose command returned 0 just as SIGTERM came: the exit says 143, never 0, and never a
    death by the default handler (the handlers stay until os._exit; from last_word on the signal is blocked)."""
    code = (
        "import os, signal\n"
        "from mnnrepro import cli\n"
        "cli.main = lambda **_: 0\n"
        "real = cli.interrupts.last_word\n"
        "def late():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real()\n"
        "cli.interrupts.last_word = late\n"
        "cli.console()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "Traceback" not in done.stderr
