"""runner.host_command: host-side commands with a time limit, process-group kill, retries, and a typed error."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from mnnrepro import runner
from mnnrepro.errors import HostCommandError, MnnReproError, SourceError
from mnnrepro.runner import host_command


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "BACKOFF_S", 0.01)


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_success_returns_the_output_as_text(tmp_path: Path) -> None:
    res = host_command(
        py("import os, sys; print(os.getcwd()); print(os.environ['HOSTCMD_X']); print(sys.stdin.read().upper())"),
        timeout_s=30,
        what="probe",
        cwd=tmp_path,
        env={"HOSTCMD_X": "added"},
        input="piped",
    )
    assert res.returncode == 0
    assert res.stdout.split() == [str(tmp_path), "added", "PIPED"]
    assert "PATH" in os.environ  # env adds to the environment: the interpreter above still found its libraries


def test_a_failure_is_a_typed_error_with_command_exit_code_and_output_tail() -> None:
    code = "import sys; [print(f'line {i}', file=sys.stderr) for i in range(40)]; sys.exit(3)"
    with pytest.raises(HostCommandError) as info:
        host_command(py(code), timeout_s=30, what="could not probe X", hint="install X")
    err = info.value
    assert (err.exit_code, err.returncode, err.timed_out) == (6, 3, False)
    assert err.argv == (sys.executable, "-c", code)
    assert err.tail.splitlines() == [f"line {i}" for i in range(40 - runner.TAIL_LINES, 40)]
    assert err.message.startswith(f"could not probe X: {sys.executable} -c ")
    assert "exited 3" in err.message and "line 39" in err.message and "line 0\n" not in err.message
    assert err.hint == "install X"
    assert "what to do: install X" in err.render()


def test_the_tail_falls_back_to_stdout_when_stderr_is_empty() -> None:
    with pytest.raises(HostCommandError) as info:
        host_command(py("print('only on stdout'); raise SystemExit(1)"), timeout_s=30, what="x")
    assert info.value.tail == "only on stdout"


def test_check_false_returns_a_nonzero_exit() -> None:
    res = host_command(py("raise SystemExit(5)"), timeout_s=30, what="x", check=False)
    assert res.returncode == 5


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie waiting for init is dead
    except FileNotFoundError:
        return True


def test_a_hang_is_killed_with_its_whole_process_group(tmp_path: Path) -> None:
    """The child's child keeps the pipes open (as git's remote helpers do): it must die too, and fast."""
    pidfile = tmp_path / "pid"
    script = f"sleep 60 & echo $! > {pidfile}; echo started >&2; wait"
    t0 = time.monotonic()
    with pytest.raises(HostCommandError) as info:
        host_command(["sh", "-c", script], timeout_s=1.0, what="a hang", check=False)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0 + runner.REAP_S
    err = info.value
    assert (err.timed_out, err.returncode, err.exit_code) == (True, None, 6)
    assert "timed out after 1 s" in err.message and "started" in err.tail  # output before the kill is kept
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_retries_with_backoff_until_success(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    code = (
        f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); n = int(p.read_text() or 0) if p.exists() else 0;"
        " p.write_text(str(n + 1)); sys.exit(0 if n >= 2 else 1)"
    )
    said: list[str] = []
    res = host_command(py(code), timeout_s=30, what="flaky", retries=3, say=said.append)
    assert res.returncode == 0
    assert counter.read_text() == "3"
    assert len(said) == 2 and "attempt 2 of 4" in said[0] and "attempt 3 of 4" in said[1]


def test_retries_run_out_and_the_error_counts_the_attempts(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    code = (
        f"import pathlib; p = pathlib.Path({str(counter)!r}); p.write_text(p.read_text() + 'x' if p.exists() else 'x')"
    )
    with pytest.raises(HostCommandError, match=r"exited 1 \(3 attempts\)"):
        host_command(py(code + "; raise SystemExit(1)"), timeout_s=30, what="always", retries=2)
    assert counter.read_text() == "xxx"


def test_retry_if_declines_a_permanent_failure(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    code = f"import pathlib, sys; pathlib.Path({str(counter)!r}).open('a').write('x'); sys.exit('no such ref')"
    with pytest.raises(HostCommandError, match="no such ref"):
        host_command(py(code), timeout_s=30, what="x", retries=3, retry_if=lambda rc, out: "no such ref" not in out)
    assert counter.read_text() == "x"


def test_the_callers_error_class_carries_the_details_as_its_cause() -> None:
    with pytest.raises(SourceError) as info:
        host_command(py("raise SystemExit(128)"), timeout_s=30, what="could not fetch", error=SourceError, hint="h")
    err = info.value
    assert err.exit_code == 3 and err.hint == "h" and "exited 128" in err.message
    assert isinstance(err.__cause__, HostCommandError) and err.__cause__.returncode == 128


def test_a_missing_program_is_reported_not_raised_as_oserror(tmp_path: Path) -> None:
    with pytest.raises(MnnReproError, match="could not start") as info:
        host_command([str(tmp_path / "no-such-tool")], timeout_s=30, what="probing the tool")
    assert isinstance(info.value, HostCommandError) and info.value.returncode is None
    assert "installed" in info.value.hint
