"""Ctrl-C and SIGTERM: the runner stops its child's whole process group; reports come out whole."""

from __future__ import annotations

import os
import signal
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
