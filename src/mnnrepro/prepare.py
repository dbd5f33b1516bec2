"""The one preparation step of every command (run, golden, build, bench, bisect).

``preflight_for`` first (every check that can fail before a build, for the runner that will be used), then
``prepare``: the source tree of a ref, the runner, the built core, driver and plugins, gdb as that runner sees
it, the resolved ICDs and the time limit of each backend; it knows no workload. Workloads (the MNIST session,
the golden, the bench, the bisect oracle, ops, the reducer) take a ``Prepared`` and never set any of it up
themselves; each reads its own settings (MNIST's: workloads.train.workload_of).
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from . import faults, fixtures, icd, image, preflight, source, swiftshader, variants
from .build import Builder, Core, CoreOptions
from .docker_runner import DockerRunner, remove_leftovers
from .errors import EnvironmentProblem
from .runner import HostRunner, Runner
from .settings import Settings

Say = Callable[[str], None]
DEFAULT_TIMEOUT_S = 600.0  # a backend without a [timeouts] entry in matrix.toml


def resolve_runner(settings: Settings, say: Say) -> str:
    """--runner docker|host, or for auto: docker when an engine answers within seconds, else host (said)."""
    if settings.runner != "auto":
        return settings.runner
    try:
        image.connect(timeout=5)
        return "docker"
    except EnvironmentProblem as exc:
        say(f"runner: host ({exc.message})")
        return "host"


def preflight_for(
    settings: Settings, names: tuple[str, ...], say: Say, *, build_only: bool = False
) -> tuple[Settings, list[preflight.Finding]]:
    """Every check that can fail before a build (issue: first contact), for the runner that will be used.
    ``build_only`` (mnnrepro build): what building needs, not what running needs (ICDs, OpenCL loader, gdb).
    Returns the settings with the runner resolved; raises EnvironmentProblem naming every problem at once."""
    kind = resolve_runner(settings, say)
    faults.check_can_plant(settings.faults, kind)
    vulkan = variants.takes_icds(names) and not build_only
    checked = replace(settings, gdb=False) if build_only else settings
    findings = preflight.run(
        checked, icds=settings.icds if vulkan else (), opencl="opencl" in names and not build_only, runner=kind, say=say
    )
    try:
        preflight.require(findings)
    except EnvironmentProblem as exc:
        if settings.runner == "auto" and kind == "host":
            exc.message = "no Docker engine answers, and the host runner cannot run either: " + exc.message
            exc.hint = exc.hint + "; or start a Docker engine (dockerd) and use the Docker runner"
        raise
    if kind == "host" and vulkan and "swiftshader" in settings.icds:
        # Fetched now, not after minutes of building (the Docker runner's image build fetches it, also first).
        swiftshader.ensure(settings.cache_dir)
    return replace(settings, runner=kind), findings


def make_runner(settings: Settings, tree: source.SourceTree, say: Say) -> Runner:
    """--runner docker|host|auto. auto: docker when an engine answers, else the host (and say why)."""
    if settings.runner in ("docker", "auto"):
        try:
            client = image.connect()
        except EnvironmentProblem as exc:
            if settings.runner == "docker":
                raise
            missing = [t for t in ("c++", "cmake", "ninja") if shutil.which(t) is None]
            if missing:
                raise EnvironmentProblem(
                    f"no usable runner: {exc.message}; and the host lacks {', '.join(missing)}",
                    hint="start a Docker engine (dockerd), or apt-get install build-essential cmake ninja-build "
                    "ccache gdb mesa-vulkan-drivers libvulkan-dev",
                ) from exc
            say(f"runner: host ({exc.message})")
            return HostRunner()
        tag = image.ensure_image(
            client,
            base=settings.base_image,
            cache_dir=settings.cache_dir,
            host_ca=settings.host_ca,
            mirror=settings.debian_mirror or None,
            say=say,
        )
        say(f"runner: docker, image {tag}")
        remove_leftovers(client, keep=settings.keep_containers, say=say)
        # Read-only: what commands read. Each call names what it writes (a build dir, a cell's result dir).
        cache = settings.cache_dir
        return DockerRunner(
            client,
            tag,
            read_only=(fixtures.ROOT, tree.path, settings.results_dir, cache / "variants", cache / "icd"),
            owned_trees=(cache,),
            keep_on_failure=settings.keep_containers,
            home_dir=cache / "container-home",
        )
    return HostRunner()


def results_dir(settings: Settings, name: str) -> Path:
    """results/<UTC time>-<name>-<pid>, and results/latest pointing at it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = settings.results_dir / f"{stamp}-{name}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    latest = settings.results_dir / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(path.name)
    except OSError:
        pass
    return path


@dataclass
class Built:
    """What a workload needs of one ref, built: the source tree, the runner, the core, driver and plugins."""

    ref: str
    tree: source.SourceTree
    info: fixtures.RefInfo
    runner: Runner
    builder: Builder
    core: Core
    driver: Path
    plugins: dict[str, Path]
    build_s: float


def resolve_tree(ref: str, settings: Settings, matrix: fixtures.Matrix) -> source.SourceTree:
    """The source tree of one ref (a name of the matrix, a tag, or a commit already in the source cache): --source
    applies to the session's own ref only; the commit the matrix pins is the one wanted."""
    return source.resolve(
        ref,
        source=settings.source if ref == (settings.ref or matrix.default_ref) else None,
        cache_dir=settings.cache_dir,
        git_url=settings.git_url,
        allow_clone=settings.clone,
        pinned_commit=matrix.ref_info(ref).commit or None,
    )


def build_ref(ref: str, names: tuple[str, ...], settings: Settings, matrix: fixtures.Matrix, say: Say) -> Built:
    """Resolve the source of one ref, pick the runner, build (or find in the cache) the core, the driver and the
    plugins the variants need."""
    info = matrix.ref_info(ref)
    tree = resolve_tree(ref, settings, matrix)
    say(f"source: {tree.describe()}")
    runner = make_runner(settings, tree, say)
    if info.commit and tree.commit and not (info.commit.startswith(tree.commit) or tree.commit.startswith(info.commit)):
        say(f"WARNING: {ref} resolved to {tree.commit}, matrix.toml pins {info.commit}")
    if info.compat_reason:
        say(f"compatibility measure for {ref}: {info.compat_reason}")
    builder = Builder(settings.cache_dir, runner, jobs=settings.jobs or None, say=say)
    t0 = time.monotonic()
    core: Core = builder.core(tree, CoreOptions(compat_cxx_flags=info.compat_cxx_flags))
    driver = builder.driver(core)
    plugins = {v: builder.plugin(core, v) for v in names if variants.get(v).has_plugin}
    return Built(ref, tree, info, runner, builder, core, driver, plugins, time.monotonic() - t0)


# gdb as each runner (and image) sees it, probed once per process: a bisect prepares many commits. The value:
# the path of a gdb that runs Python, or None and why not.
_GDB_SEEN: dict[str, tuple[str | None, str]] = {}

# Each of preflight.GDB_CANDIDATES in turn, as the runner sees it (on the host or in the image): the first that
# runs Python is printed as "gdb-ok PATH", each other one as one "gdb-no ..." line.
_GDB_PROBE = (
    "for g in " + " ".join(preflight.GDB_CANDIDATES) + "; do "
    'p=$(command -v "$g") || { echo "gdb-no $g: not installed"; continue; }; '
    f'out=$("$p" -nx -batch -ex {shlex.quote(preflight.GDB_PROBE)} 2>&1 | tail -n 3); '
    'case "$out" in *mnnrepro-gdb-ok*) echo "gdb-ok $p"; exit 0;; esac; '
    'echo "gdb-no $p does not run Python ($(printf %s "$out" | tail -n 1 | cut -c1-120))"; done'
)


def usable_gdb(runner: Runner, say: Say) -> str | None:
    """gdb (or cuda-gdb) as the runner sees it, if it runs with Python (gdb_capture.py needs it); else None, said
    loudly: crashes are then still caught by signal and stage, but without a backtrace or signature."""
    key = f"{runner.name}:{getattr(runner, 'image_id', '')}"
    if key in _GDB_SEEN:
        return _GDB_SEEN[key][0]
    lines = [line.strip() for line in runner.run(["sh", "-c", _GDB_PROBE], timeout_s=60).output.splitlines()]
    found = next((line.split(" ", 1)[1] for line in lines if line.startswith("gdb-ok ")), None)
    why = "; ".join(line[len("gdb-no ") :] for line in lines if line.startswith("gdb-no ")) or "no answer"
    if found is None:
        say(f"WARNING: {preflight.NO_GDB} (the {runner.name} runner has no usable gdb with Python: {why[:240]})")
    _GDB_SEEN[key] = (found, "" if found else f"no usable gdb with Python for the {runner.name} runner: {why}")
    return found


def gdb_absent(settings: Settings, runner: Runner, gdb_path: str | None) -> str:
    """Why a prepared ref runs without gdb ("" when it has one): --no-gdb, or none found (the same path)."""
    if gdb_path is not None:
        return ""
    if not settings.gdb:
        return "--no-gdb"
    key = f"{runner.name}:{getattr(runner, 'image_id', '')}"
    return _GDB_SEEN.get(key, (None, ""))[1] or f"no usable gdb with Python for the {runner.name} runner"


@dataclass
class Prepared:
    """Everything a workload needs of one ref: the build, gdb, the ICDs and the time limits (the workload's own
    settings are its own: workloads.train.workload_of for MNIST)."""

    built: Built
    gdb_path: str | None
    icds: dict[str, icd.Icd]
    timeouts: dict[str, float] = field(default_factory=dict)  # backend -> seconds, resolved
    seconds: dict[str, float] = field(default_factory=dict)  # what the preparation spent, by part (profile)
    # Why gdb_path is None ("" when there is a gdb): "--no-gdb", or no usable gdb was found (the run goes on the
    # same way). Either way a crash is judged by its signal only: no frames, no signature.
    gdb_absent: str = ""

    @property
    def signal_only(self) -> bool:
        """Crash signatures cannot be checked: judged by signal (and stage) only."""
        return self.gdb_path is None

    def timeout_for(self, backend: str) -> float:
        return self.timeouts.get(backend, DEFAULT_TIMEOUT_S)


def prepare(ref: str, names: tuple[str, ...], settings: Settings, matrix: fixtures.Matrix, say: Say) -> Prepared:
    """Build what ``names`` need of ``ref`` (after ``preflight_for``) and resolve everything else a workload
    reads: gdb (unless --no-gdb; none found: as --no-gdb, with ``gdb_absent`` saying why; require_gdb: an error),
    the ICDs of the variants that take one, the time limits (--timeout over matrix.toml's [timeouts]
    over DEFAULT_TIMEOUT_S, per backend)."""
    t0 = time.monotonic()
    built = build_ref(ref, names, settings, matrix, say)
    t1 = time.monotonic()
    gdb_path = usable_gdb(built.runner, say) if settings.gdb else None
    absent = gdb_absent(settings, built.runner, gdb_path)
    if settings.gdb and settings.require_gdb and gdb_path is None:
        raise EnvironmentProblem(
            f"gdb is required (require_gdb, MNNREPRO_REQUIRE_GDB=1), and {absent}",
            hint="install gdb (Debian's embeds Python) where the runner runs: the host, or the image (docker/)",
        )
    t2 = time.monotonic()
    icds = (
        {n: icd.resolve(n, settings.cache_dir, built.runner.name) for n in settings.icds}
        if variants.takes_icds(names)
        else {}
    )
    backends = {variants.get(n).backend for n in names} | {variants.get(variants.BASELINE).backend}
    timeouts = {b: float(settings.timeout_s or matrix.timeouts.get(b, DEFAULT_TIMEOUT_S)) for b in backends}
    seconds = {"build_or_cache_check": t1 - t0, "gdb_probe": t2 - t1, "icds": time.monotonic() - t2}
    return Prepared(built, gdb_path, icds, timeouts, seconds, absent)
