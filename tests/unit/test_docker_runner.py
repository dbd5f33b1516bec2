"""docker_runner.DockerRunner against a fake engine: what each container is created with (labels, name,
capabilities, limits, read-only and per-call writable mounts, user), leftovers of ended sessions, and a
container limit surfacing as Completed.killed_by and a FAIL that says so."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("docker")

from mnnrepro import docker_runner as D
from mnnrepro import judge as J
from mnnrepro.cells import Cell, CellRun
from mnnrepro.contract import RunRecord
from mnnrepro.docker_runner import DockerRunner, remove_leftovers
from mnnrepro.judge import judge

GIB = 1 << 30


@dataclass
class FakeContainer:
    code: int = 0
    out: bytes = b""
    err: bytes = b""
    oom: bool = False
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    removed: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.attrs = {"Config": {"Env": self.env}, "State": {}}

    def start(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        return {"StatusCode": self.code}

    def reload(self) -> None:
        self.attrs["State"] = {"OOMKilled": self.oom, "ExitCode": self.code}

    def kill(self) -> None:
        pass

    def logs(self, stdout: bool = True, stderr: bool = True, stream: bool = False, follow: bool = False) -> bytes:
        return (self.out if stdout else b"") + (self.err if stderr else b"")

    def remove(self, force: bool = False) -> None:
        self.removed = True


@dataclass
class FakeContainers:
    container: FakeContainer = field(default_factory=FakeContainer)
    created: list[dict[str, Any]] = field(default_factory=list)
    existing: list[FakeContainer] = field(default_factory=list)
    filters: list[dict[str, Any]] = field(default_factory=list)

    def create(self, image: str, command: list[str], **kwargs: Any) -> FakeContainer:
        self.created.append({"image": image, "command": command, **kwargs})
        return self.container

    def list(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[FakeContainer]:
        assert all
        self.filters.append(filters or {})
        return self.existing


class FakeDocker:
    def __init__(self, container: FakeContainer | None = None) -> None:
        self.containers = FakeContainers(container or FakeContainer())


@pytest.fixture
def chowned(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, int, int]]:
    """os.lchown recorded, not done (the tests run as any user); euid 0 unless a test says otherwise."""
    calls: list[tuple[Path, int, int]] = []
    monkeypatch.setattr(os, "lchown", lambda p, u, g: calls.append((Path(p), u, g)))
    return calls


def as_invoker(monkeypatch: pytest.MonkeyPatch, euid: int) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: euid)


def test_every_container_is_labelled_named_confined_and_limited(tmp_path: Path) -> None:
    fake = FakeDocker()
    runner = DockerRunner(fake, "img", mem_limit=3 * GIB, pids_limit=77)
    runner.run(["true"])
    runner.run(["true"])
    first, second = fake.containers.created
    pid = os.getpid()
    assert first["labels"] == {
        "mnnrepro": "1",
        "mnnrepro.pid": str(pid),
        "mnnrepro.started": D._start_ticks(pid),
        "mnnrepro.host": socket.gethostname(),
    }
    n = int(re.fullmatch(rf"mnnrepro-{pid}-(\d+)", first["name"]).group(1))  # type: ignore[union-attr]
    assert second["name"] == f"mnnrepro-{pid}-{n + 1}"
    assert (first["cap_drop"], first["cap_add"]) == (["ALL"], ["SYS_PTRACE"])
    assert first["security_opt"] == ["no-new-privileges"]
    assert (first["pids_limit"], first["mem_limit"], first["memswap_limit"]) == (77, 3 * GIB, 3 * GIB)
    assert (first["network_mode"], first["init"]) == ("none", True)


def test_the_default_limits_fit_a_build_with_ninjas_default_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert DockerRunner(FakeDocker(), "img").mem_limit == 8 * GIB  # 2 CPUs: the floor, 4 jobs
    monkeypatch.setattr(os, "cpu_count", lambda: 30)
    assert DockerRunner(FakeDocker(), "img").mem_limit == 32 * GIB  # 32 jobs at 1 GiB each
    assert DockerRunner(FakeDocker(), "img").pids_limit == D.PIDS_LIMIT


def test_only_the_calls_writable_paths_are_mounted_read_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chowned: list[tuple[Path, int, int]]
) -> None:
    as_invoker(monkeypatch, 1234)
    checkout, variants, missing = tmp_path / "checkout", tmp_path / "cache" / "variants", tmp_path / "nope"
    for d in (checkout, variants):
        d.mkdir(parents=True)
    cell = tmp_path / "results" / "cell"
    fake = FakeDocker()
    runner = DockerRunner(fake, "img", read_only=(checkout, variants, missing))
    runner.run(["driver"], writable=[cell])
    runner.run(["probe"])
    with_cell, without = (c["volumes"] for c in fake.containers.created)
    ro = {"bind": str(checkout), "mode": "ro"}
    assert with_cell == {
        str(cell): {"bind": str(cell), "mode": "rw"},
        str(checkout): ro,
        str(variants): {"bind": str(variants), "mode": "ro"},
    }  # a missing read-only path is not mounted (the engine would create it, as root)
    assert cell.is_dir()  # made before the mount, by us
    assert without == {str(checkout): ro, str(variants): {"bind": str(variants), "mode": "ro"}}
    assert chowned == []  # not invoked as root: nothing changes hands


def test_a_non_root_invoker_runs_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    as_invoker(monkeypatch, 1234)
    fake = FakeDocker()
    DockerRunner(fake, "img").run(["true"])
    assert fake.containers.created[0]["user"] == f"{os.getuid()}:{os.getgid()}"


def test_root_runs_as_the_images_user_and_hands_over_what_it_must_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chowned: list[tuple[Path, int, int]]
) -> None:
    as_invoker(monkeypatch, 0)
    me = (os.getuid(), os.getgid())
    monkeypatch.setattr(D, "IMAGE_USER", (me[0] + 1, me[1] + 1))  # anything but the files' owner
    cache, elsewhere = tmp_path / "cache", tmp_path / "user-source"
    (cache / "variants" / "lib").mkdir(parents=True)
    (cache / "variants" / "lib" / "libMNN.so").write_text("")
    elsewhere.mkdir()
    (elsewhere / "a.cpp").write_text("")
    build = cache / "build" / "k"
    (build / "obj").mkdir(parents=True)
    fake = FakeDocker()
    runner = DockerRunner(fake, "img", read_only=(elsewhere, cache / "variants"), owned_trees=(cache,))
    runner.run(["ninja"], writable=[build])
    assert fake.containers.created[0]["user"] == f"{me[0] + 1}:{me[1] + 1}"
    got = {p for p, u, g in chowned if (u, g) == (me[0] + 1, me[1] + 1)}
    assert got == {
        build,
        build / "obj",
        cache / "variants",
        cache / "variants" / "lib",
        cache / "variants" / "lib" / "libMNN.so",
    }
    assert len(chowned) == len(got)  # each once, and a read-only tree outside the cache is left alone


def test_handing_over_skips_entries_already_owned(tmp_path: Path, chowned: list[tuple[Path, int, int]]) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("")
    assert D.hand_over([tmp_path / "d"], os.getuid(), os.getgid()) == 0
    assert chowned == []
    assert D.hand_over([tmp_path / "d"], os.getuid() + 1, os.getgid()) == 2
    assert {p for p, _, _ in chowned} == {tmp_path / "d", tmp_path / "d" / "f"}


def test_a_private_image_directory_is_covered_by_a_skeleton_of_mount_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chowned: list[tuple[Path, int, int]]
) -> None:
    as_invoker(monkeypatch, 0)
    private = tmp_path / "root"
    monkeypatch.setattr(D, "PRIVATE_IN_IMAGE", (private,))
    variants, build = private / ".cache" / "m" / "variants", private / ".cache" / "m" / "build" / "k"
    variants.mkdir(parents=True)
    (private / "secret").write_text("root's own")
    fake = FakeDocker()
    runner = DockerRunner(fake, "img", read_only=(variants,))
    runner.run(["ninja"], writable=[build])
    vols = fake.containers.created[0]["volumes"]
    # The volumes map host paths to {container path, mode}: the skeleton is mounted at the private directory,
    # which itself (root's own files) stays out of the container.
    assert str(private) not in vols
    (skeleton_host,) = [host for host, v in vols.items() if v["bind"] == str(private)]
    assert vols[skeleton_host]["mode"] == "ro"
    skeleton = Path(skeleton_host)
    found = sorted(str(p.relative_to(skeleton)) for p in skeleton.rglob("*"))
    assert found == [".cache", ".cache/m", ".cache/m/build", ".cache/m/build/k", ".cache/m/variants"]
    assert all(p.is_dir() and p.stat().st_mode & 0o777 == 0o755 for p in [skeleton, *skeleton.rglob("*")])
    assert vols[str(variants)]["mode"] == "ro" and vols[str(build)]["mode"] == "rw"
    del runner  # the skeleton goes with its runner
    assert not skeleton.exists()


def test_a_planted_fault_runs_as_root_with_only_what_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    as_invoker(monkeypatch, 1234)
    fake = FakeDocker()
    DockerRunner(fake, "img").run(["sh"], env={D.AS_ROOT: "1", "A": "b"}, writable=[tmp_path / "cell"])
    created = fake.containers.created[0]
    assert created["user"] == "0:0"
    assert created["cap_add"] == ["SYS_PTRACE", "DAC_OVERRIDE"] and created["cap_drop"] == ["ALL"]
    assert created["environment"] == {"A": "b", "HOME": "/tmp"}


def test_the_whole_environment_comes_from_the_engine() -> None:
    container = FakeContainer(env=["PATH=/usr/bin", "LANG=C.UTF-8", "A=b=c"])
    res = DockerRunner(FakeDocker(container), "img").run(["true"], env={"A": "b=c"})
    assert res.env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "A": "b=c"}


def test_an_oom_kill_is_reported_as_the_memory_limit(tmp_path: Path) -> None:
    container = FakeContainer(code=137, oom=True)
    res = DockerRunner(FakeDocker(container), "img", mem_limit=6 * GIB).run(["driver"])
    assert res.killed_by == "the container's memory limit (6 GiB)"
    assert res.signal_name == "SIGKILL"


def test_a_sigkill_without_oom_stays_a_signal() -> None:
    res = DockerRunner(FakeDocker(FakeContainer(code=137, oom=False)), "img").run(["driver"])
    assert res.killed_by is None


@pytest.mark.parametrize(
    "line",
    [
        "sh: 0: Cannot fork",
        "bash: fork: retry: Resource temporarily unavailable",
        "ninja: fatal: posix_spawn: Resource temporarily unavailable",
        "  what():  Resource temporarily unavailable",
        "RuntimeError: can't start new thread",
    ],
)
def test_fork_failing_at_the_pid_limit_is_reported(tmp_path: Path, line: str) -> None:
    container = FakeContainer(code=2, err=f"building\n{line}\n".encode())
    res = DockerRunner(FakeDocker(container), "img", pids_limit=64).run(
        ["ninja"], stdout_path=tmp_path / "o", stderr_path=tmp_path / "e"
    )
    assert res.killed_by == f"the container's pid limit (64 tasks; fork failed: {line.strip()!r})"


def test_fork_messages_in_a_run_that_succeeded_are_not_a_limit() -> None:
    res = DockerRunner(FakeDocker(FakeContainer(code=0, out=b"sh: 0: Cannot fork\n")), "img").run(["sh"])
    assert res.killed_by is None
    res = DockerRunner(FakeDocker(FakeContainer(code=1, out=b"Resource temporarily unavailable\n")), "img").run(["x"])
    assert res.killed_by is None  # EAGAIN alone (a non-blocking read) is not fork failing


def test_the_judge_says_a_limit_killed_the_run_not_that_it_crashed(tmp_path: Path) -> None:
    container = FakeContainer(code=137, oom=True)
    completed = DockerRunner(FakeDocker(container), "img", mem_limit=8 * GIB).run(["driver"])
    run = CellRun(Cell("3.3.0", "cpu", "-"), tmp_path, completed, RunRecord(), None, ["driver"], gdb=False)
    v = judge(run, None, steps=3, checks={}, baseline=None)
    assert v.verdict == J.FAIL
    assert v.reason.startswith("killed by the container's memory limit (8 GiB) at stage None")


# -- leftovers of ended sessions ------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def leftover(pid: int, started: str | None) -> FakeContainer:
    labels = {"mnnrepro": "1", "mnnrepro.pid": str(pid), "mnnrepro.host": socket.gethostname()}
    if started is not None:
        labels["mnnrepro.started"] = started
    return FakeContainer(labels=labels)


def test_leftovers_of_ended_sessions_are_removed_and_counted() -> None:
    me = os.getpid()
    mine = leftover(me, D._start_ticks(me))
    gone = leftover(dead_pid(), "123")
    reused = leftover(me, "1")  # our pid, but another process's start time: an earlier session's
    alive = leftover(os.getppid(), None)  # no start time recorded: alive by pid
    fake = FakeDocker()
    fake.containers.existing = [mine, gone, reused, alive]
    said: list[str] = []
    assert remove_leftovers(fake, say=said.append) == 2
    assert [c.removed for c in (mine, gone, reused, alive)] == [False, True, True, False]
    assert said == ["removed 2 leftover container(s) of ended mnnrepro sessions"]
    assert fake.containers.filters == [{"label": ["mnnrepro=1", f"mnnrepro.host={socket.gethostname()}"]}]


def test_kept_containers_are_only_counted_with_keep_containers() -> None:
    gone = leftover(dead_pid(), "123")
    fake = FakeDocker()
    fake.containers.existing = [gone]
    said: list[str] = []
    assert remove_leftovers(fake, keep=True, say=said.append) == 1
    assert not gone.removed
    assert said and said[0].startswith("1 container(s) of ended mnnrepro sessions kept")


def test_make_runner_removes_leftovers_and_mounts_the_cache_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnnrepro import fixtures, image, prepare
    from mnnrepro.settings import Settings
    from mnnrepro.source import SourceTree

    fake = FakeDocker()
    fake.containers.existing = [leftover(dead_pid(), "123")]
    monkeypatch.setattr(image, "connect", lambda: fake)
    monkeypatch.setattr(image, "ensure_image", lambda client, **kw: "mnnrepro/toolchain:t")
    settings = Settings(cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", runner="docker")
    tree = SourceTree(tmp_path / "cache" / "src" / "3.3.0", "3.3.0", None, "cache")
    said: list[str] = []
    runner = prepare.make_runner(settings, tree, said.append)
    assert isinstance(runner, DockerRunner)
    assert fake.containers.existing[0].removed
    assert "removed 1 leftover container(s) of ended mnnrepro sessions" in said
    assert runner.read_write == ()
    cache = tmp_path / "cache"
    assert set(runner.read_only) == {fixtures.ROOT, tree.path, tmp_path / "results", cache / "variants", cache / "icd"}
    assert runner.owned_trees == (cache,)


@dataclass
class SlowContainer(FakeContainer):
    """Outlives its time limit (the engine's wait times out) until killed; or, with `interrupt`, the wait is
    interrupted (Ctrl-C)."""

    interrupt: bool = False
    killed: bool = False

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        if self.killed:
            return {"StatusCode": 137}
        if self.interrupt:
            raise KeyboardInterrupt
        import requests

        raise requests.exceptions.ReadTimeout

    def kill(self) -> None:
        self.killed = True


def test_a_container_past_its_time_limit_is_killed_and_removed(tmp_path: Path) -> None:
    container = SlowContainer(out=b"partial\n")
    res = DockerRunner(FakeDocker(container), "img").run(["driver"], timeout_s=1, stdout_path=tmp_path / "out.txt")
    assert res.timed_out and res.returncode == 137 and container.killed and container.removed
    assert (tmp_path / "out.txt").read_bytes() == b"partial\n"


@pytest.mark.parametrize("keep", [False, True])
def test_an_interrupted_run_kills_its_container_and_keeps_it_only_when_asked(keep: bool) -> None:
    container = SlowContainer(interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        DockerRunner(FakeDocker(container), "img", keep_on_failure=keep).run(["driver"], timeout_s=1)
    assert container.killed and container.removed is not keep
