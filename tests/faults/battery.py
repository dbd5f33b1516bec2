"""The fault battery's machinery: run the suite in a process of its own, plant a fault, send a signal at a
random moment, and afterwards look for what a fault must never cost: a false green, a lost file, a process or
a container left running.

- Processes: the test process is made a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so anything a run
  leaves behind when its parent exits is re-parented here instead of to init, and is found in /proc (parent =
  this process, started after the run began). The run's descendants are also sampled while it runs; one still
  alive afterwards is a leftover too.
- Containers: the Docker runner labels each container (docker_runner.session_labels: ``mnnrepro=1``,
  ``mnnrepro.pid``, ``mnnrepro.started``, ``mnnrepro.host``) and names it ``mnnrepro-<pid>-<n>``. Containers whose
  pid label or name is one of the run's processes are sampled during the run (proof that they carry the labels)
  and must all be gone when it has ended.
- Losses: marker files made before the fault (in the cache, the results directory and the source cache) must
  be there, byte for byte, afterwards (``Markers``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
FAKERUN = Path(__file__).resolve().parent / "fakerun.py"
GOLDEN_COMMIT_330 = "5047919a1ae594d090ee54c7ea3403a9dee8cad4"
# Files source.check_tree wants (source.REQUIRED), and the version header a tree's version is read from.
MNN_REQUIRED = (
    "CMakeLists.txt",
    "include/MNN/MNNDefine.h",
    "express/RuntimeAttr.hpp",
    "tools/train/source/optimizer/SGD.cpp",
    "source/backend/vulkan/CMakeLists.txt",
)
STOP_LIMIT_S = 10.0  # a signalled run must have ended this long after the signal
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROW_PROPERTY = "fault_row"
_LIVE: set[int] = set()  # runs of this process still going (run_many): never another run's leftover

# -- rows of the table -----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the battery's table. ``problems`` is what fails the case."""

    fault: str
    runner: str = "-"
    outcome: str = ""  # verdicts or exit code
    message: str = ""  # an excerpt of what the suite said
    lost: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    false_green: bool = False
    unclear: str = ""  # why the outcome is not the clear verdict or message the fault should give; "" when it is
    notes: str = ""  # seed, delay, containers seen

    def problems(self) -> list[str]:
        out = []
        if self.false_green:
            out.append(f"FALSE GREEN: {self.outcome}")
        if self.lost:
            out.append(f"LOST: {'; '.join(self.lost)}")
        if self.leftovers:
            out.append(f"LEFT OVER: {'; '.join(self.leftovers)}")
        if self.unclear:
            out.append(f"UNCLEAR: {self.unclear}")
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, str):
                data[key] = tidy(value)
            elif isinstance(value, list):
                data[key] = [tidy(str(v)) for v in value]
        return data


def tidy(text: str) -> str:
    """A case's temporary directory as <case>: the table stays readable."""
    return re.sub(r"/tmp/pytest-of-[^/\s]+/pytest-\d+/(?:popen-gw\d+/)?[^/\s]+", "<case>", text)


# -- processes -------------------------------------------------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphans of the runs started from here come back to this process (so they can be found and counted)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def now_ticks() -> int:
    """Clock ticks since boot, the unit of /proc/PID/stat's start time."""
    return int(float(Path("/proc/uptime").read_text().split()[0]) * CLK_TCK)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str
    start: int  # ticks since boot

    @property
    def cmdline(self) -> str:
        try:
            raw = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return "?"
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160] or "?"


def processes() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        table[int(stat.parent.name)] = Proc(int(stat.parent.name), int(fields[1]), fields[0], int(fields[19]))
    return table


def descendants(root: int, table: dict[int, Proc]) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in table.values():
        children.setdefault(p.ppid, []).append(p.pid)
    out: set[int] = set()
    todo = [root]
    while todo:
        for kid in children.get(todo.pop(), []):
            if kid not in out:
                out.add(kid)
                todo.append(kid)
    return out


def leftover_processes(since: int, seen: dict[int, int], exclude: Iterable[int] = ()) -> list[Proc]:
    """Processes alive now that belong to a run begun at ``since``: orphans re-parented to this process, and
    any process sampled as the run's (pid -> start time, so a reused pid is not mistaken for one)."""
    me = os.getpid()
    skip = set(exclude) | _LIVE
    found = []
    for p in processes().values():
        if p.pid in skip or p.pid == me or p.state in ("Z", "X"):
            continue
        if (p.ppid == me and p.start >= since) or seen.get(p.pid) == p.start:
            found.append(p)
    return found


def kill_and_reap(procs: Sequence[Proc]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)
    reap_orphans()


def reap_orphans(exclude: Iterable[int] = ()) -> None:
    """Collect the exit status of orphans re-parented here that have ended (never a Popen's own child)."""
    me, skip = os.getpid(), set(exclude) | _LIVE
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        zombies = [p.pid for p in processes().values() if p.ppid == me and p.pid not in skip and p.state == "Z"]
        if not zombies:
            return
        for pid in zombies:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


# -- containers ------------------------------------------------------------------------------------------------


def docker_client() -> Any | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        return client
    except Exception:
        return None


def run_containers(client: Any, pids: Iterable[int]) -> list[Any]:
    """Containers (any state) that a process among ``pids`` of this host started: by the pid label, or by the
    name; a container labelled with another host (a session in another PID namespace sharing this engine, e.g.
    a fresh-machine container with the Docker socket) is not ours, whatever its pid."""
    wanted = {str(p) for p in pids}
    host = socket.gethostname()
    try:
        found = client.containers.list(all=True, filters={"name": "mnnrepro-"})
        found += client.containers.list(all=True, filters={"label": "mnnrepro=1"})
    except Exception:
        return []
    out: dict[str, Any] = {}
    for c in found:
        labels = c.labels or {}
        if labels.get("mnnrepro.host", host) != host:
            continue
        name = str(c.name or "")
        m = re.fullmatch(r"mnnrepro-(\d+)-\d+", name)
        if labels.get("mnnrepro.pid") in wanted or (m and m.group(1) in wanted):
            out[c.id] = c
    return list(out.values())


def describe_container(c: Any) -> str:
    labels = c.labels or {}
    keys = ("mnnrepro", "mnnrepro.pid", "mnnrepro.started", "mnnrepro.host")
    missing = [k for k in keys if k not in labels]
    return f"{c.name} ({c.status}; labels {'complete' if not missing else 'lacking ' + ', '.join(missing)})"


# -- running the suite -----------------------------------------------------------------------------------------


@dataclass
class Ran:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float
    leftovers: list[str]
    containers_seen: list[str]
    pids: dict[int, int] = field(default_factory=dict)  # every process of the run seen: pid -> start time
    battery_timeout: bool = False
    aborted: str = ""  # the output line that made the battery stop the run (``abort``)
    signal_sent: str = ""
    signal_at_s: float | None = None  # since the start
    stopped_after_s: float | None = None  # from the signal to the exit
    ended_at: float = 0.0  # time.time() when it had ended (a signal the run sent itself is dated in that clock)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any MNNREPRO_* of its own (a test sets what it plants), with the
    checkout's src/ importable and unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNNREPRO_")}
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("GITHUB_STEP_SUMMARY", None)
    env.update(extra or {})
    return env


class Sampler(threading.Thread):
    """Samples the run's descendants (and, with a client, its containers) while it runs."""

    def __init__(self, root: int, client: Any | None) -> None:
        super().__init__(name="fault battery sampler", daemon=True)
        self.root = root
        self.client = client
        self.seen: dict[int, int] = {root: processes()[root].start} if root in processes() else {}
        self.containers: dict[str, str] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        table = processes()
        for pid in descendants(self.root, table) | ({self.root} & set(table)):
            self.seen.setdefault(pid, table[pid].start)

    def run(self) -> None:
        last_docker = 0.0
        while not self.stop.is_set():
            self.sample()
            if self.client is not None and time.monotonic() - last_docker > 0.5:
                last_docker = time.monotonic()
                for c in run_containers(self.client, self.seen):
                    self.containers[c.id] = describe_container(c)
            self.stop.wait(0.05)


@dataclass(frozen=True)
class Send:
    """A signal for a run: ``delay_s`` after it started, or after ``after`` (a regex) appeared in its output;
    to its whole process group (what a terminal's Ctrl-C does) or to its first process alone (a CI runner's
    cancel, `kill PID`)."""

    signum: signal.Signals
    delay_s: float
    group: bool
    after: str = ""

    def describe(self) -> str:
        where = "the process group" if self.group else "the first process"
        when = f"{self.delay_s:.2f} s after {self.after!r}" if self.after else f"at {self.delay_s:.2f} s"
        return f"{self.signum.name} to {where} {when}"


def past_last_word(pid: int) -> bool:
    """The process has ended, or has passed mnnrepro.interrupts.last_word (SIGINT and SIGTERM blocked, about to
    exit): a wall-clock signal sent now would come after its end, which proves nothing (not an ignored signal)."""
    try:
        status = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
    except OSError:
        return True
    if status.get("State", "").strip().startswith(("Z", "X")):
        return True
    blocked = int(status.get("SigBlk", "0").strip() or "0", 16)
    return all(blocked >> (int(sig) - 1) & 1 for sig in (signal.SIGINT, signal.SIGTERM))


def run_tracked(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    timeout_s: float,
    cwd: Path = ROOT,
    send: Send | None = None,
    docker: Any | None = None,
    abort: str = "",
    keep_containers: bool = False,
) -> Ran:
    """Run ``argv`` in a new session; optionally ``send`` a signal while it runs; afterwards, list what it left
    (processes; containers, where ``docker`` is a client). ``abort``: a regex that, once in the output, stops
    the run (SIGINT to its group, so the suite cleans up): e.g. "building MNN core", which the battery never
    starts. ``keep_containers``: containers left are listed but not removed (a case that expects them)."""
    since = now_ticks()
    start = time.monotonic()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdout=out_w, stderr=err_w, stdin=subprocess.DEVNULL, start_new_session=True
    )
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def drain(fd: int) -> None:
        while data := os.read(fd, 65536):
            chunks[fd].append(data)
        os.close(fd)

    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_r, err_r)]
    for r in readers:
        r.start()
    _LIVE.add(proc.pid)
    sampler = Sampler(proc.pid, docker)
    sampler.start()
    aborted: list[str] = []

    def watch() -> None:
        pattern = re.compile(abort)
        while proc.poll() is None:
            text = b"".join(chunks[out_r] + chunks[err_r]).decode(errors="replace")
            hit = pattern.search(text)
            if hit:
                aborted.append(text[hit.start() : hit.start() + 200].splitlines()[0])
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                return
            time.sleep(0.2)

    if abort:
        threading.Thread(target=watch, name="fault battery abort watch", daemon=True).start()
    sent, signal_at, stopped_after, battery_timeout = "", None, None, False
    if send is not None:
        t0 = start
        if send.after:
            pattern = re.compile(send.after)
            while proc.poll() is None and time.monotonic() - start < timeout_s:
                if pattern.search(b"".join(chunks[out_r] + chunks[err_r]).decode(errors="replace")):
                    break
                time.sleep(0.05)
            t0 = time.monotonic()
        try:
            proc.wait(timeout=max(0.0, t0 + send.delay_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            sampler.sample()
            if not past_last_word(proc.pid):  # exiting: a signal now is too late by design, not ignored
                with contextlib.suppress(ProcessLookupError):
                    if send.group:
                        os.killpg(proc.pid, send.signum)
                    else:
                        os.kill(proc.pid, send.signum)
                signal_at = time.monotonic() - start
                sent = f"{send.describe()} (sent at {signal_at:.2f} s)"
    try:
        proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        battery_timeout = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    end = time.monotonic()
    _LIVE.discard(proc.pid)
    if signal_at is not None:
        stopped_after = end - start - signal_at
    sampler.stop.set()
    sampler.join()
    for r in readers:
        r.join(timeout=5)
    time.sleep(0.2)  # a process the run killed last may take a moment to be gone
    left = leftover_processes(since, sampler.seen, exclude=(proc.pid,))
    reap_orphans()
    leftovers = [f"process {p.pid} {p.cmdline}" for p in left]
    kill_and_reap(left)
    containers_seen = sorted(sampler.containers.values())
    if docker is not None:
        deadline = time.monotonic() + 2
        remaining = run_containers(docker, sampler.seen)
        while remaining and time.monotonic() < deadline:
            time.sleep(0.2)
            remaining = run_containers(docker, sampler.seen)
        for c in remaining:
            leftovers.append(f"container {describe_container(c)}")
            if not keep_containers:
                with contextlib.suppress(Exception):
                    c.remove(force=True)
    return Ran(
        argv=list(argv),
        returncode=proc.returncode,
        stdout=b"".join(chunks[out_r]).decode(errors="replace"),
        stderr=b"".join(chunks[err_r]).decode(errors="replace"),
        duration_s=end - start,
        ended_at=time.time() - (time.monotonic() - end),
        leftovers=leftovers,
        containers_seen=containers_seen,
        pids=dict(sampler.seen),
        battery_timeout=battery_timeout,
        aborted=aborted[0] if aborted else "",
        signal_sent=sent,
        signal_at_s=signal_at,
        stopped_after_s=stopped_after,
    )


def fakerun(plan: dict[str, Any], plan_dir: Path, *args: str) -> list[str]:
    """argv of the battery's entry point with ``plan`` (tests/faults/fakerun.py)."""
    plan_dir.mkdir(parents=True, exist_ok=True)
    path = plan_dir / f"plan-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(plan, indent=1))
    return [sys.executable, str(FAKERUN), str(path), *args]


def mnnrepro(*args: str) -> list[str]:
    return [sys.executable, "-m", "mnnrepro", *args]


# -- what the suite said ---------------------------------------------------------------------------------------


def summaries(results: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(results.glob("*/summary.json")):
        try:
            out.append(json.loads(path.read_text()))
        except ValueError:
            out.append({"status": f"UNREADABLE {path}", "cells": []})
    return out


def verdicts(summary: dict[str, Any]) -> dict[str, str]:
    return {str(c["cell"]): str(c["verdict"]) for c in summary.get("cells", [])}


def short_cell(cell_id: str) -> str:
    """3.3.0/vulkan-buffer/lavapipe -> buffer (lavapipe, the battery's ICD, is not said); 3.3.0/cpu/- -> cpu;
    3.3.0/vulkan-image/bogus -> image/bogus"""
    parts = cell_id.split("/")
    variant = parts[1].removeprefix("vulkan-") if len(parts) > 1 else cell_id
    return variant if len(parts) < 3 or parts[2] in ("-", "lavapipe") else f"{variant}/{parts[2]}"


def outcome_of(ran: Ran, summary: dict[str, Any] | None) -> str:
    text = f"exit {ran.returncode}"
    if ran.battery_timeout:
        text = "HANG (killed by the battery)"
    if summary is not None:
        cells = ", ".join(f"{short_cell(c)} {v}" for c, v in verdicts(summary).items())
        status = "" if summary.get("status") == "complete" else f" [{summary.get('status')}]"
        text += f": {cells}{status}"
    return text


TRACEBACK = "Traceback (most recent call last)"


def message_of(ran: Ran, *, prefer: str = "") -> str:
    """The line that says what happened: one matching ``prefer``, else the suite's error line, else the last line
    of stderr or stdout."""
    lines = [ln.strip() for ln in ran.output.splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith("mnnrepro:")]
    if TRACEBACK in ran.output:
        last = [ln for ln in ran.stderr.splitlines() if ln.strip()]
        return f"TRACEBACK: {last[-1].strip() if last else '?'}"
    for ln in [*said, *lines] if prefer else []:
        if re.search(prefer, ln):
            return ln
    if said:
        return said[0]
    err = [ln.strip() for ln in ran.stderr.splitlines() if ln.strip()]
    return (err or lines or ["(no output)"])[-1]


def cell_reason(summary: dict[str, Any], cell_id: str) -> str:
    for c in summary.get("cells", []):
        if c["cell"] == cell_id:
            return f"{short_cell(cell_id)}: {c['verdict']}: {c['reason']}"
    return f"{cell_id}: not in the summary"


# -- losses ----------------------------------------------------------------------------------------------------


class Markers:
    """Files made before a fault that must be intact after it (a hash of each, compared)."""

    def __init__(self) -> None:
        self.files: dict[Path, str] = {}
        self.made: list[Path] = []

    def plant(self, directory: Path, name: str = "") -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / (name or f".faults-marker-{uuid.uuid4().hex[:8]}")
        path.write_text(f"made by the fault battery before the fault, {time.time()}\n")
        self.made.append(path)
        return self.keep(path)

    def keep(self, path: Path) -> Path:
        """Watch an existing file (a cached artifact's stamp, a previous run's report)."""
        self.files[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        return path

    def keep_tree(self, directory: Path, pattern: str = "*") -> None:
        for path in sorted(directory.rglob(pattern)):
            if path.is_file() and not path.is_symlink():
                self.keep(path)

    def lost(self) -> list[str]:
        out = []
        for path, digest in self.files.items():
            if not path.is_file():
                out.append(f"{path} is gone")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                out.append(f"{path} changed")
        return out

    def remove_planted(self) -> None:
        for path in self.made:
            path.unlink(missing_ok=True)


def previous_results(results: Path) -> Path:
    """A results directory of an earlier run, which no later run may touch."""
    earlier = results / "20000101T000000Z-earlier-run-1"
    earlier.mkdir(parents=True, exist_ok=True)
    (earlier / "summary.json").write_text(json.dumps({"format": 1, "status": "complete", "cells": []}))
    return earlier / "summary.json"


def staging_leftovers(src_parent: Path) -> list[str]:
    """Temporary trees a source import/clone makes beside its entry (.import-*, .clone-*, .old-*)."""
    if not src_parent.is_dir():
        return []
    return [f"staging dir {p}" for p in src_parent.iterdir() if re.match(r"\.(import|clone|old)-", p.name)]


# -- fake inputs -----------------------------------------------------------------------------------------------


def fake_mnn_tree(path: Path, *, commit: str = GOLDEN_COMMIT_330, ref: str = "3.3.0", slow_s: float = 0) -> Path:
    """A directory the suite takes for an MNN tree: the files check_tree wants, MNNDefine.h saying 3.3.0, and a
    CMakeLists.txt that builds libMNN/libMNN_Express/libMNNTrain where Builder looks for them (the core build
    sleeps ``slow_s`` seconds in one step, so a test can kill it midway)."""
    for rel in MNN_REQUIRED:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text("")
    (path / "include/MNN/MNNDefine.h").write_text(
        "#define MNN_VERSION_MAJOR 3\n#define MNN_VERSION_MINOR 3\n#define MNN_VERSION_PATCH 0\n"
    )
    (path / "fake.c").write_text("int fake_mnn(void) { return 3129; }\n")
    slow = (
        f"add_custom_command(OUTPUT slow.c COMMAND sleep {slow_s:g} COMMAND sh -c \"echo 'int slow(void){{return 1;}}' "
        '> slow.c" VERBATIM)\n'
    )
    (path / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(FakeMNN C)\n"
        + slow
        + "add_library(MNN SHARED fake.c ${CMAKE_CURRENT_BINARY_DIR}/slow.c)\n"
        "add_library(MNN_Express SHARED fake.c)\n"
        "set_target_properties(MNN_Express PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/express)\n"
        "add_library(MNNTrain SHARED fake.c)\n"
        "set_target_properties(MNNTrain PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tools/train)\n"
    )
    if commit:
        (path / ".mnnrepro-source.json").write_text(json.dumps({"ref": ref, "commit": commit, "origin": "fake"}))
    return path


def checkout_copy(dest: Path, *, copy: Sequence[str] = ()) -> Path:
    """A checkout the suite can be pointed at (MNNREPRO_CHECKOUT): fixtures/ entries linked to the real ones
    except those under ``copy`` (relative paths: "fixtures/matrix.toml", "fixtures/golden"), pyproject.toml
    copied, native/ and docker/ linked. A case corrupts its copies; the real files are never written."""
    fixtures = dest / "fixtures"
    fixtures.mkdir(parents=True)
    copied = {Path(c) for c in copy}
    for entry in (ROOT / "fixtures").iterdir():
        rel = entry.relative_to(ROOT)
        if rel in copied:
            if entry.is_dir():
                shutil.copytree(entry, fixtures / entry.name)
            else:
                shutil.copy2(entry, fixtures / entry.name)
        else:
            (fixtures / entry.name).symlink_to(entry)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for name in ("native", "docker"):
        (dest / name).symlink_to(ROOT / name)
    return dest


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "faults",
        "GIT_AUTHOR_EMAIL": "f@example.invalid",
        "GIT_COMMITTER_NAME": "faults",
        "GIT_COMMITTER_EMAIL": "f@example.invalid",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def git_repo(path: Path, *, valid: bool, tag: str = "3.3.0", who: str = "") -> Path:
    """A git repository whose ``tag`` is an MNN-like tree (``valid``) or a tree that is not one."""
    path.mkdir(parents=True)
    git("init", "-q", cwd=path)
    if valid:
        fake_mnn_tree(path, commit="")
    else:
        (path / "README").write_text("not an MNN tree\n")
    (path / "WHO").write_text(who or path.name)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "tree", cwd=path)
    git("tag", tag, cwd=path)
    return path


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers: the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def seeded(seed: int, key: str) -> random.Random:
    return random.Random(f"{seed}:{key}")


# -- judging a case --------------------------------------------------------------------------------------------

CPU, IMAGE, BUFFER = "3.3.0/cpu/-", "3.3.0/vulkan-image/lavapipe", "3.3.0/vulkan-buffer/lavapipe"
CLEAN = {CPU: "PASS", IMAGE: "REPRODUCED", BUFFER: "FIXED"}  # 3.3.0, --icd lavapipe (fixtures/matrix.toml)
INTERRUPTED = "INTERRUPTED"


def latest_summary(results: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest results directory of a run (not the planted earlier one) and its summary.json."""
    runs = sorted(p for p in results.glob("*/summary.json") if "earlier-run" not in p.parent.name)
    if not runs:
        return None
    try:
        return runs[-1].parent, json.loads(runs[-1].read_text())
    except ValueError as exc:
        return runs[-1].parent, {"status": f"unreadable summary.json: {exc}", "cells": []}


def kept_cells(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """Cells the summary says finished whose directory is not there (a loss)."""
    missing = []
    for c in summary.get("cells", []):
        if c.get("verdict") == INTERRUPTED:
            continue
        where = run_dir / "cells" / str(c["cell"]).replace("/", "__")
        if not where.is_dir():
            missing.append(f"finished cell {c['cell']}: {where} is gone")
    return missing


def session_row(
    fault: str,
    runner: str,
    ran: Ran,
    results: Path,
    markers: Markers,
    *,
    exits: Iterable[int],
    expect: dict[str, str] | None = None,
    faulted: Sequence[str] = (),
    green: bool = False,
    prefer: str = "",
) -> tuple[Row, tuple[Path, dict[str, Any]] | None]:
    """The row of a session run. ``exits``: the exit codes the fault must give; ``expect``: verdicts per cell;
    ``faulted``: the cells the fault was planted in (one of them matching its expectation is a false green);
    ``green``: the fault must not change the verdicts (exit 0 is then no false green)."""
    found = latest_summary(results)
    summary = found[1] if found else None
    row = Row(fault, runner, outcome_of(ran, summary))
    if faulted and summary is not None:
        row.message = cell_reason(summary, faulted[0])
    else:
        row.message = message_of(ran, prefer=prefer)
    if not green and ran.returncode == 0:
        row.false_green = True
    if summary is not None:
        for c in summary.get("cells", []):
            if c["cell"] in faulted and c.get("matched"):
                row.false_green = True
    unclear = []
    allowed = sorted(set(exits))
    if ran.aborted:
        unclear.append(f"stopped by the battery: {ran.aborted!r} (the battery never builds MNN)")
    if ran.battery_timeout:
        unclear.append("did not end within the battery's limit")
    elif ran.returncode not in allowed:
        unclear.append(f"exit {ran.returncode}, want {' or '.join(map(str, allowed))}")
    if TRACEBACK in ran.stderr or TRACEBACK in ran.stdout:
        unclear.append("a Python traceback instead of a message")
    if expect is not None:
        got = verdicts(summary) if summary else {}
        wrong = [f"{short_cell(c)} {got.get(c, 'absent')} (want {v})" for c, v in expect.items() if got.get(c) != v]
        if wrong:
            unclear.append("verdicts: " + ", ".join(wrong))
    row.unclear = "; ".join(unclear)
    row.lost = markers.lost() + (kept_cells(*found) if found else [])
    row.leftovers = list(ran.leftovers)
    if ran.containers_seen:
        row.notes = "; ".join(filter(None, [row.notes, f"containers seen: {', '.join(ran.containers_seen)}"]))
    return row, found


BUG_CREATED_CONTAINER = (
    "bug: docker_runner.DockerRunner.run creates the container (self._create, then _container_env) before the "
    "try/finally that removes it: a Ctrl-C/SIGTERM that lands while the engine creates it leaves a container in "
    "state 'created' (removed only by the next Docker session's remove_leftovers)"
)


def known_bug(row: Row) -> str:
    """The reported bug a random case ran into, when that is all that went wrong (its row is then xfail)."""
    created = [x for x in row.leftovers if x.startswith("container ") and "(created;" in x]
    if created and len(created) == len(row.leftovers) and not (row.false_green or row.lost or row.unclear):
        return BUG_CREATED_CONTAINER
    return ""


def signal_row(
    fault: str, runner: str, ran: Ran, results: Path, markers: Markers, signum: signal.Signals
) -> tuple[Row, str]:
    """A run that got ``signum`` while it ran: 128+N within STOP_LIMIT_S, its reports written with the cells that
    finished and the rest INTERRUPTED, nothing left. A signal before the suite installed its handlers (Python
    starting) kills it outright; a run that ended before the signal proves nothing and says so. Returns the row
    and the reported bug it showed, if any (known_bug)."""
    code = 128 + int(signum)
    row, found = session_row(fault, runner, ran, results, markers, exits={code, -int(signum)}, green=True)
    known = ""
    problems = row.unclear.split("; ") if row.unclear else []
    if ran.signal_sent and ran.returncode == -int(signum) and "results in" not in ran.stdout:
        # Python's own KeyboardInterrupt traceback (or death by SIGTERM) while it imported: nothing had begun.
        problems = [p for p in problems if "traceback" not in p]
    if not ran.signal_sent:
        row.notes = "; ".join(filter(None, [row.notes, "the run ended before the signal: nothing proved"]))
        problems = [] if ran.returncode == 0 else problems
    elif ran.stopped_after_s is not None and ran.stopped_after_s > STOP_LIMIT_S:
        problems.append(f"stopped {ran.stopped_after_s:.1f} s after the signal (limit {STOP_LIMIT_S:g} s)")
    if ran.signal_sent and ran.returncode == code:
        if found is None:
            if "results in" in ran.stdout:
                problems.append("no summary.json although the results directory was made")
        else:
            run_dir, summary = found
            if summary.get("status") == "complete":
                late = "the signal came after the reports were written (they say what finished: all of it)"
                row.notes = "; ".join(filter(None, [row.notes, late]))
            elif summary.get("status") != INTERRUPTED:
                problems.append(f"summary status {summary.get('status')!r}, want INTERRUPTED")
            if not (run_dir / "junit.xml").is_file():
                problems.append("no junit.xml")
            # Every cell had finished and matched: a true result, and the exit (128+N) still says the signal.
            # Anything else that claims all matched after a signal is a false green.
            if summary.get("all_matched") and summary.get("status") != "complete":
                row.false_green = True
    elif ran.signal_sent and ran.returncode == -int(signum):
        if "results in" in ran.stdout:
            problems.append("killed outright after the session had started")
        else:
            row.message = (
                f"killed by {signum.name} while Python was starting, before the suite's handlers (Python's own "
                "behaviour); nothing had begun"
            )
    elif ran.signal_sent and ran.returncode in (0, 1):
        problems.append(f"the signal was ignored: exit {ran.returncode}")
    row.unclear = "; ".join(problems)
    stopped = f"; stopped {ran.stopped_after_s:.1f} s after it" if ran.stopped_after_s is not None else ""
    row.notes = "; ".join(filter(None, [f"{ran.signal_sent}{stopped}", row.notes]))
    row.message = f"{row.message} [{ran.signal_sent or 'no signal sent'}{stopped}]"
    return row, known or known_bug(row)


def cli_row(
    fault: str, runner: str, ran: Ran, markers: Markers, *, exits: Iterable[int], says: str = "", prefer: str = ""
) -> Row:
    """The row of a command that must stop with a message (a configuration, fixture or source error)."""
    row = Row(fault, runner, f"exit {ran.returncode}", message_of(ran, prefer=prefer or says))
    if ran.returncode == 0:
        row.false_green = True
    unclear = []
    allowed = sorted(set(exits))
    if ran.battery_timeout:
        unclear.append("did not end within the battery's limit")
    elif ran.returncode not in allowed:
        unclear.append(f"exit {ran.returncode}, want {' or '.join(map(str, allowed))}")
    if TRACEBACK in ran.output:
        unclear.append("a Python traceback instead of a message")
    elif says and not re.search(says, ran.output):
        unclear.append(f"the message does not say {says!r}")
    row.unclear = "; ".join(unclear)
    row.lost = markers.lost()
    row.leftovers = list(ran.leftovers)
    return row


@dataclass(frozen=True)
class Phase:
    """A moment of the fake session (tests/faults/fakerun.py, fake_driver.py) at which a signal is sent, from inside
    the run, so that it lands in that moment on any machine, however loaded: a call of the suite's own
    (``call``, ``when`` it is made or has returned), or a cell's fake driver beginning forward step ``step``
    (``cell``: its key, "vulkan-buffer/lavapipe"), which signals the session that waits for it."""

    name: str
    call: str = ""
    when: str = "before"
    cell: str = ""
    step: int = 0

    def plans(self, signum: signal.Signals, group: bool, record: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """(fakerun's plan keys, the fake driver's plan keys) that send ``signum`` at this moment."""
        if self.call:
            return {"signal_at": {"call": self.call, "when": self.when, "signum": int(signum), "group": group}}, {}
        spec = {"cell": self.cell, "step": self.step, "signum": int(signum), "group": group, "record": str(record)}
        return {}, {"signal_session": spec}


# The fake session's moments, in order (3.3.0, --icd lavapipe: cpu trains, image crashes in sgd_step 0, buffer
# trains). Each names code whose cut by a signal once lost reports or left a child (see CHANGELOG, issue 21).
PHASES = (
    Phase("preflight done, no results directory yet", "mnnrepro.prepare.preflight_for", "after"),
    Phase("results directory just made", "mnnrepro.prepare.results_dir", "after"),
    Phase("settings shown, before the first cell", "mnnrepro.workloads.train.workload.workload_of"),
    Phase("a driver forked, Popen not yet returned", "subprocess.Popen._execute_child", "after"),
    Phase("the cpu driver at forward step 1", cell="cpu/-", step=1),
    Phase("the first cell being judged", "mnnrepro.judge.judge"),
    Phase("the image driver at forward step 0", cell="vulkan-image/lavapipe", step=0),
    Phase("the buffer driver at forward step 2", cell="vulkan-buffer/lavapipe", step=2),
    Phase("the last cell done, before the reports", "mnnrepro.report.summary"),
    Phase("while the reports are written", "mnnrepro.report.write_junit"),
    Phase("the reports written, tables shown", "mnnrepro.report.table"),
    Phase("the command returned, before the exit", "mnnrepro.interrupts.last_word"),
)
SIGNAL_SENT = "signal-sent.json"  # fakerun.SIGNAL_SENT: where the run notes the moment it sent its signal


def note_sent(ran: Ran, record: Path, phase: Phase) -> None:
    """Fill ``ran``'s signal fields from the moment the run noted (``record``); a phase never reached says so."""
    try:
        sent = json.loads(record.read_text())
    except (OSError, ValueError):
        ran.signal_sent = ""
        return
    how = "its process group" if sent.get("group") else "the session"
    ran.signal_sent = f"{signal.Signals(int(sent['signum'])).name} to {how} at {phase.name} ({sent['phase']})"
    ran.stopped_after_s = max(0.0, ran.ended_at - float(sent["at"]))
    ran.signal_at_s = max(0.0, ran.duration_s - ran.stopped_after_s)


def run_signalled(
    run: Callable[[Send], Ran], rng: random.Random, signum: signal.Signals, group: bool, lo: float, hi: float
) -> Ran:
    """``run`` with ``signum`` at a random moment in [lo, hi] s; when the run ended before it (a machine faster
    than ``hi`` assumed), again with the moment drawn from the part of that run's duration that has passed."""
    ran: Ran | None = None
    for attempt in range(1, 4):
        ran = run(Send(signum, rng.uniform(lo, hi), group))
        if ran.signal_sent:
            if attempt > 1:
                ran.signal_sent += f" (attempt {attempt}: the earlier runs ended before their signal)"
            return ran
        hi = max(lo + 0.1, min(hi, ran.duration_s * 0.8))
    assert ran is not None
    return ran
