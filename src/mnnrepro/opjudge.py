"""Judging MNN's own op and gradient tests (issue 13): statuses, expectations as data, what changed.

Statuses of one test in one cell (ref, variant, ICD):

    PASS, FAIL, CRASH, TIMEOUT     what the process did (optest.read_outcome)
    NOT-EXERCISED                  the backend under test was not the one MNN used: always a failure of the session
    FALLBACK                       passed, but every op it ran ran on the CPU: not a GPU result, counted apart
    FLAKE                          failed or crashed, then passed when run again
    CPU-FAIL                       fails the same way on the CPU backend of the same build: not a GPU bug
    SKIP                           not run: listed as a skip in the expectations, or its source was not built
    UNEXPECTED-PASS                listed as failing, now passes: the expectation is stale, so the session fails

Expectations live in ``fixtures/ops/expectations.toml``: per (ref, variant, ICD) pattern, a test (or fnmatch
pattern) with the status it is known to have, a reason and, where known, the upstream issue or commit. Every test
without a row is expected to PASS. The session fails on any status that differs from its expectation.
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FixtureError
from .fixtures import FIXTURES, in_range, is_version_range, parse_version
from .optest import Outcome

EXPECTATIONS = FIXTURES / "ops" / "expectations.toml"
STATUSES = (
    "PASS",
    "FAIL",
    "CRASH",
    "TIMEOUT",
    "NOT-EXERCISED",
    "SKIP",
    "FLAKE",
    "CPU-FAIL",
    "FALLBACK",
    "UNEXPECTED-PASS",
)
FAILING = ("FAIL", "CRASH", "TIMEOUT")
EXPECTABLE = ("FAIL", "CRASH", "TIMEOUT", "SKIP", "FLAKE", "CPU-FAIL", "FALLBACK")  # PASS is the default
DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Expect:
    refs: tuple[str, ...]
    variant: str
    icd: str
    test: str  # a full name or an fnmatch pattern
    status: str
    reason: str
    upstream: str = ""

    def covers(self, ref: str, version: str | None, variant: str, icd: str, test: str) -> bool:
        parsed = parse_version(ref) or parse_version(version)
        ref_ok = any(
            (parsed is not None and in_range(parsed, p)) if is_version_range(p) else fnmatch.fnmatchcase(ref, p)
            for p in self.refs
        )
        return (
            ref_ok
            and fnmatch.fnmatchcase(variant, self.variant)
            and fnmatch.fnmatchcase(icd, self.icd)
            and fnmatch.fnmatchcase(test, self.test)
        )


@dataclass(frozen=True)
class Expectations:
    rows: tuple[Expect, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    selection: tuple[str, ...] = ("op/", "grad/")

    def of(self, ref: str, version: str | None, variant: str, icd: str, test: str) -> Expect | None:
        for row in self.rows:
            if row.covers(ref, version, variant, icd, test):
                return row
        return None


def _str(where: str, value: Any, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise FixtureError(f"{where} = {value!r}: must be a{'' if empty else ' non-empty'} string")
    return value


def load_expectations(path: Path = EXPECTATIONS) -> Expectations:
    """Read and check the expectations: every key known, every status one that can be expected, a reason each."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FixtureError(f"cannot read {path}: {exc}") from exc
    unknown = set(data) - {"format", "timeout_s", "selection", "expect"}
    if unknown:
        raise FixtureError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    if data.get("format") != 1:
        raise FixtureError(f"{path}: format {data.get('format')!r} is not 1")
    timeout = data.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 3600:
        raise FixtureError(f"{path}: timeout_s = {timeout!r}: must be a number of seconds in [1, 3600]")
    selection = data.get("selection", ["op/", "grad/"])
    if not isinstance(selection, list) or not selection or not all(isinstance(s, str) and s for s in selection):
        raise FixtureError(f"{path}: selection = {selection!r}: must be a list of test-name prefixes")
    rows = []
    for i, row in enumerate(data.get("expect", [])):
        where = f"{path} [[expect]] #{i + 1}"
        if not isinstance(row, dict):
            raise FixtureError(f"{where}: must be a table")
        extra = set(row) - {"refs", "variant", "icd", "test", "status", "reason", "upstream"}
        if extra:
            raise FixtureError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        refs = row.get("refs")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r for r in refs):
            raise FixtureError(f'{where}: refs = {refs!r}: must be a list of refs or ranges, e.g. ["3.3.0"]')
        status = _str(f"{where} status", row.get("status"))
        if status not in EXPECTABLE:
            raise FixtureError(
                f"{where} status = {status!r}: must be one of {', '.join(EXPECTABLE)} "
                "(PASS is every test's default; NOT-EXERCISED can never be expected)"
            )
        rows.append(
            Expect(
                tuple(refs),
                _str(f"{where} variant", row.get("variant")),
                _str(f"{where} icd", row.get("icd", "*")),
                _str(f"{where} test", row.get("test")),
                status,
                _str(f"{where} reason", row.get("reason")),
                _str(f"{where} upstream", row.get("upstream", ""), empty=True),
            )
        )
    return Expectations(tuple(rows), float(timeout), tuple(selection))


@dataclass
class TestResult:
    test: str
    status: str
    expected: str
    matched: bool
    reason: str
    expectation: str = ""  # the row's reason
    upstream: str = ""
    first: str = ""  # the first run's status when a rerun changed it (FLAKE), or the GPU status under CPU-FAIL
    duration_s: float = 0.0
    placement: dict[str, int] = field(default_factory=dict)  # backend -> ops
    cpu_ops: dict[str, int] = field(default_factory=dict)  # op type -> count, of the ops that ran on the CPU
    signature: list[str] = field(default_factory=list)
    driver_suspect: bool = False  # fails on this ICD, passes on another ICD of the same variant
    directory: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status_of(outcome: Outcome, cpu: Outcome | None, backend: str) -> tuple[str, str, str]:
    """(status, first status, reason) of one GPU or CPU outcome after its rerun and beside the CPU's."""
    status, reason, first = outcome.status, outcome.reason, ""
    rerun = outcome.rerun
    if status in ("FAIL", "CRASH") and rerun is not None and rerun.status in ("PASS", "FALLBACK"):
        return "FLAKE", status, f"{status} ({reason}), then passed when run again"
    # Not a GPU bug when the CPU backend of the same build fails the same way (wrong values and wrong values, a
    # crash and a crash), and did not pass when run again: a CPU that crashed once (a flaky test) or fails
    # otherwise explains nothing about a wrong value on the GPU.
    cpu_passed_later = cpu is not None and cpu.rerun is not None and cpu.rerun.status in ("PASS", "FALLBACK")
    if backend != "cpu" and status in FAILING and cpu is not None and cpu.status == status and not cpu_passed_later:
        return "CPU-FAIL", status, f"{status} here and {cpu.status} on the CPU backend of this build ({cpu.reason})"
    return status, first, reason


def judge(
    outcome: Outcome, cpu: Outcome | None, backend: str, expect: Expect | None, signature: tuple[str, ...] = ()
) -> TestResult:
    status, first, reason = status_of(outcome, cpu, backend)
    expected = expect.status if expect else "PASS"
    if status == "NOT-EXERCISED":
        matched = False
    elif expected == "FLAKE":
        matched = status in ("PASS", "FLAKE", *FAILING)  # a known flake may go either way
    elif status == expected:
        matched = True
    elif status == "PASS":
        status, first, matched = "UNEXPECTED-PASS", "PASS", False
        reason = f"listed as {expected} ({expect.reason if expect else ''}), now passes: the expectation is stale"
    else:
        matched = False
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
    )


def skipped(test: str, reason: str, expect: Expect | None = None) -> TestResult:
    return TestResult(
        test, "SKIP", "SKIP", True, reason, expect.reason if expect else "", expect.upstream if expect else ""
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
    out = dict.fromkeys(STATUSES, 0)
    for r in results:
        out[r.status] += 1
    return out


# -- what changed between two runs (two refs, or two runs of one) ------------------------------------------------
CHANGES = (
    "newly failing",
    "newly crashing",
    "newly falling back",
    "newly passing",
    "other change",
    "new test",
    "test gone",
)
BAD = ("FAIL", "CRASH", "TIMEOUT", "CPU-FAIL", "NOT-EXERCISED")


def change_kind(before: str, after: str) -> str | None:
    if before == after:
        return None
    if after == "CRASH":
        return "newly crashing"
    if after in BAD and before not in BAD:
        return "newly failing"
    if after == "FALLBACK":
        return "newly falling back"
    if after in ("PASS", "UNEXPECTED-PASS") and before not in ("PASS", "UNEXPECTED-PASS"):
        return "newly passing"
    return "other change"


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, str]]:
    """Per (variant, ICD, test) present in both summaries, the tests whose status changed from a to b."""

    def index(data: dict[str, Any]) -> dict[tuple[str, str, str], str]:
        return {
            (c["variant"], c["icd"], t["test"]): t["status"] for c in data.get("cells", []) for t in c.get("tests", [])
        }

    before, after = index(a), index(b)
    # Tests one release has and the other not, in the cells both runs have.
    cells = {k[:2] for k in before} & {k[:2] for k in after}
    rows = []
    for key in sorted(k for k in set(before) | set(after) if k[:2] in cells):
        was, now = before.get(key, "-"), after.get(key, "-")
        kind = "new test" if was == "-" else "test gone" if now == "-" else change_kind(was, now)
        if kind:
            variant, icd, test = key
            rows.append({"kind": kind, "variant": variant, "icd": icd, "test": test, "before": was, "after": now})
    return rows
