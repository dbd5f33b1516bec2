"""runner.HostRunner and Completed: exit status, signals, output capture, time limits; the one _kill_group."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from mnnrepro.runner import Completed, HostRunner, _kill_group, closed_env, filter_bytes, loader_env


def live_members(pgid: int) -> list[int]:
    """Processes (zombies excepted) whose process group is pgid, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def wait_until_gone(pgid: int, within_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while (members := live_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return members


def test_exit_status_is_reported() -> None:
    res = HostRunner().run(["sh", "-c", "exit 3"])
    assert res.returncode == 3
    assert res.signal is None and res.signal_name is None
    assert res.timed_out is False
    assert res.argv == ("sh", "-c", "exit 3")


def test_a_signal_is_reported_by_name() -> None:
    res = HostRunner().run(["sh", "-c", "kill -SEGV $$"])
    assert res.returncode == -11
    assert res.signal == 11
    assert res.signal_name == "SIGSEGV"


@pytest.mark.parametrize(
    ("returncode", "name"),
    [
        (139, "SIGSEGV"),
        (134, "SIGABRT"),
        (-6, "SIGABRT"),
        (137, "SIGKILL"),
        (0, None),
        (1, None),
        (128, None),
        (255, None),
        (-99, "SIG99"),
    ],
)
def test_signal_names_from_return_codes(returncode: int, name: str | None) -> None:
    assert Completed((), returncode, 0.0).signal_name == name


def test_output_is_captured_without_paths() -> None:
    res = HostRunner().run(["sh", "-c", "echo out; echo err >&2"])
    assert "out" in res.output and "err" in res.output
    assert res.stdout_path is None


def test_stdout_and_stderr_go_to_their_files(tmp_path: Path) -> None:
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    res = HostRunner().run(["sh", "-c", "echo to-out; echo to-err >&2"], stdout_path=out, stderr_path=err)
    assert out.read_text() == "to-out\n"
    assert err.read_text() == "to-err\n"
    assert (res.stdout_path, res.stderr_path, res.output) == (out, err, "")


def test_environment_is_merged_and_cwd_applied(tmp_path: Path) -> None:
    runner = HostRunner(base_env={"PATH": os.environ["PATH"], "A": "base", "B": "base"})
    res = runner.run(["sh", "-c", 'echo "$A-$B-$(pwd)"'], env={"B": "extra"}, cwd=tmp_path)
    assert res.output.strip() == f"base-extra-{tmp_path}"


def test_stdin_is_closed() -> None:
    start = time.monotonic()
    res = HostRunner().run(["sh", "-c", "cat; echo done"], timeout_s=5)
    assert res.output.strip() == "done"
    assert time.monotonic() - start < 5


def test_a_hung_process_group_is_killed_at_the_limit(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}; sleep 30 & sleep 30"
    start = time.monotonic()
    res = HostRunner().run(["sh", "-c", script], timeout_s=1)
    elapsed = time.monotonic() - start
    assert res.timed_out is True
    assert elapsed < 7
    assert res.returncode < 0  # ended by a signal, not waited out
    pgid = int(pidfile.read_text())
    assert wait_until_gone(pgid) == []  # the background sleep went with its group


def test_a_process_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"trap '' TERM; echo $$ > {pidfile}; sleep 30 & sleep 30"
    start = time.monotonic()
    res = HostRunner(kill_grace_s=0.5).run(["sh", "-c", script], timeout_s=0.5)
    assert res.timed_out is True
    assert res.returncode == -9
    assert time.monotonic() - start < 5
    assert wait_until_gone(int(pidfile.read_text())) == []


def test_a_fast_command_is_not_timed_out() -> None:
    res = HostRunner().run(["true"], timeout_s=5)
    assert (res.returncode, res.timed_out) == (0, False)
    assert 0 <= res.duration_s < 5


@pytest.mark.parametrize("leaves_a_child", [False, True], ids=["hangs", "exits-leaving-a-child-on-the-pipe"])
def test_a_hung_group_is_killed_at_the_limit_while_streaming(tmp_path: Path, leaves_a_child: bool) -> None:
    pidfile, log = tmp_path / "pid", tmp_path / "log"
    tail = "echo parent-exits" if leaves_a_child else "sleep 30"
    script = f'echo $$ > {pidfile}; echo "[1/2] started"; sleep 30 & {tail}'
    got: list[str] = []
    start = time.monotonic()
    res = HostRunner(kill_grace_s=0.5).run(["sh", "-c", script], timeout_s=1, stdout_path=log, on_line=got.append)
    assert res.timed_out is True
    assert time.monotonic() - start < 7
    assert got[0] == "[1/2] started" and log.read_text().startswith("[1/2] started\n")
    assert wait_until_gone(int(pidfile.read_text())) == []  # the background sleep went with its group


# -- the closed environment ------------------------------------------------------------------------


def child_env(res: Completed) -> dict[str, str]:
    """The environment `env -0` printed."""
    return dict(e.split("=", 1) for e in res.output.split("\0") if "=" in e)


def test_the_callers_environment_does_not_reach_a_command_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VK_ICD_FILENAMES", "/caller/icd.json")
    monkeypatch.setenv("LD_LIBRARY_PATH", "/caller/lib")
    monkeypatch.setenv("MNNREPRO_PLANT", "crash@sgd_step:0")
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.setenv("CCACHE_DISABLE", "1")
    res = HostRunner().run(["env", "-0"], env={"VK_DRIVER_FILES": "/cell/icd.json"})
    got = child_env(res)
    assert "VK_ICD_FILENAMES" not in got and "LD_LIBRARY_PATH" not in got and "MNNREPRO_PLANT" not in got
    assert got["VK_DRIVER_FILES"] == "/cell/icd.json"  # the call's own
    assert (got["PATH"], got["LC_ALL"], got["CCACHE_DISABLE"]) == (os.environ["PATH"], "C", "1")
    assert res.env == got  # what the runner reports is what the command had


def test_the_streaming_path_gets_the_same_closed_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VK_LOADER_DEBUG", "all")
    got: list[str] = []
    res = HostRunner().run(["sh", "-c", 'echo "[$VK_LOADER_DEBUG]"'], stdout_path=tmp_path / "log", on_line=got.append)
    assert got == ["[]"]
    assert res.env is not None and "VK_LOADER_DEBUG" not in res.env


def test_allow_list_and_loader_variables() -> None:
    caller = {
        "PATH": "/bin",
        "HOME": "/h",
        "LC_CTYPE": "C.UTF-8",
        "TMPDIR": "/t",
        "CCACHE_DIR": "/c",
        "VK_ICD_FILENAMES": "/i.json",
        "VK_LAYER_PATH": "/l",
        "OCL_ICD_VENDORS": "/v",
        "MESA_VK_DEVICE_SELECT": "10de:1",
        "LD_LIBRARY_PATH": "/x",
        "PYTHONPATH": "/p",
        "DEBUGINFOD_URLS": "https://example",
    }
    assert closed_env(caller) == {
        "PATH": "/bin",
        "HOME": "/h",
        "LC_CTYPE": "C.UTF-8",
        "TMPDIR": "/t",
        "CCACHE_DIR": "/c",
    }
    assert loader_env(caller) == {
        "VK_ICD_FILENAMES": "/i.json",
        "VK_LAYER_PATH": "/l",
        "OCL_ICD_VENDORS": "/v",
        "MESA_VK_DEVICE_SELECT": "10de:1",
    }


def test_the_runner_interface_is_one_call_with_on_line_and_writable(tmp_path: Path) -> None:
    """The one Runner protocol: HostRunner takes writable and streams each line as it arrives."""
    lines: list[str] = []
    res = HostRunner().run(
        ["sh", "-c", "echo one; echo two"], stdout_path=tmp_path / "log", on_line=lines.append, writable=[tmp_path]
    )
    assert res.returncode == 0
    assert lines == ["one", "two"]
    assert (tmp_path / "log").read_text().split() == ["one", "two"]


# -- the one _kill_group, and the byte filter (issue 23: one process module) -------------------------


def sleeper(tmp_path: Path, script: str) -> tuple[subprocess.Popen[bytes], int]:
    """A shell in its own process group, started as the runner starts its children; (proc, its pgid). Its pid is
    written after the script's own `trap` (when it starts with one), each call to a file of its own: a signal sent
    once the pid is known finds the trap in place (else the test raced the shell)."""
    pidfile = Path(tempfile.mkstemp(dir=tmp_path, prefix="pid-")[1])
    pidfile.unlink()
    setup, rest = script.split("; ", 1) if script.startswith("trap ") else ("", script)
    proc = subprocess.Popen(
        ["sh", "-c", f"{setup + '; ' if setup else ''}echo $$ > {pidfile}; {rest}"], start_new_session=True
    )
    deadline = time.monotonic() + 5
    while not pidfile.is_file() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the shell did not start"
        time.sleep(0.01)
    return proc, int(pidfile.read_text())


def test_kill_group_without_a_grace_kills_the_whole_group_at_once(tmp_path: Path) -> None:
    # host_command's way: SIGKILL, no SIGTERM first (a trapped TERM changes nothing), and no wait: the caller reaps.
    proc, pgid = sleeper(tmp_path, "trap 'echo term' TERM; sleep 30 & sleep 30")
    start = time.monotonic()
    _kill_group(proc)
    assert proc.wait(timeout=5) == -9
    assert time.monotonic() - start < 2
    assert wait_until_gone(pgid) == []


def test_kill_group_with_a_grace_asks_first_then_kills(tmp_path: Path) -> None:
    # The runners' way: SIGTERM, up to grace_s, SIGKILL, and the leader is reaped before it returns.
    proc, pgid = sleeper(tmp_path, "sleep 30 & sleep 30")
    _kill_group(proc, 2.0)
    assert proc.returncode == -15  # it went on SIGTERM, reaped inside _kill_group
    assert wait_until_gone(pgid) == []
    stubborn, pgid = sleeper(tmp_path, "trap '' TERM; sleep 30 & sleep 30")
    start = time.monotonic()
    _kill_group(stubborn, 0.3)
    assert stubborn.returncode == -9 and time.monotonic() - start < 3
    assert wait_until_gone(pgid) == []


def test_filter_bytes_pipes_data_through_a_command() -> None:
    data = bytes(range(256)) * 4
    assert filter_bytes(["cat"], data, timeout_s=30) == data
    with pytest.raises(subprocess.CalledProcessError):
        filter_bytes(["sh", "-c", "cat >/dev/null; exit 3"], data, timeout_s=30)
    with pytest.raises(subprocess.TimeoutExpired):
        filter_bytes(["sleep", "5"], b"", timeout_s=0.2)
