"""The fault battery (issue 11): every case plants one fault or hostile input, runs the suite in a process of its
own and records one row: the fault, the verdicts or exit code, what the suite said, whether anything was lost,
whether any process or container was left. A case fails on a false green, a loss, a leftover or an unclear
outcome (a traceback instead of a message). The table is printed at the end and written to
results/faults-<stamp>.json.

Tiers: quick (no MNN: a fake driver and fake trees; seconds) runs by default, also inside `nox -s tests`; full
(real MNN runs through the cached builds, real signals, `nox -s vulkan`; minutes) runs only when asked:
`nox -s faults -- --tier full`, `FAULTS_TIER=full` or `-m full`. FAULTS_SEED fixes the random moments.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from .battery import ROOT, ROW_PROPERTY, Row, become_subreaper, reap_orphans

HERE = Path(__file__).resolve().parent
SEED_ENV = "FAULTS_SEED"
TIER_ENV = "FAULTS_TIER"
_rows: dict[str, dict[str, Any]] = {}
_results: dict[str, str] = {}
_durations: dict[str, float] = {}


def pytest_configure(config: pytest.Config) -> None:
    # One seed for the whole session, workers included (xdist starts them after this, with this environment).
    os.environ.setdefault(SEED_ENV, str(random.SystemRandom().randrange(1, 10**6)))


def _full_wanted(config: pytest.Config) -> bool:
    markexpr = str(config.getoption("markexpr", "") or "")
    return os.environ.get(TIER_ENV) == "full" or bool(re.search(r"(?<!not )\bfull\b", markexpr))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _full_wanted(config):
        return
    skip = pytest.mark.skip(reason="the full fault tier runs on demand: nox -s faults -- --tier full")
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("full"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def seed() -> int:
    return int(os.environ.get(SEED_ENV, "1"))


@pytest.fixture(scope="session", autouse=True)
def _subreaper() -> Iterator[bool]:
    """Orphans of every run come back to this process, where the battery counts them as leftovers."""
    yield become_subreaper()
    reap_orphans()


class Finish(Protocol):
    def __call__(self, row: Row, known_bug: str = "") -> None: ...


@pytest.fixture
def finish(request: pytest.FixtureRequest) -> Finish:
    """Record the case's row (for the table) and fail on its problems; ``known_bug``: a bug already reported
    that a random case may run into (the row then shows as xfail with that reason)."""

    def done(row: Row, known_bug: str = "") -> None:
        request.node.user_properties.append((ROW_PROPERTY, row.to_dict()))
        problems = row.problems()
        if problems and known_bug:
            pytest.xfail(f"{known_bug} ({' | '.join(problems)})")
        assert not problems, f"{row.fault}: " + " | ".join(problems)

    return done


# -- the table (in the process that reports: the xdist controller, or pytest itself) ----------------------------


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not Path(str(report.fspath)).resolve().is_relative_to(HERE):
        return
    for name, value in report.user_properties:
        if name == ROW_PROPERTY and isinstance(value, dict):
            _rows[report.nodeid] = dict(value)
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if hasattr(report, "wasxfail"):
        result = "xpass (strict: fails)" if report.passed else "xfail (known bug)"
    elif report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        result = f"skipped: {str(reason).removeprefix('Skipped: ')}"
    elif report.failed:
        result = "FAILED" if report.when == "call" else f"ERROR ({report.when})"
    else:
        result = "ok"
    if report.when == "call" or (result != "ok" and _results.get(report.nodeid, "ok") == "ok"):
        _results[report.nodeid] = result


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    head = ("fault", "runner", "outcome (verdicts or exit code)", "message", "lost", "left over", "result")
    widths = (46, 6, 64, 90, 4, 9, 18)
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    for r in rows:
        lost = "yes" if r.get("lost") else "no"
        left = str(len(r.get("leftovers") or [])) if r.get("leftovers") else "none"
        cells = (r["fault"], r["runner"], r["outcome"], r["message"], lost, left, r["result"])
        lines.append("  ".join(_cut(c, w).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
        for what in ("lost", "leftovers"):
            for item in r.get(what) or []:
                lines.append(f"    {what}: {item}")
        if r.get("unclear"):
            lines.append(f"    unclear: {r['unclear']}")
        if r.get("false_green"):
            lines.append("    FALSE GREEN")
    return lines


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    nodeids = sorted(set(_results) | set(_rows), key=lambda n: (n.split("::")[0], n))
    if not nodeids:
        return
    rows = []
    for nodeid in nodeids:
        result = _results.get(nodeid, "?")
        if "runs on demand" in result and nodeid not in _rows:
            continue  # the full tier when not asked for: said once below
        missing = Row(nodeid.split("::")[-1], outcome="(no row: the case did not get to record one)")
        row = dict(_rows.get(nodeid) or missing.to_dict())
        row.update(nodeid=nodeid, result=result, seconds=round(_durations.get(nodeid, 0.0), 1))
        rows.append(row)
    skipped_full = sum(1 for n in nodeids if "runs on demand" in _results.get(n, "") and n not in _rows)
    tr = terminalreporter
    tr.section("fault battery", sep="=", bold=True)
    for line in table_lines(rows):
        tr.line(line)
    false_greens = sum(1 for r in rows if r.get("false_green"))
    losses = sum(1 for r in rows if r.get("lost"))
    leftovers = sum(len(r.get("leftovers") or []) for r in rows)
    known = sum(1 for r in rows if str(r["result"]).startswith("xfail"))
    failed = sum(1 for r in rows if r["result"] not in ("ok",) and not str(r["result"]).startswith(("xfail", "skip")))
    seed = os.environ.get(SEED_ENV, "?")
    tr.line("")
    tr.line(
        f"{len(rows)} rows: {false_greens} false greens, {losses} with losses, {leftovers} leftover processes or "
        f"containers, {known} known bugs (xfail), {failed} failed; seed {seed} (FAULTS_SEED={seed} repeats it)"
        + (f"; {skipped_full} full-tier cases not run (nox -s faults -- --tier full)" if skipped_full else "")
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "results" / f"faults-{stamp}.json"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "format": 1,
                    "seed": seed,
                    "written": time.time(),
                    "summary": {
                        "rows": len(rows),
                        "false_greens": false_greens,
                        "losses": losses,
                        "leftovers": leftovers,
                        "known_bugs": known,
                        "failed": failed,
                    },
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )
        tr.line(f"table: {out}")
    except OSError as exc:
        tr.line(f"could not write {out}: {exc}")
