"""The container runner: the same small interface as HostRunner, one container per command.

Host paths are mounted at the same paths inside the container, so command lines, build trees and result
directories mean the same on both runners. Least privilege:

- Read-only: everything a command reads (the checkout, the MNN source, the cache's published variants, the
  results). Read-write: only the call's ``writable`` paths (a build its build dir and the ccache dir, a driver
  run its cell's result dir) and the runner's own ``read_write`` (none in a session).
- User: the invoking uid:gid; when invoked as root, the image's user (IMAGE_USER, docker/Dockerfile), with the
  writable paths (and the read-only ones inside ``owned_trees``, the cache) handed to it first, entries not
  already its own only; root on the host uses them either way. Directories the image keeps private (/root) are
  replaced by a read-only skeleton of the mount points below them, so same-path mounts stay reachable.
- All capabilities dropped but SYS_PTRACE (gdb), no-new-privileges, no network, PIDS_LIMIT tasks and
  ``default_mem_limit()`` of memory without swap. A run the kernel's OOM killer stopped, or whose fork/thread
  creation failed at the pid limit, says so in ``Completed.killed_by``; the judge reports it as such.
- Killed at their time limit; always removed unless MNNREPRO_KEEP_CONTAINERS=1 (kept on failure, for
  debugging). Each carries labels (LABEL, the session's pid, its start time and the host) and a name
  mnnrepro-<pid>-<n>; ``remove_leftovers`` removes those of sessions that are no longer running.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runner import Completed, OnLine

# An environment entry that asks for this one command to run as root inside its throwaway container
# (planted faults that remove files from the image). It is removed before the command sees its environment.
AS_ROOT = "MNNREPRO_CONTAINER_AS_ROOT"

# docker/Dockerfile: `useradd --uid 1000 mnn`, `USER 1000:1000`.
IMAGE_USER = (1000, 1000)
# Image directories a non-root user cannot traverse (Debian's /root is 0700): root's cache lies below it.
PRIVATE_IN_IMAGE = (Path("/root"),)

# Limits. Measured on 2 CPUs (ninja's default -j4) with cgroup v1 memory.max_usage_in_bytes and pids.current:
# the 16 largest MNN 3.3.0 translation units (Vulkan AllShader*.cpp, CommonOptFunction.cpp, ...) compiled 4 at
# a time peak at 1.2 GiB and 16 tasks; linking libMNN/Express/Train/Vulkan at 93 MiB; a 30-step driver run
# under gdb at 110 MiB / 10 tasks (CPU) and 205 MiB / 14 tasks (Vulkan on lavapipe). The memory limit leaves
# about 6x that for a 2-CPU build and grows with ninja's default job count (CPUs + 2) on larger machines; the
# pid limit counts threads too (lavapipe and MNN start one per CPU) and only stops runaways.
PIDS_LIMIT = 4096
MEM_FLOOR = 8 << 30
MEM_PER_JOB = 1 << 30

LABEL = "mnnrepro"
_names = itertools.count(1)


def default_mem_limit() -> int:
    """Bytes: MEM_FLOOR, or MEM_PER_JOB per ninja default job (CPUs + 2) where that is more."""
    return max(MEM_FLOOR, MEM_PER_JOB * ((os.cpu_count() or 1) + 2))


def _gib(n: int) -> str:
    return f"{n / (1 << 30):g} GiB"


# What fork/clone/thread creation failing with EAGAIN prints (sh, bash, ninja, gcc, Python, C++ std::thread):
# inside a container that is the pid limit. A heuristic, so the verdict quotes the line it matched.
FORK_FAILED = re.compile(
    r"cannot fork|can't start new thread"
    r"|(fork|clone|posix_spawn|pthread_create|std::system_error)[^\n]{0,80}Resource temporarily unavailable"
    r"|what\(\):\s+Resource temporarily unavailable",
    re.IGNORECASE,
)


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22): with the pid, it names one
    process even after the pid is reused. None where it is not running (or /proc is unreadable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def session_labels() -> dict[str, str]:
    pid = os.getpid()
    return {
        LABEL: "1",
        f"{LABEL}.pid": str(pid),
        f"{LABEL}.started": _start_ticks(pid) or "",
        f"{LABEL}.host": socket.gethostname(),
    }


def remove_leftovers(client: Any, *, keep: bool = False, say: Callable[[str], None] = print) -> int:
    """Remove this host's containers (labelled LABEL) whose mnnrepro process is gone (a killed session, or one
    kept with --keep-containers); ``keep``: only count them. Returns how many there were."""
    import docker

    host = socket.gethostname()
    try:
        found = client.containers.list(all=True, filters={"label": [f"{LABEL}=1", f"{LABEL}.host={host}"]})
    except docker.errors.APIError as exc:
        say(f"could not list leftover containers: {exc}")
        return 0
    dead = []
    for container in found:
        labels = container.labels or {}
        try:
            pid = int(labels.get(f"{LABEL}.pid", ""))
        except ValueError:
            continue
        started = labels.get(f"{LABEL}.started", "")
        if _start_ticks(pid) is None or (started and _start_ticks(pid) != started):
            dead.append(container)
    if dead and keep:
        say(
            f"{len(dead)} container(s) of ended mnnrepro sessions kept (--keep-containers): "
            f"docker ps -a -f label={LABEL}"
        )
        return len(dead)
    for container in dead:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
    if dead:
        say(f"removed {len(dead)} leftover container(s) of ended mnnrepro sessions")
    return len(dead)


def hand_over(paths: Iterable[Path], uid: int, gid: int) -> int:
    """chown every entry under paths (symlinks themselves, not their targets) to uid:gid where it is not
    already; returns how many changed."""
    changed = 0
    for top in paths:
        entries = [top]
        for root, dirs, files in os.walk(top):
            entries += [Path(root, name) for name in (*dirs, *files)]
        for entry in entries:
            try:
                st = entry.lstat()
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.lchown(entry, uid, gid)
                    changed += 1
            except FileNotFoundError:
                pass  # gone meanwhile (a build's temp file)
    return changed


def _below(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


@dataclass
class DockerRunner:
    client: Any
    image: str
    read_only: tuple[Path, ...] = ()
    read_write: tuple[Path, ...] = ()  # read-write for every command (a session has none: see ``writable``)
    owned_trees: tuple[Path, ...] = ()  # the suite's own (the cache): read-only mounts inside are handed over too
    name: str = "docker"
    keep_on_failure: bool = field(default_factory=lambda: os.environ.get("MNNREPRO_KEEP_CONTAINERS") == "1")
    mem_limit: int = field(default_factory=default_mem_limit)
    pids_limit: int = PIDS_LIMIT
    home_dir: Path | None = None  # where the mount-point skeletons live (the cache); else a temporary directory
    _skeleton: Path | None = field(default=None, init=False, repr=False)

    @property
    def image_id(self) -> str:
        """The image's content digest (its tag names the inputs; this names the result)."""
        return str(self.client.images.get(self.image).id)

    def _volumes(self, writable: Sequence[Path]) -> dict[str, dict[str, str]]:
        vols: dict[str, dict[str, str]] = {}
        for path in (*self.read_write, *writable):
            path.mkdir(parents=True, exist_ok=True)
            vols[str(path)] = {"bind": str(path), "mode": "rw"}
        for path in self.read_only:
            if str(path) not in vols and path.exists():  # a missing one would be made by the engine, as root
                vols[str(path)] = {"bind": str(path), "mode": "ro"}
        return vols

    def _skeletons(self, vols: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        """For a non-root container: each PRIVATE_IN_IMAGE directory that mounts lie below, covered read-only by
        a directory of empty mount points (0755), so the mounts are reachable and nothing else is there."""
        out: dict[str, dict[str, str]] = {}
        for private in PRIVATE_IN_IMAGE:
            below = [Path(p) for p in vols if Path(p) != private and Path(p).is_relative_to(private)]
            if not below or str(private) in vols:
                continue
            skeleton = self._skeleton_root(below) / private.relative_to("/")
            for path in below:
                (skeleton / path.relative_to(private)).mkdir(parents=True, exist_ok=True)
            for d in (skeleton.parent, *skeleton.parent.rglob("*")):
                d.chmod(0o755)  # mkdtemp makes 0700; the container's user must traverse it
            out[str(skeleton)] = {"bind": str(private), "mode": "ro"}  # host path: {container path, mode}
        return out

    def _skeleton_root(self, below: Sequence[Path]) -> Path:
        """Under home_dir, named by the mount points it holds (the same set reuses it; nothing to clean up, even
        when the process leaves with os._exit); without a home_dir, a temporary directory removed with the
        runner."""
        if self.home_dir is not None:
            key = hashlib.sha256("\0".join(sorted(map(str, below))).encode()).hexdigest()[:16]
            return self.home_dir / "mountpoints" / key
        if self._skeleton is None:
            self._skeleton = Path(tempfile.mkdtemp(prefix="mnnrepro-mountpoints-"))
            weakref.finalize(self, shutil.rmtree, self._skeleton, True)
        return self._skeleton

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
        environment = dict(env or {})
        as_root = environment.pop(AS_ROOT, "") == "1"
        environment.setdefault("HOME", "/tmp")
        vols = self._volumes(writable)
        user, caps = self._identity(as_root, vols, writable)
        if user != "0:0":
            vols.update(self._skeletons(vols))
        start = time.monotonic()
        name = f"{LABEL}-{os.getpid()}-{next(_names)}"
        ended = _Ended()
        container: Any = None
        try:
            # Created inside the try: an interrupt while the engine creates it still removes it, by name.
            container = self._create(name, argv, environment, cwd, vols, user, caps)
            full_env = _container_env(container, environment)
            self._execute(container, ended, timeout_s, on_line, separate=bool(stdout_path or stderr_path))
        finally:
            self._remove(container, name, ended.failed)
        _write_streams(ended, stdout_path, stderr_path)
        assert ended.code is not None  # set by _execute, which raised otherwise
        return Completed(
            argv=tuple(argv),
            returncode=ended.code,
            duration_s=time.monotonic() - start,
            timed_out=ended.timed_out,
            stdout_path=stdout_path,
            stderr_path=stderr_path,
            output="" if stdout_path else ended.out.decode(errors="replace"),
            env=full_env,
            killed_by=self._killed_by(ended),
        )

    def _identity(
        self, as_root: bool, vols: dict[str, dict[str, str]], writable: Sequence[Path]
    ) -> tuple[str, list[str]]:
        """The container's user and added capabilities. Invoked as root: the image's user, with the paths it
        writes (and the read-only ones in owned_trees) handed over first."""
        caps = ["SYS_PTRACE"]  # gdb
        if as_root:
            user = "0:0"
            caps.append("DAC_OVERRIDE")  # root without it could not write the invoking user's result dir
        elif os.geteuid() == 0:
            user = "{}:{}".format(*IMAGE_USER)
            ro_owned = [Path(p) for p, v in vols.items() if v["mode"] == "ro" and _below(Path(p), self.owned_trees)]
            hand_over([*self.read_write, *writable, *ro_owned], *IMAGE_USER)
        else:
            user = f"{os.getuid()}:{os.getgid()}"
        return user, caps

    def _create(
        self,
        name: str,
        argv: Sequence[str],
        environment: dict[str, str],
        cwd: Path | None,
        vols: dict[str, dict[str, str]],
        user: str,
        caps: list[str],
    ) -> Any:
        """The container of one command, created (not started) with the least privilege it needs."""
        return self.client.containers.create(
            self.image,
            list(argv),
            name=name,
            labels=session_labels(),
            environment=environment,
            working_dir=str(cwd) if cwd else None,
            volumes=vols,
            user=user,
            network_mode="none",
            cap_drop=["ALL"],
            cap_add=caps,
            security_opt=["no-new-privileges"],
            pids_limit=self.pids_limit,
            mem_limit=self.mem_limit,
            memswap_limit=self.mem_limit,  # no swap: a runaway is killed, not thrashed into a hang
            init=True,
            detach=True,
        )

    def _execute(
        self, container: Any, ended: _Ended, timeout_s: float | None, on_line: OnLine | None, *, separate: bool
    ) -> None:
        """Start the container, wait for it (killed at timeout_s), and read its output into ``ended``: stdout
        and stderr apart when ``separate``, else together."""
        container.start()
        follower = _start_follower(container, on_line)
        ended.code, ended.timed_out = _wait(container, timeout_s)
        if ended.code != 0 and not ended.timed_out:
            # Set when the OOM killer ended any process of the container, not only its first one.
            container.reload()
            ended.oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        ended.out = container.logs(stdout=True, stderr=not separate)
        ended.err = container.logs(stdout=False, stderr=True) if separate else b""
        if follower is not None:
            follower.join(timeout=10)  # the stream ends with the container; never wait on it for long

    def _remove(self, container: Any, name: str, failed: bool) -> None:
        """Remove the container, unless it failed and MNNREPRO_KEEP_CONTAINERS asks to keep it. When creation
        was interrupted there is no handle: the engine may have made it all the same, so it is looked up by name."""
        import docker

        if self.keep_on_failure and failed and container is not None:
            return
        try:
            (container or self.client.containers.get(name)).remove(force=True)
        except docker.errors.APIError:  # NotFound included: never created
            pass

    def _killed_by(self, ended: _Ended) -> str | None:
        """The container limit that ended the command, in words, if one did."""
        if ended.oom:
            return f"the container's memory limit ({_gib(self.mem_limit)})"
        if ended.failed and (line := _fork_failure(ended.out[-65536:] + b"\n" + ended.err[-65536:])):
            return f"the container's pid limit ({self.pids_limit} tasks; fork failed: {line!r})"
        return None


@dataclass
class _Ended:
    """How a container's command ended, filled in as it is learned (the cleanup reads it after an error too)."""

    code: int | None = None
    timed_out: bool = False
    oom: bool = False
    out: bytes = b""
    err: bytes = b""

    @property
    def failed(self) -> bool:
        return self.timed_out or self.code != 0


def _start_follower(container: Any, on_line: OnLine | None) -> threading.Thread | None:
    if on_line is None:
        return None
    # Only for progress: the files below are still written from the container's full logs.
    follower = threading.Thread(target=_follow, args=(container, on_line), name="container output", daemon=True)
    follower.start()
    return follower


def _wait(container: Any, timeout_s: float | None) -> tuple[int, bool]:
    """The container's exit status, and whether it was killed at its time limit."""
    import requests

    try:
        status = container.wait(timeout=timeout_s)
        return int(status.get("StatusCode", 1)), False
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        container.kill()
        return int(container.wait(timeout=30).get("StatusCode", 137)), True
    except BaseException:
        # Ctrl-C / SIGTERM (mnnrepro.interrupts): the container would run on without us; kill it, and
        # the `finally` of DockerRunner.run removes it.
        with contextlib.suppress(Exception):
            container.kill()
        raise


def _write_streams(ended: _Ended, stdout_path: Path | None, stderr_path: Path | None) -> None:
    """The command's output into its files: stderr into stderr_path, or after stdout where there is none."""
    if stdout_path:
        stdout_path.write_bytes(ended.out)
    if stderr_path:
        stderr_path.write_bytes(ended.err)
    elif stdout_path and ended.err:
        with open(stdout_path, "ab") as f:
            f.write(ended.err)


def _fork_failure(output: bytes) -> str | None:
    """The first line of output that says fork/thread creation failed (FORK_FAILED), if any."""
    for line in output.decode(errors="replace").splitlines():
        if FORK_FAILED.search(line):
            return line.strip()[:160]
    return None


def _container_env(container: Any, fallback: Mapping[str, str]) -> dict[str, str]:
    """The container's whole environment as the engine made it (the image's ENV, then ours), from its
    configuration; the variables we set where the engine's answer lacks it."""
    entries = ((getattr(container, "attrs", None) or {}).get("Config") or {}).get("Env")
    if not entries:
        return dict(fallback)
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def _follow(container: Any, on_line: OnLine) -> None:
    """Pass the container's output (stdout and stderr, as they come) to on_line a line at a time."""
    pending = b""
    try:
        for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                on_line(raw.decode(errors="replace").rstrip("\r"))
        if pending:
            on_line(pending.decode(errors="replace").rstrip("\r"))
    except Exception:
        pass  # progress only: a dropped stream or a failing display costs the display, never the run
