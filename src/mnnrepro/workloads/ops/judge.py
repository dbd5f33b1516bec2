"""Judging MNN's own op and gradient tests (issue 13): statuses, expectations as data, what changed.

Statuses of one test in one cell (ref, variant, ICD):

    PASS, FAIL, CRASH, TIMEOUT     what the process did (optest.read_outcome); a PASS after a timeout, run again
                                   alone under a longer limit, is marked slow (not a failure: issue 21)
    NOT-EXERCISED                  the backend under test was not the one MNN used: always a failure of the session
    NO-GPU-WORK                    passed, but the op trace saw no op at all on a GPU backend: nothing was tested
                                   there (a test that returns true at once, or ops the trace does not see); never
                                   a pass, can be expected in a row
    FALLBACK                       passed, but every op it ran ran on the CPU, or (partial) an op type under test
                                   did: the op types the CPU cell's run of the same test ran, less layout glue
                                   ([glue] in the expectations). Not a GPU result, counted apart
    FLAKE                          failed or crashed, then passed when run again
    CPU-FAIL                       fails the same way on the CPU backend of the same build: not a GPU bug
    UNEXPECTED-PASS                listed as failing, now passes: the expectation is stale, so the session fails
    NOT-RUN                        no result: a SKIP row, or its source was not built. Counted apart ("not run: N,
                                   why"), never as matched or as a result

Expectations live in ``fixtures/ops/expectations.toml``: per (ref, variant, ICD) pattern, a test (or fnmatch
pattern) with the status it is known to have, a reason and, where known, the upstream issue or commit. Every test
without a row is expected to PASS. The session fails on any status that differs from its expectation. A FAIL,
CRASH, TIMEOUT or CPU-FAIL row with ``match`` (a regular expression) covers only a failure whose text it finds; a
CRASH row with ``signature`` only a crash with those top MNN frames (as judge.py holds MNIST's crashes): another
failure is unexpected and named. A FLAKE row matches only a test that passed in one of its runs (the first and up
to ``reruns``). Rows that cover a cell and a test of the run but matched no result are stale (reported).

A row may also name the device (issue 22): ``device``, ``vendor``, ``driver``, fnmatch patterns on the device the
test's own process probed (its ``backend`` event: the name, the vendor by PCI ID, the driver's version string; see
``Device``), e.g. ``device = "NVIDIA H100*"``, ``vendor = "NVIDIA"``, ``driver = "580.*"``. The device is known only
once a test ran, so rows are looked up per test after the sweep, with that test's device (else the cell's); a row
that names a device never matches an unknown one. A row for the ICD ``host`` (the machine's own driver: a
different GPU on every machine) must name the device or the vendor; a SKIP row, applied before anything ran,
names none. A FLAKE row for a device gives its reruns to every failure of the tests it covers (their device is
not known when they run); a crash without a backtrace is said "judged by signal only".
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import signature as signatures
from ...contract import Device as Device  # opsession and the tests name opjudge.Device
from ...errors import FixtureError
from ...fixtures import DEVICE_KEYS, FIXTURES, HOST_ICD, OPS_EXPECTATIONS_ENV, OnDevice, covers_cell, fixture_path
from ...settings import VK_VALIDATION_MODES
from ...signature import SIGNAL_ONLY
from .optest import PASSED, Outcome

EXPECTATIONS = FIXTURES / "ops" / "expectations.toml"
STATUSES = (
    "PASS",
    "FAIL",
    "CRASH",
    "TIMEOUT",
    "NOT-EXERCISED",
    "NO-GPU-WORK",
    "FLAKE",
    "CPU-FAIL",
    "FALLBACK",
    "UNEXPECTED-PASS",
)
NOT_RUN = "NOT-RUN"  # not a result: counted apart from STATUSES
FAILING = ("FAIL", "CRASH", "TIMEOUT")
EXPECTABLE = ("FAIL", "CRASH", "TIMEOUT", "SKIP", "FLAKE", "CPU-FAIL", "FALLBACK", "NO-GPU-WORK")  # PASS: default
MATCHABLE = ("FAIL", "CRASH", "TIMEOUT", "CPU-FAIL")  # rows that may carry `match`
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_FLAKE_RERUNS = 3
DEFAULT_RERUN_FACTOR = 4.0
SKIPPED_BY_ROW, NOT_BUILT, COMPILED_OUT = "SKIP row", "not built", "compiled out"  # why a test was not run
INTERRUPTED = "interrupted"  # the session stopped before the test finished (or before its run alone)


def not_built_kind(why: str) -> str:
    """A registration the build left out: its source did not build, or the preprocessor dropped it."""
    return COMPILED_OUT if why.startswith(COMPILED_OUT) else NOT_BUILT


@dataclass(frozen=True)
class Expect(OnDevice):
    refs: tuple[str, ...]
    variant: str
    icd: str
    test: str  # a full name or an fnmatch pattern
    status: str
    reason: str
    upstream: str = ""
    match: str = ""  # a regular expression the failure text must contain (re.search); "" = any failure
    signature: tuple[str, ...] = ()  # CRASH: the crash's top MNN frames (signature.py)
    reruns: int = 0  # FLAKE: reruns of a failure until it passes (0: the file's flake_reruns)
    line: int = 0  # the row's number in the file ([[expect]] #line), to name it
    device: str = ""  # fnmatch patterns on the Device the test ran on ("": any device, known or not)
    vendor: str = ""
    driver: str = ""

    def covers_cell(self, ref: str, version: str | None, variant: str, icd: str, device: Device | None = None) -> bool:
        return covers_cell(self.refs, self.variant, self.icd, ref, version, variant, icd) and self.on(device)

    def covers(
        self, ref: str, version: str | None, variant: str, icd: str, test: str, device: Device | None = None
    ) -> bool:
        return self.covers_cell(ref, version, variant, icd, device) and fnmatch.fnmatchcase(test, self.test)

    def describe(self) -> str:
        on = "".join(f" {k}={getattr(self, k)!r}" for k in DEVICE_KEYS if getattr(self, k))
        return (
            f"[[expect]] #{self.line} ({', '.join(self.refs)} {self.variant} {self.icd}{on} {self.test} {self.status})"
        )


@dataclass(frozen=True)
class GlueKeep:
    """Glue types that are under test in these tests (PoolGrad's mask is a Cast)."""

    test: str  # a full name or an fnmatch pattern
    types: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Glue:
    """Op types that move or convert data between ops (layout glue): not the op under test, so running on the CPU
    does not make a GPU result a partial fallback, unless a keep row says the test is about them."""

    types: tuple[str, ...] = ()
    keep: tuple[GlueKeep, ...] = ()

    def of(self, test: str) -> frozenset[str]:
        kept = {t for k in self.keep if fnmatch.fnmatchcase(test, k.test) for t in k.types}
        return frozenset(self.types) - kept


@dataclass(frozen=True)
class Slow:
    """A test that needs more than the file's time limit, with what was measured."""

    refs: tuple[str, ...]
    variant: str
    icd: str
    test: str
    timeout_s: float
    measured: str

    def covers(self, ref: str, version: str | None, variant: str, icd: str, test: str) -> bool:
        cell_ok = covers_cell(self.refs, self.variant, self.icd, ref, version, variant, icd)
        return cell_ok and fnmatch.fnmatchcase(test, self.test)


@dataclass(frozen=True)
class Expectations:
    rows: tuple[Expect, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    selection: tuple[str, ...] = ("op/", "grad/")
    flake_reruns: int = DEFAULT_FLAKE_RERUNS
    rerun_factor: float = DEFAULT_RERUN_FACTOR
    glue: Glue = Glue()
    slow: tuple[Slow, ...] = ()
    # [validation_timeout_factor]: under the Khronos layer (--vk-validation on|sync) a Vulkan cell's limits are these
    # many times their own (issue 25); a mode not named keeps its limits.
    layer_factors: dict[str, float] = field(default_factory=dict)

    def of(
        self, ref: str, version: str | None, variant: str, icd: str, test: str, device: Device | None = None
    ) -> Expect | None:
        """A test's row: the first that covers it. Rows that name a device are passed over while the device is not
        known (None: before any test of the cell ran)."""
        for row in self.rows:
            if row.covers(ref, version, variant, icd, test, device):
                return row
        return None

    def limit(
        self, ref: str, version: str | None, variant: str, icd: str, test: str, base: float, layer: str = "off"
    ) -> float:
        """A test's time limit: its [[slow]] row's, never below the session's; under the validation layer (``layer``:
        the mode a Vulkan cell's tests run under it) times that mode's factor. The verdict rules stay as they are:
        a test killed at this limit is still a TIMEOUT once it is killed again alone."""
        limit = base
        for row in self.slow:
            if row.covers(ref, version, variant, icd, test):
                limit = max(base, row.timeout_s)
                break
        return limit * self.layer_factor(layer)

    def layer_factor(self, layer: str) -> float:
        """The limits' factor under the validation layer in this mode (1 off, or for a mode without a factor)."""
        return self.layer_factors.get(layer, 1.0)

    def reruns(self, row: Expect | None) -> int:
        """How many times a failure runs again: a FLAKE row's count, else once."""
        if row is None or row.status != "FLAKE":
            return 1
        return row.reruns or self.flake_reruns

    def reruns_before(self, ref: str, version: str | None, variant: str, icd: str, test: str) -> int:
        """The reruns a test gets before its device is known: its row's without a device, raised to those of any
        FLAKE row for a device that covers the cell and test. More runs of a failure can only make it a FLAKE,
        which matches nothing but a FLAKE row (its device checked after the run): never a false pass."""
        n = self.reruns(self.of(ref, version, variant, icd, test))
        for row in self.rows:
            if row.names_device and row.status == "FLAKE" and fnmatch.fnmatchcase(test, row.test):
                if covers_cell(row.refs, row.variant, row.icd, ref, version, variant, icd):
                    n = max(n, self.reruns(row))
        return n


def _str(where: str, value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise FixtureError(f"{where} = {value!r}: must be a{'' if empty else ' non-empty'} string")
    return value


def _strings(where: str, value: Any, *, empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or (not empty and not value) or not all(isinstance(v, str) and v for v in value):
        raise FixtureError(f"{where} = {value!r}: must be a list of non-empty strings")
    return tuple(value)


def _number(where: str, value: Any, low: float, high: float, *, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise FixtureError(f"{where} = {value!r}: must be a{'n integer' if integer else ' number'} in [{low}, {high}]")
    return float(value)


def _table(where: str, row: Any, keys: set[str]) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise FixtureError(f"{where}: must be a table")
    extra = set(row) - keys
    if extra:
        raise FixtureError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    return row


def _refs(where: str, refs: Any) -> tuple[str, ...]:
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r for r in refs):
        raise FixtureError(f'{where}: refs = {refs!r}: must be a list of refs or ranges, e.g. ["3.3.0"]')
    return tuple(refs)


ROW_KEYS = {"refs", "variant", "icd", "test", "status", "reason", "upstream", "match", "signature", "reruns"}


def _device_keys(where: str, row: dict[str, Any], icd: str, status: str) -> dict[str, str]:
    """A row's device, vendor and driver patterns (issue 22), checked: a row for the machine's own driver names
    the device it was seen on, and a SKIP row (applied before any test of the cell ran) names none."""
    keys = {k: _str(f"{where} {k}", row[k]) for k in DEVICE_KEYS if k in row}
    if icd != "*" and fnmatch.fnmatchcase(HOST_ICD, icd) and not ("device" in keys or "vendor" in keys):
        raise FixtureError(
            f'{where}: icd = "{icd}" with no device or vendor key: a row for the machine\'s own driver must name '
            'the device: host means a different GPU on every machine (add e.g. device = "NVIDIA H100*", '
            'vendor = "NVIDIA")'
        )
    if keys and status == "SKIP":
        raise FixtureError(
            f"{where}: a SKIP row cannot name a device, vendor or driver: it is applied before any test of the "
            "cell ran, when the device is not known yet (expect the test's status on that device instead)"
        )
    return keys


def _expect(where: str, raw: Any, line: int) -> Expect:
    row = _table(where, raw, ROW_KEYS | set(DEVICE_KEYS))
    refs = _refs(where, row.get("refs"))
    status = _str(f"{where} status", row.get("status"))
    if status not in EXPECTABLE:
        raise FixtureError(
            f"{where} status = {status!r}: must be one of {', '.join(EXPECTABLE)} "
            "(PASS is every test's default; NOT-EXERCISED can never be expected)"
        )
    match = _str(f"{where} match", row.get("match", ""), empty=True)
    if match and status not in MATCHABLE:
        raise FixtureError(f"{where}: match is for a failure's text ({', '.join(MATCHABLE)} rows), not {status}")
    try:
        re.compile(match)
    except re.error as exc:
        raise FixtureError(f"{where} match = {match!r}: not a regular expression ({exc})") from exc
    sig = _strings(f"{where} signature", row.get("signature", []), empty=True)
    if sig and status != "CRASH":
        raise FixtureError(f"{where}: signature is a crash's top MNN frames: CRASH rows only, not {status}")
    reruns = row.get("reruns", 0)
    if "reruns" in row:
        if status != "FLAKE":
            raise FixtureError(f"{where}: reruns is for FLAKE rows only, not {status}")
        _number(f"{where} reruns", reruns, 1, 10, integer=True)
    icd = _str(f"{where} icd", row.get("icd", "*"))
    return Expect(
        refs,
        _str(f"{where} variant", row.get("variant")),
        icd,
        _str(f"{where} test", row.get("test")),
        status,
        _str(f"{where} reason", row.get("reason")),
        _str(f"{where} upstream", row.get("upstream", ""), empty=True),
        match,
        sig,
        int(reruns),
        line,
        **_device_keys(where, row, icd, status),
    )


def _glue(path: Path, raw: Any) -> Glue:
    table = _table(f"{path} [glue]", raw, {"types", "keep"})
    types = _strings(f"{path} [glue] types", table.get("types", []), empty=True)
    keep = []
    for i, k in enumerate(table.get("keep", [])):
        where = f"{path} [[glue.keep]] #{i + 1}"
        row = _table(where, k, {"test", "types", "reason"})
        kept = _strings(f"{where} types", row.get("types"))
        if unknown := [t for t in kept if t not in types]:
            raise FixtureError(f"{where} types: {', '.join(unknown)} not in [glue] types")
        keep.append(GlueKeep(_str(f"{where} test", row.get("test")), kept, _str(f"{where} reason", row.get("reason"))))
    return Glue(types, tuple(keep))


def _slow(path: Path, raw: Any) -> tuple[Slow, ...]:
    rows = []
    for i, s in enumerate(raw):
        where = f"{path} [[slow]] #{i + 1}"
        row = _table(where, s, {"refs", "variant", "icd", "test", "timeout_s", "measured"})
        rows.append(
            Slow(
                _refs(where, row.get("refs")),
                _str(f"{where} variant", row.get("variant")),
                _str(f"{where} icd", row.get("icd", "*")),
                _str(f"{where} test", row.get("test")),
                _number(f"{where} timeout_s", row.get("timeout_s"), 1, 3600),
                _str(f"{where} measured", row.get("measured")),
            )
        )
    return tuple(rows)


TOP_KEYS = {
    "format",
    "timeout_s",
    "selection",
    "flake_reruns",
    "timeout_rerun_factor",
    "validation_timeout_factor",
    "glue",
    "slow",
    "expect",
}
LAYER_MODES = tuple(m for m in VK_VALIDATION_MODES if m != "off")  # the modes that run under the layer


def _layer_factors(path: Path, raw: Any) -> dict[str, float]:
    """[validation_timeout_factor]: per layer mode, a number from 1 to 20 (a factor never shortens a limit)."""
    where = f"{path} [validation_timeout_factor]"
    table = _table(where, raw, set(LAYER_MODES))
    return {mode: _number(f"{where} {mode}", value, 1, 20) for mode, value in table.items()}


def load_expectations(path: Path | None = None) -> Expectations:
    """Read and check the expectations (fixtures/ops/expectations.toml, or $MNNREPRO_OPS_EXPECTATIONS): every key
    known, every status one that can be expected, a reason each, each `match` a regular expression, the glue table
    and the slow tests' limits."""
    path = path or fixture_path(EXPECTATIONS, OPS_EXPECTATIONS_ENV)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FixtureError(f"cannot read {path}: {exc}") from exc
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise FixtureError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    if data.get("format") != 1:
        raise FixtureError(f"{path}: format {data.get('format')!r} is not 1")
    timeout = _number(f"{path}: timeout_s", data.get("timeout_s", DEFAULT_TIMEOUT_S), 1, 3600)
    selection = data.get("selection", ["op/", "grad/"])
    if not isinstance(selection, list) or not selection or not all(isinstance(s, str) and s for s in selection):
        raise FixtureError(f"{path}: selection = {selection!r}: must be a list of test-name prefixes")
    flake_reruns = _number(f"{path}: flake_reruns", data.get("flake_reruns", DEFAULT_FLAKE_RERUNS), 1, 10, integer=True)
    factor = _number(f"{path}: timeout_rerun_factor", data.get("timeout_rerun_factor", DEFAULT_RERUN_FACTOR), 1, 20)
    rows = tuple(_expect(f"{path} [[expect]] #{i + 1}", row, i + 1) for i, row in enumerate(data.get("expect", [])))
    return Expectations(
        rows,
        timeout,
        tuple(selection),
        int(flake_reruns),
        factor,
        _glue(path, data.get("glue", {})),
        _slow(path, data.get("slow", [])),
        _layer_factors(path, data.get("validation_timeout_factor", {})),
    )


@dataclass
class TestResult:
    test: str
    status: str
    expected: str
    matched: bool | None  # None: not run (NOT-RUN), neither matched nor mismatched
    reason: str
    expectation: str = ""  # the row's reason
    upstream: str = ""
    first: str = ""  # the first run's status when a rerun changed it (FLAKE), or the GPU status under CPU-FAIL
    duration_s: float = 0.0  # of the run judged (the rerun alone for a slow test)
    placement: dict[str, int] = field(default_factory=dict)  # backend -> ops
    cpu_ops: dict[str, int] = field(default_factory=dict)  # op type -> count, of the ops that ran on the CPU
    signature: list[str] = field(default_factory=list)
    driver_suspect: bool = False  # fails on this ICD, passes on another ICD of the same variant
    directory: str = ""
    row: int = 0  # the covering [[expect]] row's number (0: none)
    limit_s: float = 0.0  # the time limit of the run judged
    slow: bool = False  # killed at its limit, then run again alone under a longer one
    partial: dict[str, int] = field(default_factory=dict)  # partial FALLBACK: op types under test on the CPU
    runs: int = 1  # runs of this test in this cell (first + reruns)
    not_run: str = ""  # NOT-RUN: SKIPPED_BY_ROW or NOT_BUILT
    # --vk-validation (issue 25): the layer's record of the run judged (opvalidation.assess_test), beside the status,
    # never part of it; empty without validation.
    validation: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status_of(outcome: Outcome, cpu: Outcome | None, backend: str) -> tuple[str, str, str]:
    """(status, first status, reason) of one GPU or CPU outcome after its reruns and beside the CPU's."""
    status, reason, first = outcome.status, outcome.reason, ""
    runs = outcome.runs()
    if status in ("FAIL", "CRASH") and any(r.status in PASSED for r in runs[1:]):
        n = next(i for i, r in enumerate(runs) if r.status in PASSED)
        return "FLAKE", status, f"{status} ({reason}), then passed when run again (run {n + 1} of {len(runs)})"
    # Not a GPU bug when the CPU backend of the same build fails the same way (wrong values and wrong values, a
    # crash and a crash), and did not pass when run again: a CPU that crashed once (a flaky test) or fails
    # otherwise explains nothing about a wrong value on the GPU.
    cpu_passed_later = cpu is not None and any(r.status in PASSED for r in cpu.runs()[1:])
    if backend != "cpu" and status in FAILING and cpu is not None and cpu.status == status and not cpu_passed_later:
        return "CPU-FAIL", status, f"{status} here and {cpu.status} on the CPU backend of this build ({cpu.reason})"
    return status, first, reason


def under_test(outcome: Outcome, cpu: Outcome | None, glue: Glue) -> tuple[set[str], str]:
    """The op types a test is about: those its CPU cell's run ran, less layout glue (issue 21). Without a CPU run
    that traced ops, those the run itself traced on any backend (stricter, and said so)."""
    cpu_types = set((cpu.by_backend.get("cpu") or {}) if cpu is not None else {})
    source = "" if cpu_types else " (no CPU run of this test traced ops: op types from this run)"
    if not cpu_types:
        cpu_types = {t for types in outcome.by_backend.values() for t in types}
    return cpu_types - glue.of(outcome.test), source


def partial_fallback(outcome: Outcome, cpu: Outcome | None, backend: str, glue: Glue) -> tuple[dict[str, int], str]:
    """Op types under test that this GPU run ran on the CPU (count each), and the reason naming them."""
    on_cpu = outcome.by_backend.get("cpu") or {}
    if backend == "cpu" or not on_cpu:
        return {}, ""
    types, source = under_test(outcome, cpu, glue)
    fell = {t: n for t, n in sorted(on_cpu.items()) if t in types}
    if not fell:
        return {}, ""
    on_gpu = outcome.by_backend.get(backend) or {}
    named = ", ".join(f"{t} x{n}" + (f" ({on_gpu[t]} on {backend})" if on_gpu.get(t) else "") for t, n in fell.items())
    return fell, f"passed, but op type(s) under test ran on the CPU (partial fallback): {named}{source}"


def _failure_differs(status: str, outcome: Outcome, expect: Expect, observed: tuple[str, ...]) -> str:
    """Why a failure of the expected status is not the row's failure ("" when it is): its text, its frames."""
    text = outcome.reason
    if expect.match and not re.search(expect.match, text):
        return f"{status}, but not the known failure: {text!r} does not match /{expect.match}/"
    if status == "CRASH" and expect.signature and outcome.crash is not None:
        if not signatures.matches(observed, expect.signature):
            frames = " < ".join(observed) or "(none in MNN)"
            return f"{status}, but another crash: frames {frames} are not {' < '.join(expect.signature)} ({text})"
    return ""


def _match(status: str, outcome: Outcome, expect: Expect | None, observed: tuple[str, ...]) -> tuple[bool, str]:
    """(matched, why not) of a judged status against its row (PASS without one)."""
    expected = expect.status if expect else "PASS"
    runs = len(outcome.runs())
    if status == "NOT-EXERCISED":
        return False, ""
    if expected == "FLAKE":
        if status in ("PASS", "FLAKE"):
            return True, ""
        if status in FAILING:
            return False, f"listed as FLAKE, but {status} in all {runs} run(s): a failure, and the row is stale"
        return False, ""
    if status != expected:
        return False, ""
    if expect is not None and status in MATCHABLE:
        differs = _failure_differs(status, outcome, expect, observed)
        if differs:
            return False, differs
    return True, ""


def judge(
    outcome: Outcome,
    cpu: Outcome | None,
    backend: str,
    expect: Expect | None,
    signature: tuple[str, ...] = (),
    glue: Glue = Glue(),
) -> TestResult:
    """One test in one GPU or CPU cell: its status (after reruns, beside the CPU's, partial fallback), matched
    against its row. Without a glue table every op type the CPU run ran is under test (the strictest reading)."""
    status, first, reason = status_of(outcome, cpu, backend)
    partial: dict[str, int] = {}
    if status == "PASS":
        partial, why = partial_fallback(outcome, cpu, backend, glue)
        if partial:
            status, reason = "FALLBACK", why
    slow = outcome.slow_after_s > 0
    if slow and status != "TIMEOUT":
        reason = (
            f"slow: killed at the {outcome.slow_after_s:.0f} s limit, then ran alone in {outcome.duration_s:.0f} s "
            f"(limit {outcome.limit_s:.0f} s); a [[slow]] row gives it its limit" + (f"; {reason}" if reason else "")
        )
    expected = expect.status if expect else "PASS"
    matched, why = _match(status, outcome, expect, signature)
    if why:
        reason = why
    if not matched and status == "PASS" and expected != "PASS":
        status, first = "UNEXPECTED-PASS", "PASS"
        reason = f"listed as {expected} ({expect.reason if expect else ''}), now passes: the expectation is stale"
    elif status == "CRASH" and outcome.crash is None:
        # No backtrace (no gdb where it ran, or gdb caught nothing): the crash is known by its signal alone, and a
        # row's signature is not checked (issue 22: a missing gdb is a warning, so the verdict says it).
        unverified = ", the row's signature not verified" if expect and expect.signature else ""
        reason += f" ({SIGNAL_ONLY}: no backtrace{unverified})"
    cpu_types = (outcome.by_backend.get("cpu") or {}) if backend != "cpu" else {}
    return TestResult(
        outcome.test,
        status,
        expected,
        matched,
        reason,
        expect.reason if expect else "",
        expect.upstream if expect else "",
        first,
        round(outcome.duration_s, 3),
        outcome.placement(),
        dict(sorted(cpu_types.items())),
        list(signature),
        directory=str(outcome.directory or ""),
        row=expect.line if expect else 0,
        limit_s=outcome.limit_s,
        slow=slow,
        partial=partial,
        runs=len(outcome.runs()),
    )


def not_run(test: str, why: str, kind: str, expect: Expect | None = None) -> TestResult:
    """A test with no result (kind: SKIPPED_BY_ROW or NOT_BUILT): counted apart, never as matched."""
    return TestResult(
        test,
        NOT_RUN,
        expect.status if expect else "PASS",
        None,
        why,
        expect.reason if expect else "",
        expect.upstream if expect else "",
        row=expect.line if expect else 0,
        not_run=kind,
    )


def mark_driver_suspects(by_icd: dict[str, list[TestResult]]) -> None:
    """A failure on one ICD while the same test passes on another ICD of the same (ref, variant)."""
    passing = {icd: {r.test for r in results if r.status == "PASS"} for icd, results in by_icd.items()}
    for icd, results in by_icd.items():
        others = set().union(*(p for other, p in passing.items() if other != icd)) if len(by_icd) > 1 else set()
        for r in results:
            if r.status in FAILING and r.test in others:
                r.driver_suspect = True


def counts(results: list[TestResult]) -> dict[str, int]:
    """Results per status (NOT-RUN is not a result: see summarize)."""
    out = dict.fromkeys(STATUSES, 0)
    for r in results:
        if r.status != NOT_RUN:
            out[r.status] += 1
    return out


def summarize(results: list[TestResult]) -> dict[str, Any]:
    """A cell's numbers: results per status, matched and mismatched among them, and apart from them the tests
    not run (with why), the slow passes and the partial fallbacks."""
    ran = [r for r in results if r.status != NOT_RUN]
    why: dict[str, int] = {}
    for r in results:
        if r.status == NOT_RUN:
            why[r.not_run] = why.get(r.not_run, 0) + 1
    return {
        "counts": counts(results),
        "results": len(ran),
        "matched": sum(r.matched is True for r in ran),
        "mismatched": sum(r.matched is False for r in ran),
        "not_run": {"count": len(results) - len(ran), "why": dict(sorted(why.items()))},
        "slow": sum(r.slow and r.status != "TIMEOUT" for r in ran),
        "partial_fallback": sum(bool(r.partial) for r in ran),
    }


def _in_selection(test_pattern: str, selection: tuple[str, ...]) -> bool:
    """Whether a row's test (a name or pattern) can name a test of the selection."""
    for p in selection:
        if p.endswith("/") and test_pattern.startswith(p):
            return True
        if fnmatch.fnmatchcase(test_pattern, p) or fnmatch.fnmatchcase(p, test_pattern):
            return True
    return False


CellKey = tuple[str, str | None, str, str]  # (ref, version, variant, icd)


def stale_rows(
    expectations: Expectations,
    cells: list[tuple[CellKey, list[TestResult]]],
    selection: tuple[str, ...],
    devices: dict[CellKey, Device] | None = None,
) -> list[dict[str, Any]]:
    """Rows that cover a cell of the run and a test of its selection but matched no result in it (nor skipped a
    test): the test passes now, fails otherwise, a FLAKE that never passed, a row shadowed by an earlier one, or
    a test this build does not have. Cells: ((ref, version, variant, icd), results); devices: each cell's device
    (a row that names one covers only a cell whose device it matches)."""
    used = {r.row for _, results in cells for r in results if r.row and r.matched is not False}
    out = []
    for row in expectations.rows:
        if row.line in used or not _in_selection(row.test, selection):
            continue
        covered = [(key, results) for key, results in cells if row.covers_cell(*key, (devices or {}).get(key))]
        if not covered:
            continue
        seen = [
            f"{key[0]}/{key[2]}/{key[3]} {r.test}: {r.status}"
            for key, results in covered
            for r in results
            if r.row == row.line
        ]
        why = "; ".join(seen[:6]) + (f"; ... ({len(seen)} in all)" if len(seen) > 6 else "")
        out.append(
            {
                "row": row.line,
                "refs": list(row.refs),
                "variant": row.variant,
                "icd": row.icd,
                **{k: getattr(row, k) for k in DEVICE_KEYS if getattr(row, k)},
                "test": row.test,
                "status": row.status,
                "why": f"no result matched it ({why})" if seen else "it is the expectation of no test of the run",
            }
        )
    return out


# -- what changed between two runs (two refs, or two runs of one) ------------------------------------------------
CHANGES = (
    "newly failing",
    "newly crashing",
    "crash -> fallback",
    "newly falling back",
    "newly without GPU work",
    "newly passing",
    "run in one only",
    "other change",
    "new test",
    "test gone",
)
BAD = ("FAIL", "CRASH", "TIMEOUT", "CPU-FAIL", "NOT-EXERCISED")


def change_kind(before: str, after: str) -> str | None:
    """How a test's status changed. A crash that becomes a fallback is not a fix: the op under test left the GPU
    (39be21c56 declines image mode's weight-as-input Deconvolution, alibaba/MNN#3129), so it is named apart."""
    if before == after:
        return None
    if NOT_RUN in (before, after):
        return "run in one only"
    if after == "CRASH":
        return "newly crashing"
    if after in BAD and before not in BAD:
        return "newly failing"
    if after == "FALLBACK":
        return "crash -> fallback" if before == "CRASH" else "newly falling back"
    if after == "NO-GPU-WORK":
        return "newly without GPU work"
    if after in ("PASS", "UNEXPECTED-PASS") and before not in ("PASS", "UNEXPECTED-PASS"):
        return "newly passing"
    return "other change"


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, str]]:
    """Per (variant, ICD, test) present in both summaries, the tests whose status changed from a to b, with b's
    reason (for a fallback: the op types that ran on the CPU)."""

    def index(data: dict[str, Any]) -> dict[tuple[str, str, str], tuple[str, str]]:
        return {
            (c["variant"], c["icd"], t["test"]): (t["status"], str(t.get("reason", "")))
            for c in data.get("cells", [])
            for t in c.get("tests", [])
        }

    before, after = index(a), index(b)
    # Tests one release has and the other not, in the cells both runs have.
    cells = {k[:2] for k in before} & {k[:2] for k in after}
    rows = []
    for key in sorted(k for k in set(before) | set(after) if k[:2] in cells):
        was, now = before.get(key, ("-", ""))[0], after.get(key, ("-", ""))
        kind = "new test" if was == "-" else "test gone" if now[0] == "-" else change_kind(was, now[0])
        if kind:
            variant, icd, test = key
            rows.append(
                {
                    "kind": kind,
                    "variant": variant,
                    "icd": icd,
                    "test": test,
                    "before": was,
                    "after": now[0],
                    "detail": now[1],
                }
            )
    return rows
