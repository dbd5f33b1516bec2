"""The one place (with the container runner) that starts processes.

Everything else calls ``Runner.run``: run a command with an environment, a working directory and a time
limit; get back the exit status, the signal and where the output went. A hung process is killed with its
whole process group and reported as timed out, never waited out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    duration_s: float
    timed_out: bool = False
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    output: str = ""  # captured stdout+stderr when no paths were given

    @property
    def signal(self) -> int | None:
        """The signal that ended the process, if any (negative return codes, or 128+N from a shell/gdb)."""
        if self.returncode < 0:
            return -self.returncode
        if 128 < self.returncode < 128 + 65:
            return self.returncode - 128
        return None

    @property
    def signal_name(self) -> str | None:
        sig = self.signal
        if sig is None:
            return None
        try:
            return signal.Signals(sig).name
        except ValueError:
            return f"SIG{sig}"


class Runner(Protocol):
    name: str

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float | None = None,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
    ) -> Completed: ...


@dataclass
class HostRunner:
    """Runs commands directly on this machine."""

    name: str = "host"
    kill_grace_s: float = 5.0
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float | None = None,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
    ) -> Completed:
        full_env = dict(self.base_env)
        full_env.update(env or {})
        out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
        err = open(stderr_path, "wb") if stderr_path else (subprocess.STDOUT if not stdout_path else subprocess.PIPE)
        start = time.monotonic()
        timed_out = False
        try:
            # A new session, so a timeout kills the driver and everything it started (gdb, its child).
            proc = subprocess.Popen(
                list(argv),
                env=full_env,
                cwd=cwd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                captured, _ = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc, self.kill_grace_s)
                captured, _ = proc.communicate()
        finally:
            for handle in (out, err):
                if hasattr(handle, "close"):
                    handle.close()
        text = captured.decode(errors="replace") if isinstance(captured, bytes) else ""
        return Completed(
            argv=tuple(argv),
            returncode=proc.returncode,
            duration_s=time.monotonic() - start,
            timed_out=timed_out,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            output=text,
        )


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
