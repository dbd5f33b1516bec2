"""The one place that starts or kills processes in the library (tests/unit/test_process_starts.py checks it).

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

``host_command`` runs the short tools around the builds on this machine (git, npm, debootstrap, probes), in the
caller's environment: every call has a time limit, and a command that hangs (a server that accepts and never
answers) is killed with its whole process group (git fetch's remote helpers included) and reported, never
waited out. A failure raises ``HostCommandError`` (exit 6) or the caller's class, saying what failed, the
command, its exit code and the tail of its output; network steps may be retried with exponential backoff.
The scripts that run inside a runner (optest_batch, gdb_capture) are standalone and keep their own.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, AnyStr, NoReturn, Protocol, TypeAlias

from . import interrupts
from .errors import HostCommandError, MnnReproError

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


def _kill_group(proc: subprocess.Popen[AnyStr], grace_s: float | None = None) -> None:
    """Stop the process group ``proc`` leads (started with start_new_session). With ``grace_s`` (the runners):
    SIGTERM first and up to grace_s for it to exit, then SIGKILL, then up to grace_s to reap it (a zombie still
    holds its pid and process group). Without (host_command): SIGKILL at once; the caller reaps it, reading its
    pipes to the end. Where the group is gone or not ours to signal, SIGKILL goes to the process alone."""
    if grace_s is not None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace_s)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()  # a no-op once the process is reaped
    if grace_s is not None:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass


# Host commands (host_command): short tools on this machine, in the caller's environment.
BACKOFF_S = 2.0  # first pause between attempts; doubled after each failed one
TAIL_LINES = 12  # lines of output a failure shows
REAP_S = 5.0  # after a kill: how long to wait for the pipes to close (a helper that left the group)

# (exit code or None when timed out, output) -> is another attempt worth it?
RetryIf = Callable[[int | None, str], bool]
# What host_command returns (for annotations elsewhere: no other module imports subprocess).
CommandResult: TypeAlias = "subprocess.CompletedProcess[str]"


def shown(argv: Sequence[str], limit: int = 300) -> str:
    text = shlex.join(argv)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


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


def host_command(
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
) -> CommandResult:
    """Run ``argv`` on this machine with a time limit; return its result (text) when it exits 0.

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


def filter_bytes(argv: Sequence[str], data: bytes, *, timeout_s: float) -> bytes:
    """``data`` through a filter command (a decompressor); its stdout. A nonzero exit raises
    subprocess.CalledProcessError, a timeout subprocess.TimeoutExpired (as subprocess.run(check=True) does)."""
    return subprocess.run(list(argv), input=data, capture_output=True, check=True, timeout=timeout_s).stdout
