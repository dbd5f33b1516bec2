"""The one place (with the container runner) that starts processes.

Everything else calls ``Runner.run``: run a command with an environment, a working directory and a time
limit; get back the exit status, the signal and where the output went. A hung process is killed with its
whole process group and reported as timed out, never waited out. A ``StreamingRunner`` also hands each
output line to ``on_line`` as it arrives (progress), while the output still goes whole to its file. A
``ConfiningRunner`` takes ``writable``, the paths a command may write (DockerRunner mounts only these
read-write; HostRunner takes them and leaves this machine's permissions as they are).

A command run on this machine gets a closed environment: the caller's variables named in ALLOWED_ENV (and
ALLOWED_ENV_PREFIXES) plus what the call passes, nothing else; so a VK_ICD_FILENAMES or LD_LIBRARY_PATH left in
the caller's shell cannot change a host run behind the suite's back. ``loader_env`` is the caller's Vulkan and
OpenCL loader settings, for ``--icd host`` to pass explicitly (mnnrepro.cells).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from . import interrupts

OnLine = Callable[[str], None]

# What a command on this machine inherits from the caller (HostRunner.base_env). Enough for compilers, cmake,
# ninja, ccache and gdb to behave as usual; no loader or library path variables (LD_LIBRARY_PATH, VK_*, OCL_*):
# those reach a command only when the suite passes them, so they are in the cell's own record.
ALLOWED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR")
ALLOWED_ENV_PREFIXES = ("LC_", "CCACHE_")
# The Vulkan and OpenCL loaders' own settings (drivers, layers, debug output, device selection): passed only for
# `--icd host`, the documented way to run on this machine's loader configuration.
LOADER_ENV_PREFIXES = ("VK_", "OCL_ICD_")
LOADER_ENV = ("OPENCL_LAYERS", "MESA_VK_DEVICE_SELECT", "DRI_PRIME")


def closed_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allowed part of the caller's environment (os.environ by default)."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k in ALLOWED_ENV or k.startswith(ALLOWED_ENV_PREFIXES)}


def loader_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's Vulkan/OpenCL loader variables (os.environ by default), for `--icd host`."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k in LOADER_ENV or k.startswith(LOADER_ENV_PREFIXES)}


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    duration_s: float
    timed_out: bool = False
    stdout_path: Path | None = None
    stderr_path: Path | None = None
    output: str = ""  # captured stdout+stderr when no paths were given
    env: Mapping[str, str] | None = None  # the whole environment the command got, where the runner knows it
    # A container limit that ended the run, in words ("the container's memory limit (8 GiB)"); None otherwise.
    killed_by: str | None = None

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
    """How the suite runs a build or the driver (HostRunner, DockerRunner). ``on_line`` gets each output line
    as it arrives (progress); ``writable`` names the only paths the command may write (in a container all else
    is read-only). Test fakes accept and may ignore both (``**kwargs``)."""

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
        on_line: OnLine | None = None,
        writable: Sequence[Path] = (),
    ) -> Completed: ...


@dataclass
class HostRunner:
    """Runs commands directly on this machine, in a closed environment (base_env: by default the caller's
    ALLOWED_ENV variables) plus the call's own. ``writable`` is taken and ignored: this machine's permissions
    apply."""

    name: str = "host"
    kill_grace_s: float = 5.0
    base_env: Mapping[str, str] = field(default_factory=closed_env)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float | None = None,
        stdout_path: Path | None = None,
        stderr_path: Path | None = None,
        on_line: OnLine | None = None,
        writable: Sequence[Path] = (),
    ) -> Completed:
        full_env = dict(self.base_env)
        full_env.update(env or {})
        if on_line is not None:
            return self._run_streaming(argv, full_env, cwd, timeout_s, stdout_path, stderr_path, on_line)
        out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
        err = open(stderr_path, "wb") if stderr_path else (subprocess.STDOUT if not stdout_path else subprocess.PIPE)
        start = time.monotonic()
        timed_out = False
        proc: subprocess.Popen[bytes] | None = None
        try:
            try:
                # A signal while the child starts raises once `proc` names it (interrupts.deferred), here.
                with interrupts.deferred():
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
                captured, _ = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                assert proc is not None
                timed_out = True
                _kill_group(proc, self.kill_grace_s)
                captured, _ = proc.communicate()
            except BaseException:
                # Ctrl-C / SIGTERM (mnnrepro.interrupts): the child is in its own session, so nothing else
                # would stop it; it must not outlive us.
                if proc is not None:
                    _kill_group(proc, INTERRUPT_GRACE_S)
                raise
            finally:
                if proc is not None:
                    _reap_group(proc)
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
            env=full_env,
        )

    def _run_streaming(
        self,
        argv: Sequence[str],
        full_env: dict[str, str],
        cwd: Path | None,
        timeout_s: float | None,
        stdout_path: Path | None,
        stderr_path: Path | None,
        on_line: OnLine,
    ) -> Completed:
        """As run, but stdout (and stderr, unless it has its own file) comes through a pipe that a reader
        thread tees to stdout_path (or the captured output) and to on_line, line by line."""
        sink = open(stdout_path, "wb") if stdout_path else None
        err = open(stderr_path, "wb") if stderr_path else None
        captured: list[bytes] = []
        start = time.monotonic()
        timed_out = False
        proc: subprocess.Popen[bytes] | None = None
        try:
            with interrupts.deferred():  # a signal while the child starts raises once `proc` names it
                proc = subprocess.Popen(
                    list(argv),
                    env=full_env,
                    cwd=cwd,
                    stdout=subprocess.PIPE,
                    stderr=err if err else subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            assert proc.stdout is not None
            reader = threading.Thread(
                target=_tee, args=(proc.stdout, sink, captured, on_line), name="runner output", daemon=True
            )
            reader.start()
            # Like communicate(timeout): the limit covers the process and the end of its output (a child left
            # holding the pipe keeps the command running).
            deadline = None if timeout_s is None else start + timeout_s
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            try:
                if reader.is_alive():
                    raise subprocess.TimeoutExpired(list(argv), timeout_s or 0.0)
                proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc, self.kill_grace_s)
                proc.wait()
            reader.join()
            proc.stdout.close()
        except BaseException:
            if proc is not None:  # interrupted while it ran: stop the whole group before unwinding
                _kill_group(proc, INTERRUPT_GRACE_S)
            raise
        finally:
            if proc is not None:
                _reap_group(proc)
            for handle in (sink, err):
                if handle is not None:
                    handle.close()
        return Completed(
            argv=tuple(argv),
            returncode=proc.returncode,
            duration_s=time.monotonic() - start,
            timed_out=timed_out,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            output="" if stdout_path else b"".join(captured).decode(errors="replace"),
            env=full_env,
        )


def _tee(pipe: IO[bytes], sink: IO[bytes] | None, captured: list[bytes], on_line: OnLine) -> None:
    """Copy every line to the file (or the capture list) first, then show it; progress never costs output."""
    calling = True
    try:
        for raw in iter(pipe.readline, b""):
            if sink is not None:
                sink.write(raw)
                sink.flush()
            else:
                captured.append(raw)
            if calling:
                try:
                    on_line(raw.decode(errors="replace").rstrip("\r\n"))
                except Exception:
                    calling = False  # a broken progress display stops; the command and its log go on
    except (OSError, ValueError):
        pass  # the caller was interrupted (Ctrl-C) and closed the file under us


# On an interrupt the child's group gets SIGTERM, then SIGKILL after this long: the session must stop within 10 s.
INTERRUPT_GRACE_S = 2.0


def _reap_group(proc: subprocess.Popen[bytes]) -> None:
    """Whatever the command left behind in its process group (a daemonized helper, gdb's inferior) goes with
    it: no process of a run outlives the run."""
    if proc.returncode is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
    try:
        proc.wait(timeout=grace_s)  # reap it: a zombie still holds its pid and process group
    except subprocess.TimeoutExpired:
        pass
