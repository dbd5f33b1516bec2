"""progress: throttled status lines, GitHub groups, heartbeats; streaming runners; their use in build, image, cells."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import build, image, progress, swiftshader
from mnnrepro.build import PLUGINS, Builder, CoreOptions
from mnnrepro.cells import Cell, last_stage, run_cell
from mnnrepro.errors import BuildError
from mnnrepro.progress import Progress, elapsed_text, heartbeat
from mnnrepro.runner import Completed, HostRunner, OnLine
from mnnrepro.source import SourceTree
from mnnrepro.workloads.train.workload import Training

MakeTree = Callable[[Path], Path]


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Said:
    lines: list[str] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture(autouse=True)
def _not_in_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


def ninja(i: int, n: int) -> str:
    return f"[{i}/{n}] Building CXX object source/core/File{i}.cpp.o"


# -- Progress --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (125, "2m05s"), (3599, "59m59s"), (3720, "1h02m")]
)
def test_elapsed_text(seconds: float, text: str) -> None:
    assert elapsed_text(seconds) == text


def test_ninja_counts_are_reported_at_most_every_interval() -> None:
    clock, said = FakeClock(), Said()
    with Progress("3.3.0 core build", say=said, clock=clock) as p:
        for i in range(1, 457):
            clock.now += 0.5  # 228 s of compiling
            p.feed(ninja(i, 456))
    statuses, final = said.lines[:-1], said.lines[-1]
    assert len(statuses) == 22  # one per 10 s, never one per compile line
    assert statuses[0] == "  3.3.0 core build: [20/456] 4% 10s elapsed"
    assert statuses[11] == "  3.3.0 core build: [240/456] 52% 2m00s elapsed"
    assert final == "  3.3.0 core build: done in 3m48s ([456/456] 100%)"
    assert not any("Building CXX" in line for line in said.lines)


def test_a_quick_stage_says_only_its_final_line() -> None:
    clock, said = FakeClock(), Said()
    with Progress("driver build", say=said, clock=clock) as p:
        p.feed(ninja(1, 2))
        clock.now += 3
        p.feed(ninja(2, 2))
    assert said.lines == ["  driver build: done in 3s ([2/2] 100%)"]


def test_lines_without_a_counter_show_the_latest_one() -> None:
    clock, said = FakeClock(), Said()
    with Progress("cmake configure", say=said, clock=clock) as p:
        p.feed("-- The CXX compiler identification is GNU 12.2.0\n\n")
        clock.now += 11
        p.feed("-- Detecting CXX compiler ABI info " + "x" * 80)
        p.outcome = "failed (exit 1)"
    assert said.lines[0].startswith("  cmake configure: 11s elapsed, last: -- Detecting CXX compiler ABI info xx")
    assert said.lines[0].endswith("...") and len(said.lines[0]) < 120
    assert said.lines[1] == "  cmake configure: failed (exit 1) in 11s"


def test_docker_build_steps_show_the_step_being_run() -> None:
    clock, said = FakeClock(), Said()
    with Progress("image build", say=said, clock=clock) as p:
        p.feed("Step 1/9 : ARG BASE_IMAGE\n")
        p.feed("Step 2/9 : FROM debian\n ---> 1234\n")
        p.feed("Step 3/9 : RUN apt-get update && apt-get install -y cmake ninja-build\n")
        clock.now += 130
        p.feed("Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]\n")  # apt output within a step
    assert said.lines == [
        "  image build: step 3/9 2m10s elapsed: RUN apt-get update && apt-get install -y cmake ninja-build",
        "  image build: done in 2m10s (step 3/9)",
    ]


def test_the_timer_can_be_ticked_without_output() -> None:
    clock, said = FakeClock(), Said()
    with Progress("core build", say=said, clock=clock) as p:
        p.feed(ninja(7, 10))
        clock.now += 9
        p.tick()
        assert said.lines == []
        clock.now += 1
        p.tick()
        assert said.lines == ["  core build: [7/10] 70% 10s elapsed"]


def test_an_exception_ends_the_stage_as_interrupted() -> None:
    said = Said()
    with pytest.raises(KeyboardInterrupt), Progress("core build", say=said, clock=FakeClock()):
        raise KeyboardInterrupt
    assert said.lines == ["  core build: interrupted in 0s"]


def test_github_actions_gets_collapsible_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    clock, said = FakeClock(), Said()
    with Progress("3.3.0 core build", say=said, clock=clock) as p:
        clock.now += 12
        p.feed(ninja(1, 2))
    assert said.lines == [
        "::group::3.3.0 core build",
        "  3.3.0 core build: [1/2] 50% 12s elapsed",
        "::endgroup::",
        "  3.3.0 core build: done in 12s ([1/2] 50%)",  # outside the group: visible while it is collapsed
    ]


@pytest.mark.parametrize("value", [None, "false", "1"])
def test_no_group_markers_outside_actions(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is not None:
        monkeypatch.setenv("GITHUB_ACTIONS", value)
    clock, said = FakeClock(), Said()
    with Progress("core build", say=said, clock=clock) as p:
        clock.now += 12
        p.feed(ninja(1, 2))
    assert len(said.lines) == 2
    assert not any("::" in line for line in said.lines)


def test_heartbeat_beats_while_the_block_runs_and_stops_after() -> None:
    said = Said()
    answers: list[str | None] = ["stage load_data", None]

    def detail() -> str | None:
        if not answers:
            raise RuntimeError("events.jsonl unreadable")
        return answers.pop(0)

    with heartbeat("3.3.0/cpu/-", say=said, detail=detail, interval_s=0.05):
        deadline = time.monotonic() + 5
        while len(said.lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    count = len(said.lines)
    time.sleep(0.2)
    assert len(said.lines) == count >= 3  # nothing after the block
    assert said.lines[0] == "  3.3.0/cpu/-: 0s elapsed, stage load_data"
    assert said.lines[1] == "  3.3.0/cpu/-: 0s elapsed"  # no stage yet
    assert said.lines[2] == "  3.3.0/cpu/-: 0s elapsed"  # a failing detail costs the detail only


def test_heartbeat_with_a_fake_clock_says_the_elapsed_time() -> None:
    clock, said = FakeClock(), Said()
    with heartbeat("cell", say=said, interval_s=0.02, clock=clock):
        clock.now += 95
        deadline = time.monotonic() + 5
        while not said.lines and time.monotonic() < deadline:
            time.sleep(0.01)
    assert said.lines[0] == "  cell: 1m35s elapsed"


# -- the driver's last stage -----------------------------------------------------------------------


def test_last_stage_reads_the_latest_stage_event(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    assert last_stage(events) is None  # not written yet
    rows = [
        {"v": 1, "event": "stage", "t": 0.1, "name": "load_data"},
        *[{"v": 1, "event": "step", "t": 1.0 + i, "step": i, "loss": 2.3} for i in range(200)],
        {"v": 1, "event": "stage", "t": 300.0, "name": "sgd_step", "step": 11},
        {"v": 1, "event": "step", "t": 301.0, "step": 11, "loss": 0.5},
        {"v": 1, "event": "note", "t": 301.5, "name": "not a stage"},  # other events may carry a name too
    ]
    events.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"v": 1, "event": "sta')  # half written
    assert last_stage(events) == "stage sgd_step, step 11"
    events.write_text(json.dumps({"v": 1, "event": "stage", "t": 0.1, "name": "probe_device"}) + "\n")
    assert last_stage(events) == "stage probe_device"


# -- HostRunner streaming --------------------------------------------------------------------------


def test_host_runner_streams_lines_and_keeps_the_log_complete(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    got: list[str] = []
    script = 'for i in 1 2 3; do echo "[$i/3] x"; done; echo "CMake Error: on stderr" >&2'
    res = HostRunner().run(["sh", "-c", script], stdout_path=log, on_line=got.append, timeout_s=10)
    assert res.returncode == 0 and not res.timed_out
    assert got == ["[1/3] x", "[2/3] x", "[3/3] x", "CMake Error: on stderr"]
    assert log.read_text() == "[1/3] x\n[2/3] x\n[3/3] x\nCMake Error: on stderr\n"  # stderr kept, as docker does
    assert (res.stdout_path, res.output) == (log, "")


def test_host_runner_lines_arrive_while_the_command_runs(tmp_path: Path) -> None:
    arrived: list[tuple[str, float]] = []
    start = time.monotonic()
    res = HostRunner().run(
        ["sh", "-c", 'echo "[1/2] a"; sleep 1; echo "[2/2] b"'],
        stdout_path=tmp_path / "log",
        on_line=lambda line: arrived.append((line, time.monotonic() - start)),
    )
    assert [line for line, _ in arrived] == ["[1/2] a", "[2/2] b"]
    assert arrived[0][1] < res.duration_s - 0.5  # live, not read back at the end


def test_host_runner_streams_with_separate_stderr_and_with_capture(tmp_path: Path) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    got: list[str] = []
    script = "echo to-out; echo to-err >&2; exit 4"
    res = HostRunner().run(["sh", "-c", script], stdout_path=out, stderr_path=err, on_line=got.append)
    assert (res.returncode, got, out.read_text(), err.read_text()) == (4, ["to-out"], "to-out\n", "to-err\n")
    got.clear()
    res = HostRunner().run(["sh", "-c", script], on_line=got.append)
    assert sorted(got) == ["to-err", "to-out"]
    assert sorted(res.output.splitlines()) == ["to-err", "to-out"]


def test_a_failing_line_callback_costs_the_display_not_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    calls: list[str] = []

    def broken(line: str) -> None:
        calls.append(line)
        raise ValueError("display gone")

    res = HostRunner().run(["sh", "-c", "seq 1 50"], stdout_path=log, on_line=broken, timeout_s=10)
    assert res.returncode == 0
    assert calls == ["1"]
    assert log.read_text().split() == [str(i) for i in range(1, 51)]


# -- DockerRunner streaming (fake engine) ----------------------------------------------------------


class FakeContainer:
    def __init__(self, chunks: list[bytes], hang: bool = False) -> None:
        self.chunks = chunks
        self.hang = hang
        self.killed = False
        self.removed = False
        self.stopped = threading.Event()

    def start(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        import requests

        if self.hang and not self.killed:
            raise requests.exceptions.ReadTimeout("read timed out")
        self.stopped.set()
        return {"StatusCode": 137 if self.killed else 0}

    def kill(self) -> None:
        self.killed = True

    def logs(self, stdout: bool = True, stderr: bool = True, stream: bool = False, follow: bool = False) -> Any:
        if stream:
            assert follow and stdout and stderr
            return self._stream()
        return b"".join(self.chunks) if stdout else b""

    def _stream(self) -> Iterator[bytes]:
        yield from self.chunks
        self.stopped.wait(5)  # follow=True: the stream ends when the container does

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeContainers:
    def __init__(self, container: FakeContainer) -> None:
        self.container = container

    def create(self, *args: Any, **kwargs: Any) -> FakeContainer:
        return self.container


class FakeDocker:
    def __init__(self, container: FakeContainer) -> None:
        self.containers = FakeContainers(container)


@pytest.mark.parametrize("hang", [False, True], ids=["exits", "hangs"])
def test_docker_runner_streams_lines_and_keeps_its_semantics(tmp_path: Path, hang: bool) -> None:
    pytest.importorskip("docker")
    from mnnrepro.docker_runner import DockerRunner

    container = FakeContainer([b"[1/2] a\n[2", b"/2] b\r\n", b"no newline"], hang=hang)
    log = tmp_path / "log"
    got: list[str] = []
    res = DockerRunner(FakeDocker(container), "img").run(["ninja"], stdout_path=log, on_line=got.append, timeout_s=1)
    assert got == ["[1/2] a", "[2/2] b", "no newline"]
    assert log.read_bytes() == b"[1/2] a\n[2/2] b\r\nno newline"  # written from the full logs, as before
    assert (res.timed_out, container.killed, res.returncode) == ((True, True, 137) if hang else (False, False, 0))
    assert container.removed


# -- Builder, image and cells show progress --------------------------------------------------------


@dataclass
class StreamingToolchain:
    """cmake and ninja that stream their lines (as HostRunner and DockerRunner do), 4 s apart on a fake clock."""

    clock: FakeClock
    name: str = "fake"
    fail: str = ""

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
        **kwargs: Any,
    ) -> Completed:
        assert stdout_path is not None and on_line is not None
        args = list(argv)
        if args[0] == "cmake":
            lines = ["-- The C compiler identification is GNU 12.2.0", "-- Configuring done", "-- Generating done"]
            out = Path(args[args.index("-B") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "build.ninja").write_text("")
        else:
            lines = [ninja(i, 12) for i in range(1, 13)]
            for rel in [*build.CORE_LIBS, *(p[1] for p in PLUGINS.values()), *build.DRIVER_EXES]:
                (Path(args[2]) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(args[2]) / rel).write_bytes(b"built")
        with open(stdout_path, "w") as log:
            for line in lines:
                self.clock.now += 4
                log.write(line + "\n")
                on_line(line)
        return Completed(tuple(args), 1 if args[0] == self.fail else 0, 0.0)


@pytest.fixture
def tree(tmp_path: Path, make_mnn_tree: MakeTree) -> SourceTree:
    return SourceTree(make_mnn_tree(tmp_path / "mnn"), "3.3.0", None, "explicit")


def test_a_core_build_shows_its_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: SourceTree) -> None:
    monkeypatch.setattr(build, "toolchain_fingerprint", lambda runner: {"c++": "fake"})
    clock, said = FakeClock(), Said()
    monkeypatch.setattr(progress, "monotonic", clock)
    core = Builder(tmp_path / "cache", StreamingToolchain(clock), say=said).core(tree, CoreOptions())
    assert said.lines[1:] == [
        "  3.3.0 cmake configure: 12s elapsed, last: -- Generating done",
        "  3.3.0 cmake configure: done in 12s",
        "  3.3.0 core build: [3/12] 25% 12s elapsed",
        "  3.3.0 core build: [6/12] 50% 24s elapsed",
        "  3.3.0 core build: [9/12] 75% 36s elapsed",
        "  3.3.0 core build: [12/12] 100% 48s elapsed",
        "  3.3.0 core build: done in 48s ([12/12] 100%)",
    ]
    assert said.lines[0].startswith("building MNN core 3.3.0")
    assert (core.build_dir / "logs" / "core.log").read_text().count("Building CXX object") == 12


def test_a_failed_build_says_so_before_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: SourceTree
) -> None:
    monkeypatch.setattr(build, "toolchain_fingerprint", lambda runner: {"c++": "fake"})
    clock, said = FakeClock(), Said()
    monkeypatch.setattr(progress, "monotonic", clock)
    with pytest.raises(BuildError, match=r"3\.3\.0 core build failed"):
        Builder(tmp_path / "cache", StreamingToolchain(clock, fail="ninja"), say=said).core(tree, CoreOptions())
    assert said.lines[-1] == "  3.3.0 core build: failed (exit 1) in 48s ([12/12] 100%)"


class FakeApi:
    def __init__(self, images: set[str], clock: FakeClock) -> None:
        self.images = images
        self.clock = clock

    def build(self, *, tag: str, **kwargs: Any) -> Iterator[dict[str, str]]:
        for i in range(1, 5):
            self.clock.now += 6
            yield {"stream": f"Step {i}/4 : RUN step-{i}\n"}
            yield {"stream": f" ---> Running in {i:012x}\napt output {i}\n"}
        self.images.add(tag)


class FakeImageClient:
    def __init__(self, clock: FakeClock) -> None:
        self.present = {"debian:bookworm-slim"}
        self.api = FakeApi(self.present, clock)
        self.images = self

    def get(self, name: str) -> Any:
        import docker

        if name not in self.present:
            raise docker.errors.ImageNotFound(name)
        return type("Img", (), {"id": "sha256:" + name})()


def test_an_image_build_shows_its_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("docker")
    fake_ss = tmp_path / "ss"
    fake_ss.mkdir()
    (fake_ss / swiftshader.LIBRARY).write_bytes(b"so")
    monkeypatch.setattr(swiftshader, "ensure", lambda cache_dir: fake_ss / "manifest.json")
    clock, said = FakeClock(), Said()
    monkeypatch.setattr(progress, "monotonic", clock)
    tag = image.ensure_image(FakeImageClient(clock), base="debian:bookworm-slim", cache_dir=tmp_path, say=said)
    assert said.lines[0].startswith(f"building image {tag}")
    assert said.lines[1:] == [
        "  image build: step 2/4 12s elapsed: RUN step-2",
        "  image build: step 4/4 24s elapsed: RUN step-4",
        "  image build: done in 24s (step 4/4)",
    ]
    log = (tmp_path / "logs" / f"image-{tag.split(':')[1]}.log").read_text()
    assert log.count("apt output") == 4  # the log keeps every line


def test_a_long_cell_has_a_heartbeat_with_the_driver_stage(tmp_path: Path) -> None:
    driver = tmp_path / "driver"
    driver.write_text(
        """#!/bin/sh
out=""
for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; prev="$a"; done
echo '{"v": 1, "event": "stage", "t": 0.1, "name": "forward", "step": 1}' >> "$out/events.jsonl"
sleep 1
"""
    )
    driver.chmod(0o755)
    said = Said()
    cell = Cell("3.3.0", "cpu", "-")
    workload = Training(steps=3, batch_size=8, seed=1, precision="high", test_limit=10)
    run_cell(
        cell,
        driver=driver,
        plugin=None,
        icd=None,
        workload=workload,
        timeout_s=30,
        runner=HostRunner(base_env=dict(os.environ)),
        result_dir=tmp_path / "cell",
        use_gdb=False,
        say=said,
        heartbeat_s=0.3,
    )
    assert said.lines, "no heartbeat during a 1 s run beating every 0.3 s"
    assert re.fullmatch(r"  3\.3\.0/cpu/-: \ds elapsed, stage forward, step 1", said.lines[-1]), said.lines
