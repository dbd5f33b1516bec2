"""Host-side helper commands (git, and later npm, debootstrap, probes) with a time limit and a typed error.

``runner`` runs MNN's builds and the driver; this module runs the short tools around them on this machine.
Every call has a time limit: a command that hangs (a server that accepts and never answers) is killed with
its whole process group (git fetch's remote helpers included) and reported, never waited out. A failure
raises ``HostCommandError`` (exit 6) or the caller's class, saying what failed, the command, its exit code
and the tail of its output; network steps may be retried with exponential backoff.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from . import interrupts
from .errors import HostCommandError, MnnReproError

BACKOFF_S = 2.0  # first pause between attempts; doubled after each failed one
TAIL_LINES = 12  # lines of output a failure shows
REAP_S = 5.0  # after a kill: how long to wait for the pipes to close (a helper that left the group)

# (exit code or None when timed out, output) -> is another attempt worth it?
RetryIf = Callable[[int | None, str], bool]


def shown(argv: Sequence[str], limit: int = 300) -> str:
    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _once(
    argv: Sequence[str], timeout_s: float, cwd: Path | None, env: dict[str, str] | None, input: str | None
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """One attempt: (result, timed_out). Raises OSError when the command cannot start."""
    proc: subprocess.Popen[str] | None = None
    timed_out = False
    try:
        with interrupts.deferred():  # a signal while the child starts raises once `proc` names it
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                start_new_session=True,  # its own process group: a timeout kills the helpers it started too
            )
        out, err = proc.communicate(input, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        assert proc is not None
        timed_out = True
        _kill_group(proc)
        try:
            out, err = proc.communicate(timeout=REAP_S)
        except subprocess.TimeoutExpired:  # a daemonised grandchild still holds the pipes: stop reading
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            proc.wait()
            out, err = "", ""
    except BaseException:  # KeyboardInterrupt included: never leave the group running
        if proc is not None:
            _kill_group(proc)
            proc.wait()
        raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, out or "", err or ""), timed_out


def run(
    argv: Sequence[str],
    *,
    timeout_s: float,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    retries: int = 0,
    say: Callable[[str], None] | None = None,
    check: bool = True,
    input: str | None = None,
    hint: str = "",
    error: type[MnnReproError] = HostCommandError,
    retry_if: RetryIf | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with a time limit; return its result (text) when it exits 0.

    ``what`` names the step in the message ("could not fetch ref 3.3.0 from URL"). ``env`` is added to this
    process's environment. ``retries``: further attempts after a failure or timeout, BACKOFF_S, 2*BACKOFF_S,
    ... apart (``retry_if`` may decline one, e.g. an unknown ref), each announced through ``say``.
    ``check=False`` returns a nonzero exit too (a probe); a timeout or a command that cannot start always
    raises. The error is ``error`` (its message and hint); with another class than HostCommandError, the
    HostCommandError with argv, exit code and output tail is its ``__cause__``.
    """
    full_env = {**os.environ, **env} if env is not None else None
    attempts = max(0, retries) + 1
    for attempt in range(1, attempts + 1):
        try:
            res, timed_out = _once(argv, timeout_s, cwd, full_env, input)
        except OSError as exc:
            detail = HostCommandError(
                f"{what}: {shown(argv)} could not start ({exc.strerror or exc})",
                hint=hint or f"is {argv[0]} installed and on PATH?",
                argv=tuple(argv),
            )
            _raise(detail, error)
        if res.returncode == 0 and not timed_out:
            return res
        if not check and not timed_out:
            return res
        output = tail(res.stderr if res.stderr.strip() else res.stdout)
        status = f"timed out after {timeout_s:g} s" if timed_out else f"exited {res.returncode}"
        rc = None if timed_out else res.returncode
        if attempt < attempts and (retry_if is None or retry_if(rc, res.stdout + res.stderr)):
            delay = BACKOFF_S * 2 ** (attempt - 1)
            if say is not None:
                say(f"{what}: {argv[0]} {status}; attempt {attempt + 1} of {attempts} in {delay:g} s")
            time.sleep(delay)
            continue
        tried = f" ({attempt} attempts)" if attempt > 1 else ""
        body = "\n    ".join(output.splitlines()) if output else "(no output)"
        detail = HostCommandError(
            f"{what}: {shown(argv)} {status}{tried}\n    {body}",
            hint=hint,
            argv=tuple(argv),
            returncode=rc,
            timed_out=timed_out,
            tail=output,
        )
        _raise(detail, error)
    raise AssertionError("unreachable")  # the loop returns or raises


def _raise(detail: HostCommandError, error: type[MnnReproError]) -> NoReturn:
    if error is HostCommandError:
        raise detail
    raise error(detail.message, hint=detail.hint) from detail
