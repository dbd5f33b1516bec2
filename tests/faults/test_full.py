"""The fault battery's full tier: real MNN 3.3.0 runs (`run vulkan --ref 3.3.0 --icd lavapipe --steps 3`) through
the builds the Docker runner already cached, on both runners, under planted faults and real signals, and a real
`nox -s vulkan` signalled at random moments. Nothing here builds MNN: a case that sees "building MNN core" stops
its run and fails; without a cached build the tier is skipped, saying so.

The host runner has no build of its own in the cache (a build's key includes its runner): its cases run through
tests/faults/fakerun.py in "cached" mode, which hands the session the Docker runner's cached driver and plugins
(same Debian toolchain) and leaves everything else real: the preflight, HostRunner, gdb, lavapipe, the faults.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .battery import (
    BUFFER,
    CLEAN,
    CPU,
    IMAGE,
    INTERRUPTED,
    ROOT,
    STOP_LIMIT_S,
    Markers,
    Ran,
    Row,
    Send,
    base_env,
    cli_row,
    describe_container,
    docker_client,
    fake_mnn_tree,
    fakerun,
    known_bug,
    leftover_processes,
    mnnrepro,
    now_ticks,
    previous_results,
    reap_orphans,
    run_containers,
    run_signalled,
    run_tracked,
    seeded,
    session_row,
    signal_row,
)
from .conftest import Finish

pytestmark = [pytest.mark.faults, pytest.mark.full]
REF = "3.3.0"
RUNNERS = ("host", "docker")
LIMIT_S = 570.0
# What the battery never starts (the cache holds the builds); the native driver alone may be rebuilt.
BUILDING = r"building MNN core|building (vulkan-image|vulkan-buffer|opencl) plugin"


@dataclass(frozen=True)
class Cached:
    """The Docker runner's cached build of MNN 3.3.0: core, native driver, both Vulkan plugins."""

    client: Any
    image: str
    cache_dir: Path
    core_key: str
    variant_dir: Path
    build_dir: Path
    driver: Path
    plugins: dict[str, Path]

    def plan(self) -> dict[str, Any]:
        return {
            "mode": "cached",
            "cached": {
                "core_key": self.core_key,
                "variant_dir": str(self.variant_dir),
                "build_dir": str(self.build_dir),
                "driver": str(self.driver),
                "plugins": {k: str(v) for k, v in self.plugins.items()},
            },
        }

    def stamps(self) -> list[Path]:
        return [
            self.variant_dir / "lib" / ".complete.json",
            self.driver.parent / ".complete.json",
            *(p.parent / ".complete.json" for p in self.plugins.values()),
        ]


@pytest.fixture(scope="session")
def cached() -> Cached:
    from mnnrepro import fixtures, image, source
    from mnnrepro.build import Builder, CoreOptions, native_key
    from mnnrepro.docker_runner import DockerRunner
    from mnnrepro.errors import SourceError
    from mnnrepro.settings import load

    client = docker_client()
    if client is None:
        pytest.skip("no Docker engine answers: the full tier needs the Docker runner's cached build")
    settings = load({"runner": "docker"}, environ={})
    try:
        tree = source.resolve(
            REF, source=None, cache_dir=settings.cache_dir, git_url=settings.git_url, allow_clone=False
        )
    except SourceError as exc:
        pytest.skip(f"no MNN {REF} source in the cache: {exc.message}")
    base = settings.base_image
    if not image._has_image(client, base):
        base = image.BOOTSTRAP_IMAGE
    if not image._has_image(client, base):
        pytest.skip(f"no base image {settings.base_image}: the battery never pulls or builds images")
    tag = f"{image.IMAGE_REPO}:{image.image_key(client.images.get(base).id, image._host_ca(settings.host_ca))[:16]}"
    if not image._has_image(client, tag):
        pytest.skip(f"the toolchain image {tag} is not built: the battery never builds it")
    runner = DockerRunner(client, tag)
    builder = Builder(settings.cache_dir, runner, say=lambda _: None)
    info = fixtures.load_matrix().ref_info(REF)
    key = builder.core_key(tree, CoreOptions(compat_cxx_flags=info.compat_cxx_flags))
    variant_dir = settings.cache_dir / "variants" / key[:24]
    driver = variant_dir / f"driver-{native_key()[:16]}" / "mnist_driver"
    plugins = {v: variant_dir / "plugins" / v / "libMNN_Vulkan.so" for v in ("vulkan-image", "vulkan-buffer")}
    found = Cached(
        client, tag, settings.cache_dir, key, variant_dir, settings.cache_dir / "build" / key[:24], driver, plugins
    )
    missing = [str(p) for p in found.stamps() if not p.is_file()]
    if missing:
        pytest.skip(
            f"no cached Docker build of MNN {REF} (missing {', '.join(missing)}): the battery never builds MNN; "
            f"`nox -s vulkan -- --ref {REF} --icd lavapipe --steps 3` builds it once"
        )
    return found


@dataclass
class FullWorkspace:
    root: Path
    results: Path
    markers: Markers
    cached: Cached

    def session(
        self,
        runner: str,
        *args: str,
        env: dict[str, str] | None = None,
        send: Send | None = None,
        keep_containers: bool = False,
        session: str = "vulkan",
    ) -> Ran:
        common = ["run", session, "--ref", REF, "--icd", "lavapipe", "--steps", "3", "--results-dir", str(self.results)]
        if runner == "host":
            argv = fakerun(self.cached.plan(), self.root, *common, "--runner", "host", *args)
        else:
            argv = mnnrepro(*common, "--runner", "docker", *args)
        return run_tracked(
            argv,
            env=base_env(env),
            timeout_s=LIMIT_S,
            send=send,
            docker=self.cached.client,
            abort=BUILDING,
            keep_containers=keep_containers,
        )


@pytest.fixture
def fws(tmp_path: Path, cached: Cached) -> Iterator[FullWorkspace]:
    markers = Markers()
    markers.plant(cached.cache_dir)
    for stamp in cached.stamps():
        markers.keep(stamp)
    markers.keep(cached.cache_dir / "src" / REF / ".mnnrepro-source.json")
    results = tmp_path / "results"
    markers.keep(previous_results(results))
    yield FullWorkspace(tmp_path, results, markers, cached)
    markers.remove_planted()


def container_labels_ok(row: Row, ran: Ran, runner: str) -> None:
    """Every container the run made carries the suite's labels (or the run made none it could be seen with)."""
    lacking = [c for c in ran.containers_seen if "labels complete" not in c]
    if lacking:
        row.unclear = "; ".join(filter(None, [row.unclear, f"containers without the labels: {lacking}"]))
    if runner == "docker" and not ran.containers_seen:
        row.notes = "; ".join(filter(None, [row.notes, "no container seen (sampled every 0.5 s)"]))


# -- planted faults through real runs ------------------------------------------------------------------------

BOGUS = {CPU: "PASS", f"{REF}/vulkan-image/bogus": "NOT-EXERCISED", f"{REF}/vulkan-buffer/bogus": "NOT-EXERCISED"}
FAULTS = [
    ("control: no fault", (), CLEAN, {0}, (), True),
    ("--icd bogus", ("--icd", "bogus"), BOGUS, {1}, tuple(c for c in BOGUS if c != CPU), False),
    (
        "--fault hide-libvulkan",
        ("--fault", "hide-libvulkan"),
        {CPU: "PASS", IMAGE: "NOT-EXERCISED", BUFFER: "NOT-EXERCISED"},
        {1},
        (IMAGE, BUFFER),
        False,
    ),
    (
        "--fault plant-crash",
        ("--fault", "plant-crash"),
        {CPU: "PASS", IMAGE: "UNEXPECTED-CRASH", BUFFER: "UNEXPECTED-CRASH"},
        {1},
        (IMAGE, BUFFER),
        False,
    ),
    (
        "--fault plant-hang --timeout 20",
        ("--fault", "plant-hang", "--timeout", "20"),
        {CPU: "PASS", IMAGE: "REPRODUCED", BUFFER: "HANG"},  # image mode crashes (#3129) before forward[1]
        {1},
        (BUFFER,),
        False,
    ),
]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize(
    ("fault", "args", "expect", "exits", "faulted", "green"), FAULTS, ids=[f[0].split(":")[0] for f in FAULTS]
)
def test_a_planted_fault_in_a_real_run(
    fws: FullWorkspace,
    finish: Finish,
    runner: str,
    fault: str,
    args: tuple[str, ...],
    expect: dict[str, str],
    exits: set[int],
    faulted: tuple[str, ...],
    green: bool,
) -> None:
    if "hide-libvulkan" in args and runner == "host" and os.geteuid() != 0:
        pytest.skip("hide-libvulkan on the host runner needs root")
    ran = fws.session(runner, *args)
    row, _ = session_row(
        fault, runner, ran, fws.results, fws.markers, exits=exits, expect=expect, faulted=faulted, green=green
    )
    if "plant-hang" in args and "forward[step 1]" not in row.message:
        # HANG all the same, but the time limit came before the planted hang: a slow machine, not the plant.
        row.notes = "; ".join(filter(None, [row.notes, "killed before the planted hang at forward[1]"]))
    container_labels_ok(row, ran, runner)
    finish(row)


@pytest.mark.parametrize("runner", RUNNERS)
def test_callers_loader_variables_do_not_reach_the_driver(fws: FullWorkspace, finish: Finish, runner: str) -> None:
    caller = {"VK_ICD_FILENAMES": "/caller/evil_icd.json", "VK_DRIVER_FILES": "/caller/evil_icd.json"}
    ran = fws.session(runner, env={**caller, "VK_LOADER_DEBUG": "all", "LD_LIBRARY_PATH": "/caller/lib"})
    row, found = session_row(
        "VK_ICD_FILENAMES etc. in the caller's shell",
        runner,
        ran,
        fws.results,
        fws.markers,
        exits={0},
        expect=CLEAN,
        green=True,
    )
    problems = []
    for cell_dir in sorted((found[0] / "cells").iterdir()) if found else []:
        meta = json.loads((cell_dir / "cell.json").read_text())
        env, own = meta.get("env") or {}, meta.get("cell_env") or {}
        if "PATH" not in env:
            problems.append(f"{cell_dir.name}: cell.json does not record the whole environment")
        for name, value in caller.items():
            if env.get(name) == value:
                problems.append(f"{cell_dir.name}: the caller's {name} reached the driver")
        if env.get("VK_ICD_FILENAMES") != own.get("VK_ICD_FILENAMES"):
            problems.append(f"{cell_dir.name}: VK_ICD_FILENAMES {env.get('VK_ICD_FILENAMES')} is not the cell's own")
        if meta.get("env_from_caller"):
            problems.append(f"{cell_dir.name}: env_from_caller {meta['env_from_caller']}")
    if found and not problems:
        row.message = "cell.json records the whole environment: the suite's ICD only, none of the caller's variables"
    if problems:
        row.unclear = "; ".join(filter(None, [row.unclear, *problems]))
        row.message = problems[0]
    container_labels_ok(row, ran, runner)
    finish(row)


# -- signals at random moments of real runs ------------------------------------------------------------------

SIGNALS = [(r, s, g) for r in RUNNERS for s, g in ((signal.SIGINT, True), (signal.SIGTERM, False)) for _ in range(2)]


@pytest.mark.parametrize(
    ("runner", "signum", "group"), SIGNALS, ids=[f"{r}-{s.name}-{i}" for i, (r, s, _) in enumerate(SIGNALS)]
)
def test_a_signal_at_a_random_moment_of_a_real_run(
    fws: FullWorkspace,
    finish: Finish,
    seed: int,
    request: pytest.FixtureRequest,
    runner: str,
    signum: signal.Signals,
    group: bool,
) -> None:
    rng = seeded(seed, request.node.nodeid)
    ran = run_signalled(lambda send: fws.session(runner, send=send), rng, signum, group, 0.5, 40.0)
    how = "Ctrl-C (SIGINT to the group)" if group else "SIGTERM (to the session)"
    row, known = signal_row(f"{how} at a random moment", runner, ran, fws.results, fws.markers, signum)
    container_labels_ok(row, ran, runner)
    finish(row, known_bug=known)


def test_a_killed_docker_session_leaves_a_container_the_next_one_removes(fws: FullWorkspace, finish: Finish) -> None:
    """SIGKILL cannot be handled: the container of the running cell outlives its session. The next session
    removes it (docker_runner.remove_leftovers: labelled, its session's pid gone)."""
    send = Send(signal.SIGKILL, 3.0, True, after=r"running 3\.3\.0/vulkan-buffer")
    killed = fws.session("docker", send=send, keep_containers=True)
    left = [x for x in killed.leftovers if x.startswith("container ")]
    procs = [x for x in killed.leftovers if not x.startswith("container ")]
    nxt = fws.session("docker", session="cpu")
    still = run_containers(fws.cached.client, killed.pids)
    row = Row("SIGKILL of a Docker session; then the next session", "docker")
    row.outcome = f"killed: {killed.returncode}, {len(left)} container(s) left; next session exit {nxt.returncode}"
    said = re.search(r"removed \d+ leftover container\(s\)[^\n]*", nxt.output)
    row.message = said.group(0) if said else message_of_next(nxt)
    row.notes = f"{killed.signal_sent}; left by the SIGKILL (expected): {', '.join(left) or 'none'}"
    unclear = []
    if not killed.signal_sent:
        unclear.append("the session ended before the SIGKILL")
    if not left:
        unclear.append("the SIGKILL left no container behind: nothing proved")
    elif not said:
        unclear.append("the next session did not say it removed the leftover container")
    if nxt.returncode != 0:
        unclear.append(f"the next session exited {nxt.returncode}")
    row.unclear = "; ".join(unclear)
    row.leftovers = procs + [f"container {describe_container(c)}" for c in still] + nxt.leftovers
    for c in still:
        with contextlib.suppress(Exception):
            c.remove(force=True)
    row.lost = fws.markers.lost()
    finish(row)


def message_of_next(ran: Ran) -> str:
    lines = [ln for ln in ran.stdout.splitlines() if ln.startswith("session ")]
    return lines[-1] if lines else f"exit {ran.returncode}"


def test_a_killed_docker_build_publishes_nothing_and_leaves_no_container(
    fws: FullWorkspace, finish: Finish, seed: int, request: pytest.FixtureRequest
) -> None:
    tree = fake_mnn_tree(fws.root / "fake-mnn", commit="", slow_s=8)
    cache = fws.root / "build-cache"
    fws.markers.plant(cache)

    def build() -> list[str]:
        args = ("build", "--ref", REF, "--variants", "cpu", "--source", str(tree), "--runner", "docker")
        return fakerun({"mode": "build"}, fws.root, *args, "--cache-dir", str(cache))

    delay = seeded(seed, request.node.nodeid).uniform(0.5, 5.0)
    send = Send(signal.SIGTERM, delay, False, after=r"building MNN core")
    client = fws.cached.client
    killed = run_tracked(build(), env=base_env(), timeout_s=LIMIT_S, send=send, docker=client)
    after_kill = sorted((cache / "variants").glob("*/lib/.complete.json"))
    again = run_tracked(build(), env=base_env(), timeout_s=LIMIT_S, docker=client)
    row = cli_row(
        "build killed (SIGTERM) mid-ninja in a container; then rebuilt", "docker", killed, fws.markers, exits={143}
    )
    row.outcome = f"exit {killed.returncode}; rerun exit {again.returncode}"
    row.notes = "; ".join(filter(None, [killed.signal_sent, f"containers seen: {', '.join(killed.containers_seen)}"]))
    if after_kill:
        row.lost.append(f"published after the kill: {[str(p) for p in after_kill]}")
    if again.returncode != 0 or not list((cache / "variants").glob("*/lib/.complete.json")):
        row.unclear = "; ".join(filter(None, [row.unclear, f"the rebuild failed: exit {again.returncode}"]))
    if not killed.signal_sent:
        row.unclear = "; ".join(filter(None, [row.unclear, "the build ended before the signal"]))
    container_labels_ok(row, killed, "docker")
    row.leftovers += again.leftovers
    finish(row)


# was: BUG_CREATED_CONTAINER (fixed: the container is created inside the try and removed by name)
def test_an_interrupt_as_the_engine_creates_a_container_leaves_none(fws: FullWorkspace, finish: Finish) -> None:
    """Found by the nox rows (a Ctrl-C at 2.45 s left `mnnrepro-<pid>-3 (created)`), made deterministic: the
    engine creates the container and the interrupt is raised as the create call returns, which is where
    interrupts.py's handler raises when a SIGINT arrives during the call."""
    import docker.models.containers

    from mnnrepro import interrupts
    from mnnrepro.docker_runner import DockerRunner

    cached = fws.cached
    runner = DockerRunner(cached.client, cached.image)
    real = docker.models.containers.ContainerCollection.create

    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)
        raise interrupts.Interrupted(signal.SIGINT)

    row = Row("Ctrl-C as the engine creates a container (in-process)", "docker")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(docker.models.containers.ContainerCollection, "create", create)
        try:
            runner.run(["true"], timeout_s=60)
            row.outcome = "returned (no interrupt)"
            row.unclear = "the planted interrupt did not reach DockerRunner.run"
        except KeyboardInterrupt as exc:
            row.outcome = f"{type(exc).__name__} raised to the caller"
    left = run_containers(cached.client, [os.getpid()])
    row.leftovers = [f"container {describe_container(c)}" for c in left]
    row.message = f"{len(left)} container(s) of this process left: {', '.join(c.name for c in left) or 'none'}"
    for c in left:
        with contextlib.suppress(Exception):
            c.remove(force=True)
    row.lost = fws.markers.lost()
    finish(row)


# -- the native driver against hostile inputs ----------------------------------------------------------------


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_real_driver_rejects_hostile_inputs(
    fws: FullWorkspace, finish: Finish, runner: str, tmp_path: Path
) -> None:
    from mnnrepro.docker_runner import DockerRunner
    from mnnrepro.runner import HostRunner, Runner

    from ..integration import test_driver_inputs as inputs

    cached = fws.cached
    since = now_ticks()
    run: Runner
    if runner == "host":
        run = HostRunner()
    else:
        run = DockerRunner(cached.client, cached.image, read_only=(ROOT, cached.cache_dir / "variants"))
    rejected, wrong = 0, []
    example = ""
    cases = [None, *inputs.CASES]
    for case in cases:
        root = tmp_path / "inputs" / (case.id if case else "control")
        data, init = inputs.write_inputs(root, case)
        out = root / "out"
        argv = inputs.driver_argv(cached.driver, data, init, out)
        if isinstance(run, DockerRunner):
            done = run.run(argv, timeout_s=120, writable=[root])
        else:
            done = run.run(argv, timeout_s=120)
        events = out / "events.jsonl"
        errors = (
            [e for e in map(json.loads, events.read_text().splitlines()) if e.get("event") == "error"]
            if events.is_file()
            else []
        )
        message = str(errors[0].get("message", "")) if errors else ""
        if case is None:
            if done.returncode != 0:
                wrong.append(f"control: exit {done.returncode} ({done.output[-200:]})")
            continue
        if done.returncode == 3 and len(errors) == 1 and re.search(case.message, message):
            rejected += 1
            example = example or f"{case.id}: {message}"
        else:
            wrong.append(f"{case.id}: exit {done.returncode}, error {message[:120]!r}")
    row = Row(f"native driver: {len(inputs.CASES)} hostile IDX/npy inputs", runner)
    row.outcome = f"exit 3 for {rejected}/{len(inputs.CASES)}; control exit 0" if not wrong else f"{len(wrong)} wrong"
    row.message = wrong[0] if wrong else example
    row.unclear = "; ".join(wrong)
    row.false_green = any(": exit 0," in w for w in wrong)
    left = leftover_processes(since, {})
    row.leftovers = [f"process {p.pid} {p.cmdline}" for p in left]
    mine = run_containers(cached.client, [os.getpid()])
    row.leftovers += [f"container {describe_container(c)}" for c in mine]
    for c in mine:
        with contextlib.suppress(Exception):
            c.remove(force=True)
    reap_orphans()
    row.lost = fws.markers.lost()
    finish(row)


# -- a real `nox -s vulkan`, signalled -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def nox_argv(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """nox as a user runs it: the repository's .venv/bin/nox, else this Python's nox, else one on PATH, else a
    fresh virtual environment with nox; its `vulkan` session's environment made once (not signalled)."""
    if (ROOT / ".venv" / "bin" / "nox").is_file():
        argv = [str(ROOT / ".venv" / "bin" / "nox")]
    elif importlib.util.find_spec("nox") is not None:
        argv = [sys.executable, "-m", "nox"]
    elif shutil.which("nox"):
        argv = [str(shutil.which("nox"))]
    else:
        venv = tmp_path_factory.mktemp("nox-venv")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "nox"], check=True, timeout=600)
        argv = [str(venv / "bin" / "nox")]
    argv += ["-f", str(ROOT / "noxfile.py")]
    warm = subprocess.run(
        [*argv, "-s", "vulkan", "--install-only"], cwd=ROOT, env=base_env(), capture_output=True, text=True, timeout=900
    )
    if warm.returncode != 0:
        pytest.skip(f"could not make nox's vulkan environment: {(warm.stdout + warm.stderr)[-500:]}")
    return argv


NOX_SIGNALS = [(signal.SIGINT, True)] * 10 + [(signal.SIGTERM, False)] * 10


@pytest.mark.parametrize(
    ("signum", "group"), NOX_SIGNALS, ids=[f"{s.name}-{i}" for i, (s, _) in enumerate(NOX_SIGNALS)]
)
def test_nox_vulkan_signalled_at_a_random_moment(
    fws: FullWorkspace,
    finish: Finish,
    nox_argv: list[str],
    seed: int,
    request: pytest.FixtureRequest,
    signum: signal.Signals,
    group: bool,
) -> None:
    posargs = ["--ref", REF, "--icd", "lavapipe", "--steps", "3", "--results-dir", str(fws.results)]
    argv = [*nox_argv, "-s", "vulkan", "-R", "--", *posargs]

    def run(send: Send) -> Ran:
        return run_tracked(argv, env=base_env(), timeout_s=LIMIT_S, send=send, docker=fws.cached.client, abort=BUILDING)

    ran = run_signalled(run, seeded(seed, request.node.nodeid), signum, group, 0.5, 40.0)
    how = "Ctrl-C (SIGINT to nox's group)" if group else "SIGTERM to nox alone"
    row, found = session_row(
        f"nox -s vulkan: {how}", "docker", ran, fws.results, fws.markers, exits=range(1, 256), green=True
    )
    problems = [p for p in row.unclear.split("; ") if p and not p.startswith("exit ")]
    known = ""
    if not ran.signal_sent:
        row.notes = "nox ended before the signal: nothing proved"
    else:
        if ran.stopped_after_s is not None and ran.stopped_after_s > STOP_LIMIT_S:
            problems.append(f"stopped {ran.stopped_after_s:.1f} s after the signal (limit {STOP_LIMIT_S:g} s)")
        if ran.returncode == 0:
            problems.append("nox exited 0 after the signal")
        if found and found[1].get("status") not in (INTERRUPTED, "complete"):
            problems.append(f"summary status {found[1].get('status')!r}")
        suite = re.search(r"session vulkan: INTERRUPTED[^\n]*|mnnrepro: interrupted[^\n]*", ran.output)
        nox_says = [ln for ln in ran.stderr.splitlines() if ln.startswith("nox >")]
        row.message = (suite.group(0) if suite else (nox_says[-1] if nox_says else row.message)) + (
            f" [nox exit {ran.returncode}]"
        )
    row.unclear = "; ".join(problems)
    stopped = f"; stopped {ran.stopped_after_s:.1f} s after it" if ran.stopped_after_s is not None else ""
    row.notes = "; ".join(filter(None, [f"{ran.signal_sent}{stopped}", row.notes]))
    container_labels_ok(row, ran, "docker")
    finish(row, known_bug=known or known_bug(row))
