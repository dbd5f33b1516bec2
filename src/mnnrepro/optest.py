"""MNN's own op and gradient tests on every backend (issue 13): the test binary (mnn_optest, native/optest), one
cell's sweep through the runner, and each test's raw outcome.

A sweep is one runner call: ``optest_batch.py`` runs every test of the selection in its own process with its own
time limit, ``jobs`` at a time (many test processes per container, never one container per test). One crash
costs one test. Tests that failed or crashed run once more (a crash under gdb, for the backtrace and the
signature): passing then makes them FLAKE (opjudge.py). The judge reads only the files written here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import faults as planted
from .cells import GDB_SCRIPT, Cell
from .contract import read_events
from .icd import Icd
from .progress import Progress
from .runner import Completed, Runner

BATCH_SCRIPT = Path(__file__).with_name("optest_batch.py")
MAX_EXCLUDE_ROUNDS = 3
# Exit codes of mnn_optest (native/optest/main.cpp, native/README.md).
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_EXERCISED, EXIT_OUTPUT, EXIT_NO_SUCH_TEST = 0, 1, 2, 4, 6, 8
_REGISTER = re.compile(r'MNNTestSuiteRegister\s*\(\s*\w+\s*,\s*"([^"]+)"\s*\)')
_NAME = re.compile(r"^[A-Za-z0-9_]+(/[A-Za-z0-9_.+\-]+)+$")
_FAILED_OBJECT = re.compile(r"^FAILED: .*?/test/((?:[A-Za-z0-9_]+/)*[A-Za-z0-9_.+\-]+\.cpp)\.o\s*$", re.M)
_LINK_MISSING = re.compile(
    r"/test/((?:[A-Za-z0-9_]+/)*[A-Za-z0-9_.+\-]+\.cpp)\.o: in function .*?\n.*?(undefined reference to .*)"
)
# Statuses a single process can have; opjudge.py adds FLAKE, CPU-FAIL, SKIP, UNEXPECTED-PASS.
RAW = ("PASS", "FAIL", "CRASH", "TIMEOUT", "NOT-EXERCISED", "FALLBACK")
PLANTS = {"plant-crash": "crash", "plant-hang": "hang"}


# -- the binary --------------------------------------------------------------------------------------------
def core_defines(build_dir: Path) -> list[str]:
    """The -D definitions MNN's core objects were compiled with (a test's #ifdef must see what the library has),
    from the core build's build.ninja."""
    ninja = build_dir / "build.ninja"
    if not ninja.is_file():
        return []
    text = ninja.read_text(errors="replace")
    match = re.search(r"^build CMakeFiles/MNNCore\.dir/.*?\n(?:  .*\n)*?  DEFINES = (.*)$", text, re.M)
    return sorted(set(match.group(1).split())) if match else []


def failed_sources(log: str) -> dict[str, str]:
    """Test sources (relative to MNN's test/) that failed to compile or link, with the first error of each."""
    failed: dict[str, str] = {}
    for m in _LINK_MISSING.finditer(log):
        failed.setdefault(m.group(1), m.group(2).strip()[:200])
    for m in _FAILED_OBJECT.finditer(log):
        rel = m.group(1)
        after = log[m.end() :]
        error = re.search(r"error: (.*)", after)
        failed.setdefault(rel, "does not compile: " + (error.group(1).strip()[:200] if error else "see the build log"))
    return {rel: why for rel, why in failed.items() if not rel.startswith(("..", "/"))}


def registered_names(path: Path) -> list[str]:
    """The test names a source file registers (MNNTestSuiteRegister(Case, "name"))."""
    try:
        return _REGISTER.findall(path.read_text(errors="replace"))
    except OSError:
        return []


@dataclass(frozen=True)
class Binary:
    """A built mnn_optest: its tests (as it lists them) and the sources left out, with their tests and why."""

    path: Path
    tests: tuple[str, ...]
    excluded: dict[str, str] = field(default_factory=dict)  # source (relative to test/) -> why
    excluded_tests: dict[str, str] = field(default_factory=dict)  # test name -> why it was not built

    @classmethod
    def load(cls, directory: Path) -> Binary:
        data = json.loads((directory / "build.json").read_text())
        return cls(directory / "mnn_optest", tuple(data["tests"]), data["excluded"], data["excluded_tests"])

    @classmethod
    def write(cls, directory: Path, listing: str, excluded: dict[str, str], source: Path) -> Binary:
        tests = tuple(line.strip() for line in listing.splitlines() if _NAME.match(line.strip()))
        excluded_tests = {
            name: f"not built: test/{rel} {why}"
            for rel, why in excluded.items()
            for name in registered_names(source / "test" / rel)
        }
        body = {"tests": list(tests), "excluded": excluded, "excluded_tests": excluded_tests}
        (directory / "build.json").write_text(json.dumps(body, indent=1))
        return cls(directory / "mnn_optest", tests, excluded, excluded_tests)

    def moved(self, directory: Path) -> Binary:
        return replace(self, path=directory / "mnn_optest")


def matches(name: str, pattern: str) -> bool:
    """One selection pattern: `op/` (ends in /) is every test under it, `op/conv*` a glob, `op/relu` that test
    only (never `op/relu6`: upstream's prefix match is what this binary exists to avoid)."""
    if pattern.endswith("/"):
        return name.startswith(pattern)
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern


def select(names: tuple[str, ...], patterns: tuple[str, ...]) -> list[str]:
    """The tests a selection names, in registry order."""
    return [n for n in names if any(matches(n, p) for p in patterns)]


def unmatched(names: tuple[str, ...], patterns: tuple[str, ...]) -> list[str]:
    """The patterns that name no test at all (a typo, or a test this ref does not have)."""
    return [p for p in patterns if not any(matches(n, p) for n in names)]


def declared_names(tree: Path) -> tuple[str, ...]:
    """The test names the tree's test sources register, read before anything is built: a selection that names
    none of them is an error before the build (the built binary's list is the authority afterwards)."""
    names: set[str] = set()
    for sub in ("op", "grad"):  # what native/optest/CMakeLists.txt compiles: test/op/*.cpp, test/grad/*.cpp
        for path in sorted((tree / "test" / sub).glob("*.cpp")):
            names.update(registered_names(path))
    return tuple(sorted(names))


def dirname(test: str) -> str:
    return test.replace("/", "__")


# -- one test's outcome --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    test: str
    status: str  # one of RAW
    reason: str
    duration_s: float
    returncode: int | None
    signal: str | None = None
    by_backend: dict[str, dict[str, int]] = field(default_factory=dict)
    ops_total: int = 0
    crash: dict[str, Any] | None = None
    directory: Path | None = None
    rerun: Outcome | None = None

    def placement(self) -> dict[str, int]:
        return {b: sum(types.values()) for b, types in sorted(self.by_backend.items())}


def _signal_name(code: int) -> str | None:
    """The signal that ended a test process (a negative code, or 128+N from gdb), by the runner's one rule."""
    return Completed(argv=(), returncode=code, duration_s=0.0).signal_name


def failure_message(directory: Path, limit: int = 240) -> str:
    """The test's own words about its failure: the first lines it printed that are not this harness's."""
    lines: list[str] = []
    for name in ("stderr.txt", "stdout.txt"):
        path = directory / name
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                text = line.strip()
                if text and not text.startswith(("[mnn_optest]", "The device supports")) and "running " not in text:
                    lines.append(text)
    return " | ".join(lines[:2])[:limit]


def read_outcome(directory: Path, test: str, backend: str) -> Outcome | None:
    """The outcome of one test process from its files; None when it did not finish (no result.json)."""
    result_path = directory / "result.json"
    if not result_path.is_file():
        return None
    result = json.loads(result_path.read_text())
    code = int(result["returncode"])
    duration = float(result.get("duration_s", 0.0))
    record = read_events(directory / "events.jsonl")
    test_event = record.test
    by_backend = dict(test_event.get("by_backend", {})) if test_event else {}
    out = Outcome(test, "FAIL", "", duration, code, directory=directory, by_backend=by_backend)
    out.ops_total = int(test_event.get("ops_total", 0)) if test_event else 0
    crash_path = directory / "crash.json"
    out.crash = json.loads(crash_path.read_text()) if crash_path.is_file() else None
    if result.get("timed_out"):
        out.status, out.reason = "TIMEOUT", f"killed after the time limit ({duration:.0f} s)"
    elif record.exercised is False or code == EXIT_NOT_EXERCISED:
        out.status = "NOT-EXERCISED"
        out.reason = str(record.backend.get("reason") or "exit 4 without a reason")
    elif (sig := _signal_name(code)) is not None:
        out.status, out.signal = "CRASH", sig
        out.reason = f"{sig} in {test}" + (
            f" ({failure_message(directory, 160)})" if failure_message(directory) else ""
        )
    elif code == EXIT_PASSED and test_event is not None and test_event.get("passed") is True:
        gpu_ops = sum(by_backend.get(backend, {}).values())
        if backend != "cpu" and out.ops_total > 0 and gpu_ops == 0:
            out.status = "FALLBACK"
            out.reason = f"passed, but all {out.ops_total} op(s) ran on {', '.join(sorted(by_backend))}"
        else:
            out.status = "PASS"
    elif code == EXIT_FAILED:
        out.reason = failure_message(directory) or "the test returned false"
    else:
        out.reason = {EXIT_NO_SUCH_TEST: "no such test in this binary", EXIT_USAGE: "bad command line"}.get(
            code, f"exit {code}" + (" without a test event" if test_event is None else "")
        )
    return out


# -- a cell's sweep -----------------------------------------------------------------------------------------
@dataclass
class SweepSpec:
    """What one cell's sweep needs; built by the ops session from a Prepared ref."""

    cell: Cell
    binary: Binary
    tests: list[str]
    runner: Runner
    plugin: Path | None
    icd: Icd | None
    precision: str
    timeout_s: float  # per test
    jobs: int
    result_dir: Path
    gdb_path: str | None = None
    faults: tuple[str, ...] = ()


def test_argv(spec: SweepSpec, test: str, out: Path) -> list[str]:
    argv = [str(spec.binary.path), "--test", test, "--backend", spec.cell.backend, "--out", str(out)]
    argv += ["--precision", spec.precision]
    if spec.plugin is not None:
        argv += ["--plugin", str(spec.plugin)]
    return argv


def plant_env(spec: SweepSpec) -> dict[str, str]:
    """--fault plant-crash / plant-hang: mnn_optest crashes or hangs at the first test of the selection that is
    not the CPU's (the sweep must record it and go on)."""
    kinds = [PLANTS[f] for f in spec.faults if f in PLANTS]
    if not kinds or spec.cell.backend == "cpu" or not spec.tests:
        return {}
    return {"MNNREPRO_PLANT": f"{kinds[0]}@{spec.tests[0]}"}


def _batch(
    spec: SweepSpec, tests: list[str], sub: str, *, gdb: str | None, say: Callable[[str], None], what: str
) -> None:
    entries = []
    for test in tests:
        out = spec.result_dir / dirname(test) / sub if sub else spec.result_dir / dirname(test)
        if out.exists():
            shutil.rmtree(out)
        argv = test_argv(spec, test, out)
        if gdb:
            argv = [gdb, "-q", "-nx", "-batch", "-x", str(GDB_SCRIPT), "--args", *argv]
        entries.append(
            {
                "name": test,
                "dir": str(out),
                "argv": argv,
                "env": {"MNNREPRO_CRASH_DIR": str(out)},
                "timeout_s": spec.timeout_s,
            }
        )
    plan = spec.result_dir / f"plan{('-' + sub) if sub else ''}.json"
    plan.write_text(json.dumps({"jobs": spec.jobs, "tests": entries}, indent=1))
    env = dict(spec.icd.env) if spec.icd else {}
    env.update(plant_env(spec))
    argv = ["python3", str(BATCH_SCRIPT), str(plan)]
    if "hide-libvulkan" in spec.faults:
        argv, fault_env = planted.hide_libvulkan(argv, spec.result_dir / ".fault", spec.runner.name)
        env.update(fault_env)
    budget = spec.timeout_s * (len(tests) / spec.jobs + 1) + 120  # the batch as a whole; each test has its own
    with Progress(what, say=say) as progress:
        res = spec.runner.run(
            argv,
            env=env,
            writable=[spec.result_dir],
            timeout_s=budget,
            stdout_path=spec.result_dir / f"batch{('-' + sub) if sub else ''}.log",
            on_line=progress.feed,
        )
        if res.returncode != 0:
            progress.outcome = f"batch ended with exit {res.returncode}" + (" (time limit)" if res.timed_out else "")


def sweep(spec: SweepSpec, *, say: Callable[[str], None] = print) -> dict[str, Outcome]:
    """Every test of the selection in its own process, then one rerun of each failure (crashes under gdb)."""
    spec.result_dir.mkdir(parents=True, exist_ok=True)
    _batch(spec, spec.tests, "", gdb=None, say=say, what=f"{spec.cell.id}: {len(spec.tests)} tests")
    outcomes: dict[str, Outcome] = {}
    for test in spec.tests:
        got = read_outcome(spec.result_dir / dirname(test), test, spec.cell.backend)
        outcomes[test] = got or Outcome(test, "TIMEOUT", "did not finish: the batch was stopped", 0.0, None)
    for status, gdb in (("FAIL", None), ("CRASH", spec.gdb_path)):
        again = [t for t, o in outcomes.items() if o.status == status]
        if not again:
            continue
        _batch(spec, again, "rerun", gdb=gdb, say=say, what=f"{spec.cell.id}: rerun of {len(again)} {status}")
        for test in again:
            outcomes[test].rerun = read_outcome(spec.result_dir / dirname(test) / "rerun", test, spec.cell.backend)
            rerun = outcomes[test].rerun
            if rerun is not None and rerun.crash is not None and outcomes[test].crash is None:
                outcomes[test].crash = rerun.crash
    return outcomes
