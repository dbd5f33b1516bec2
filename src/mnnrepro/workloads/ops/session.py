"""The ops session (issue 13): MNN's own op and gradient tests on every backend, one ref, judged against
``fixtures/ops/expectations.toml``.

Same pipeline as the MNIST workload: settings -> preflight_for -> prepare (core, plugins; plus mnn_optest) ->
per cell (ref, variant, ICD) a sweep (optest.sweep: one runner call, one process per test) -> judge (opjudge.py,
each GPU result beside the CPU result of the same build) -> reports (opreport.py). The CPU cell runs first (or
``--cpu-from`` takes an earlier session's, of the same commit).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import __version__, fixtures, prepare, shard, signature, source, validation, variants
from ...cells import Cell, is_validated
from ...contract import read_events
from ...errors import EXIT_MISMATCH, ConfigError
from ...settings import ICD_NAMES, Settings
from .. import base
from . import judge as opjudge
from . import optest, opvalidation
from . import report as opreport

DEFAULT_VARIANTS = ("cpu", "vulkan-image", "vulkan-buffer")
Say = Callable[[str], None]


def check(settings: Settings) -> tuple[str, ...]:
    """Configuration errors known before anything is built: unknown variants, Vulkan without an ICD."""
    names = settings.variants or DEFAULT_VARIANTS
    unknown = [n for n in names if n not in variants.VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}", hint=f"known: {', '.join(variants.NAMES)}")
    if variants.takes_icds(names) and not settings.icds:
        raise ConfigError(
            "the ops session judges Vulkan cells but no Vulkan ICD was given (--icd is empty)",
            hint=f"name at least one: --icd {','.join(ICD_NAMES[:2])}",
        )
    shard_of(settings)
    # The CPU cell is every GPU result's comparison: always run, first.
    return (variants.BASELINE, *[n for n in names if n != variants.BASELINE])


def shard_of(settings: Settings) -> shard.Shard | None:
    """--shard (issue 26): the slice of the selection this session runs, or None for the whole; a ConfigError on a
    bad value, before anything is built."""
    picked = shard.parse(settings.shard)
    if picked is not None and settings.vk_validation != "off":
        # opvalidation's stale VUID rows are judged per cell over the tests that ran: from one shard a row whose
        # VUID another shard's test raised would read stale. Refused until the merge judges them.
        raise ConfigError(
            f"--shard {settings.shard} with --vk-validation {settings.vk_validation}: not supported yet (a shard "
            "cannot judge the validation rows' staleness)",
            hint="run the validated sweep whole, or leave --vk-validation off",
        )
    return picked


def jobs(settings: Settings) -> int:
    return settings.test_jobs or len(os.sched_getaffinity(0))


def _no_such_test(missing: list[str], ref: str, say: Say) -> int:
    say(f"error: --select {','.join(missing)}: no test of {ref} matches (`op/` selects every test under op/,")
    say("  `op/conv*` is a glob, any other pattern names one test exactly; `mnnrepro ops list` shows them)")
    return 2


def list_tests(settings: Settings, *, say: Say = print) -> int:
    """The tests the ref's tree registers (read from its sources, nothing built), those of --select only."""
    matrix = fixtures.load_matrix()
    ref = settings.ref or matrix.default_ref
    source.validate_ref(ref)
    names = optest.declared_names(prepare.resolve_tree(ref, settings, matrix).path)
    patterns = settings.select or ("op/", "grad/")
    if missing := optest.unmatched(names, patterns):
        return _no_such_test(missing, ref, say)
    for name in optest.select(names, patterns):
        say(name)
    return 0


def run_ops(settings: Settings, *, say: Say = print) -> int:
    started = time.monotonic()
    names = check(settings)
    sliced = shard_of(settings)
    matrix = fixtures.load_matrix()
    expectations = opjudge.load_expectations()
    ref = settings.ref or matrix.default_ref
    source.validate_ref(ref)
    selection = settings.select or expectations.selection
    settings, _ = prepare.preflight_for(settings, names, say)
    tree = prepare.resolve_tree(ref, settings, matrix)
    if missing := optest.unmatched(optest.declared_names(tree.path), selection):
        return _no_such_test(missing, ref, say)
    # Before anything is built: an earlier CPU cell of another commit (or none) is known to be no reference now.
    cpu_cell = (
        cpu_reference_cell(settings.cpu_from, tree.commit, settings.precision or "high")
        if settings.cpu_from is not None
        else None
    )
    results = prepare.results_dir(settings, "ops")
    say(f"mnnrepro {__version__}: session ops, results in {results}")
    if sliced is not None:
        say(sliced.partial_line)
    for line in settings.describe():
        say(f"  {line}")
    prepared = prepare.prepare(ref, names, settings, matrix, say)
    built = prepared.built
    t0 = time.monotonic()
    binary = optest.build_binary(built.builder, built.core)
    optest_s = time.monotonic() - t0
    known = binary.tests + tuple(binary.excluded_tests)
    if missing := optest.unmatched(known, selection):
        return _no_such_test(missing, ref, say)
    tests = optest.select(binary.tests, selection)
    not_built = {t: why for t, why in binary.excluded_tests.items() if optest.select((t,), selection)}
    coverage = binary.coverage(tuple(selection))
    say(f"mnn_optest: {len(tests)} tests selected by {', '.join(selection)}; {coverage.line()}")
    header = _header(ref, settings, expectations, prepared, binary, selection)
    if sliced is not None:
        # The whole selection (built or not) is split, so every test, not-built ones too, lands in one shard; every
        # cell, the CPU cell included, runs this shard's tests only.
        header["shard"] = sliced.header([*tests, *not_built])
        mine = set(header["shard"]["tests"])
        tests = [t for t in tests if t in mine]
        not_built = {t: why for t, why in not_built.items() if t in mine}
        say(f"{sliced.label}: {len(mine)} of the {header['shard']['selection_tests']} selected tests")
    cpu_outcomes: dict[str, optest.Outcome] = {}
    if cpu_cell is not None:
        cpu_outcomes, header["cpu_reference"] = cpu_reference(cpu_cell, tests)
        names = tuple(n for n in names if n != variants.BASELINE)
        say(f"CPU reference: {header['cpu_reference']['line']}")
    plan = [Cell(ref, n, i) for n in names for i in (settings.icds if variants.get(n).per_icd else ("-",))]
    session = OpsSession(
        plan, prepared, binary, tests, not_built, expectations, settings, results, say, header, selection,
        cpu_outcomes, started, optest_s,
    )  # fmt: skip
    # A signal is held from here to the reports and raises only while the cells run (base.session_loop, as in
    # session.py): none escapes between the last cell and the reports, which are written whole.
    return base.session_loop(session, say=say)


@dataclass
class OpsSession:
    """MNN's own tests as the session loop runs them (workloads/base.py): one sweep per cell, the CPU cell first;
    a cell an interrupt stopped is judged from what it finished (issue 22); the reports of opreport.py."""

    cells: list[Cell]
    prepared: prepare.Prepared
    binary: optest.Binary
    tests: list[str]
    not_built: dict[str, str]
    expectations: opjudge.Expectations
    settings: Settings
    results: Path
    say: Say
    header: dict[str, Any]
    selection: tuple[str, ...] | list[str]
    cpu_outcomes: dict[str, optest.Outcome]  # the CPU cell's (or --cpu-from's): each GPU result's peer
    started: float  # the session's start (time.monotonic)
    optest_s: float  # the seconds mnn_optest's build (or its cache check) took
    devices: dict[opjudge.CellKey, opjudge.Device] = field(default_factory=dict)
    cell_started: float = 0.0
    known_vuids: list[validation.Known] = field(default_factory=list)  # fixtures/validation.toml, when validating

    def plan(self) -> list[Cell]:
        return self.cells

    def begin(self) -> None:
        """Only the known VUIDs when validating: the results directory was made before mnn_optest was built."""
        if self.settings.vk_validation != "off":
            self.known_vuids = validation.load_known()

    def run(self, cell: Cell) -> dict[str, Any]:
        self.cell_started = time.monotonic()
        results_of, ran, device = _cell(
            cell,
            self.prepared,
            self.binary,
            self.tests,
            self.not_built,
            self.expectations,
            self.cpu_outcomes,
            self.settings,
            self.results,
            self.say,
        )
        if cell.variant == variants.BASELINE:
            self.cpu_outcomes = ran
        self.devices[(cell.ref, self.prepared.built.tree.version, cell.variant, cell.icd)] = device
        checked = self._validated(cell, ran, results_of)
        return _cell_entry(cell, time.monotonic() - self.cell_started, results_of, ran, device, checked)

    def _validated(
        self, cell: Cell, ran: dict[str, optest.Outcome], results: list[opjudge.TestResult]
    ) -> dict[str, Any] | None:
        """--vk-validation on a Vulkan cell: each run test's record (the run judged: the first, or the run alone
        that replaced a timeout) beside its result, and the cell's VUID -> tests table; None otherwise."""
        mode = self.settings.vk_validation
        if not is_validated(cell, mode):
            return None
        cell_dir = self.results / cell.dirname
        canary = opvalidation.canary_record(cell_dir, mode)
        records = {t: opvalidation.assess_test(o.directory, mode, canary) for t, o in ran.items()}
        ended_early = set()
        for r in results:
            if r.test in records:
                # A test in which no op ran on Vulkan is NOT-EXERCISED for validation (its probe's instance alone
                # satisfied assess_test), and a run that did not finish decides no stale row (opvalidation.py).
                r.validation = opvalidation.join_verdict(records[r.test], r.status, r.partial)
                if r.status in opvalidation.ENDED_EARLY or r.first in opvalidation.ENDED_EARLY:
                    ended_early.add(r.test)
        key = (cell.ref, self.prepared.built.tree.version, cell.variant, cell.icd)
        table = opvalidation.cell_table(records, canary, self.known_vuids, key, mode, frozenset(ended_early))
        self.say(f"{cell.id}: {opvalidation.one_line(table)}")
        return table

    def stopped_midway(self, cell: Cell) -> dict[str, Any]:
        """What the stopped cell finished is judged, not lost (issue 22)."""
        version = self.prepared.built.tree.version
        base_s = float(self.settings.timeout_s or self.expectations.timeout_s)
        limits = _limits(self.expectations, cell, version, self.tests, base_s, layer_mode(self.settings, cell))
        results_of, ran, device = _interrupted_cell(
            cell, version, self.tests, self.not_built, self.expectations, self.cpu_outcomes, self.results, limits
        )
        self.devices[(cell.ref, version, cell.variant, cell.icd)] = device
        checked = self._validated(cell, ran, results_of)
        entry = _cell_entry(cell, time.monotonic() - self.cell_started, results_of, ran, device, checked)
        return {**entry, "interrupted": True}

    def summarize(
        self, cells: list[dict[str, Any]], stopped: BaseException | None, not_run: list[Cell]
    ) -> dict[str, Any]:
        self.header["seconds"] = {
            "prepare": round(sum(self.prepared.seconds.values()), 1),
            "optest_build_or_cache_check": round(self.optest_s, 1),
            "total": round(time.monotonic() - self.started, 1),
        }
        return _summary(self.header, cells, not_run, self.expectations, self.selection, self.devices, stopped)

    def write_reports(self, data: dict[str, Any]) -> list[Path]:
        return opreport.write_all(self.results, data)

    def show(
        self, data: dict[str, Any], cells: list[dict[str, Any]], written: list[Path], stopped: BaseException | None
    ) -> None:
        self.say("")
        self.say(opreport.table(data))
        self.say("\nreports: " + ", ".join(str(p) for p in written))

    def exit_code(self, data: dict[str, Any], cells: list[dict[str, Any]]) -> int:
        """EXIT_MISMATCH on any mismatched result, and (--vk-validation on|sync) on any Vulkan cell whose validation
        has a problem (opvalidation.problems: no canary, nothing exercised, new VUIDs, stale rows), one line each."""
        not_run = sum(c["not_run"]["count"] for c in cells)
        flagged = [
            f"session ops: validation of {c['cell']}: {why}"
            for c in cells
            if self.settings.vk_validation != "off"
            and c.get("validation")
            and (why := opvalidation.problems(c["validation"]))
        ]
        partial = f" ({opreport.partial_line(data)})" if data.get("shard") else ""
        if data["all_matched"] and not flagged:
            self.say(
                f"session ops: every test that ran matched its expectation; not run: {not_run} (see the table){partial}"
            )
            return 0
        if partial:
            self.say(f"session ops{partial}")
        if not data["all_matched"]:
            n = sum(c["mismatched"] for c in cells)
            self.say(f"session ops: {n} test result(s) did not match their expectation")
        for line in flagged:
            self.say(line)
        return EXIT_MISMATCH


def cpu_reference_cell(results: Path, commit: str | None, precision: str = "high") -> tuple[Path, dict[str, Any]]:
    """The CPU cell directory of an earlier ops session (``--cpu-from``), checked before anything is built: it must
    be of the same MNN commit and precision, and have finished (a GPU result is never judged beside a CPU result of
    another build of MNN, or beside a CPU run that did not finish)."""
    file = results / "summary.json"
    try:
        earlier = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--cpu-from {results}: cannot read {file} ({exc})", hint="an ops session's results") from exc
    if not isinstance(earlier, dict) or earlier.get("session") != "ops":
        raise ConfigError(f"--cpu-from {results}: not the results of an ops session")
    if not commit:
        raise ConfigError(f"--cpu-from {results}: the commit of this session's MNN tree is not known", hint="a git ref")
    if earlier.get("commit") != commit:
        raise ConfigError(
            f"--cpu-from {results}: its CPU cell ran MNN {str(earlier.get('commit'))[:12]}, this session builds "
            f"{commit[:12]}",
            hint="take the CPU cell of a session of the same commit, or leave --cpu-from out",
        )
    cell = next((c for c in earlier.get("cells", []) if c.get("variant") == variants.BASELINE), None)
    if cell is None or cell.get("interrupted"):
        # A stopped cell's unfinished tests would be no reference (a FAIL never confirmed by its rerun would turn a
        # GPU failure into CPU-FAIL).
        why = "no CPU cell" if cell is None else "a CPU cell that was interrupted"
        raise ConfigError(f"--cpu-from {results}: it has {why}", hint="take a session whose CPU cell finished")
    if (earlier.get("precision") or "high") != precision:
        raise ConfigError(
            f"--cpu-from {results}: its CPU cell ran at precision {earlier.get('precision')}, this session at "
            f"{precision}",
            hint="take a session of the same precision, or leave --cpu-from out",
        )
    line = f"the CPU cell of {results} (MNN {commit[:12]}, run on {earlier.get('host', '?')})"
    about = {"from": str(results), "commit": commit, "host": earlier.get("host"), "line": line}
    return results / Cell(str(cell["ref"]), variants.BASELINE, str(cell["icd"])).dirname, about


def cpu_reference(
    cell: tuple[Path, dict[str, Any]], tests: list[str]
) -> tuple[dict[str, optest.Outcome], dict[str, Any]]:
    """The earlier CPU cell's outcomes of the selected tests: every one must have a finished run there, else none
    is taken (a GPU result judged beside no CPU result would lose its partial-fallback and CPU-FAIL checks)."""
    directory, about = cell
    outcomes = optest.load_cell(directory, tests, "cpu")
    if missing := [t for t in tests if t not in outcomes]:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ConfigError(f"--cpu-from {about['from']}: no finished CPU run of {shown}", hint="select the tests it ran")
    return outcomes, {**about, "tests": len(outcomes), "line": f"{about['line']}: {len(outcomes)} tests"}


def _header(
    ref: str,
    settings: Settings,
    expectations: opjudge.Expectations,
    prepared: prepare.Prepared,
    binary: optest.Binary,
    selection: tuple[str, ...] | list[str],
) -> dict[str, Any]:
    """summary.json's header: what ran, where, with which limits."""
    built = prepared.built
    return {
        "suite": __version__,
        "suite_digest": fixtures.suite_digest(),  # the code and rows that judged it: merge refuses a mix
        "session": "ops",
        "ref": ref,
        "commit": built.tree.commit,
        "mnn_version": built.tree.version,
        "runner": built.runner.name,
        "selection": list(selection),
        "precision": settings.precision or "high",
        "jobs": jobs(settings),
        "timeout_s": float(settings.timeout_s or expectations.timeout_s),
        "timeout_rerun_factor": expectations.rerun_factor,  # a timeout runs again alone under this many times its limit
        # Under the layer a Vulkan cell's limits are this many times their own ([validation_timeout_factor]).
        "validation_timeout_factor": expectations.layer_factor(settings.vk_validation),
        "flake_reruns": expectations.flake_reruns,
        # --vk-validation (issue 25): off, or the mode each Vulkan cell's tests ran under the layer in.
        "vk_validation": settings.vk_validation,
        "host": platform.platform(),
        "python": sys.version.split()[0],
        "toolchain": built.builder.toolchain,
        "registered": len(binary.tests),
        "not_built": binary.excluded,
        # The selection against every op/ and grad/ registration of the tree (issue 21): each one left out named.
        "coverage": _coverage(binary, selection),
        # Why there is no gdb ("" with one): every crash is then judged by its signal only (issue 22).
        "gdb_absent": prepared.gdb_absent,
    }


def _summary(
    header: dict[str, Any],
    cells: list[dict[str, Any]],
    not_run: list[Cell],
    expectations: opjudge.Expectations,
    selection: tuple[str, ...] | list[str],
    devices: dict[opjudge.CellKey, opjudge.Device],
    stopped: BaseException | None,
) -> dict[str, Any]:
    """summary.json: the header, each cell's results and counts, stale rows, the session's status."""
    _suspects(cells)
    judged = []
    for c in cells:
        results_of_cell = [opjudge.TestResult(**t) for t in c["tests"]]
        c.update(opjudge.summarize(results_of_cell))
        if not c.get("interrupted"):  # a stopped cell's unfinished tests say nothing of their rows
            judged.append(((header["ref"], header["mnn_version"], c["variant"], c["icd"]), results_of_cell))
    # Rows that covered a finished cell and a selected test but matched nothing (issue 21): reported. From one shard
    # a row whose test ran in another shard would read stale: judged only on the whole (mnnrepro merge, issue 26).
    sliced = header.get("shard")
    stale = [] if sliced else opjudge.stale_rows(expectations, judged, tuple(selection), devices)
    data = {**header, "cells": cells, "stale": stale}
    if sliced:
        data["stale_not_judged"] = (
            f"shard {sliced['index']}/{sliced['total']}: stale rows are judged only over every shard (mnnrepro merge)"
        )
    data["all_matched"] = stopped is None and bool(cells) and all(c["mismatched"] == 0 for c in cells)
    data["status"] = "INTERRUPTED" if stopped else ("MATCHED" if data["all_matched"] else "MISMATCHED")
    if stopped is not None:
        data["not_run"] = [c.id for c in not_run]
    return data


def _coverage(binary: optest.Binary, selection: tuple[str, ...] | list[str]) -> dict[str, Any]:
    cov = binary.coverage(tuple(selection))
    return {"built": len(cov.built), "registered": len(cov.registered), "left_out": cov.left_out}


def _cell_entry(
    cell: Cell,
    seconds: float,
    results: list[opjudge.TestResult],
    ran: dict[str, optest.Outcome],
    device: opjudge.Device,
    checked: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "cell": cell.id,
        "ref": cell.ref,
        "variant": cell.variant,
        "icd": cell.icd,
        "seconds": round(seconds, 1),
        "device": device.name or _active(ran),
        "device_facts": device.as_dict(),  # what the device, vendor and driver keys of rows were matched against
        "tests": [r.as_dict() for r in results],
        **({"validation": checked} if checked is not None else {}),  # the VUID -> tests table (opvalidation.py)
    }


def _cell(
    cell: Cell,
    prepared: prepare.Prepared,
    binary: optest.Binary,
    tests: list[str],
    not_built: dict[str, str],
    expectations: opjudge.Expectations,
    cpu_outcomes: dict[str, optest.Outcome],
    settings: Settings,
    results_root: Path,
    say: Say,
) -> tuple[list[opjudge.TestResult], dict[str, optest.Outcome], opjudge.Device]:
    """One cell's sweep and its judged results, and the cell's device. Before the sweep the device is not known:
    SKIP rows and reruns come from the rows that name none (reruns_before); each result is judged by the row for
    the device its own run probed (issue 22)."""
    built = prepared.built
    version = built.tree.version
    results, to_run = _not_run_before(cell, version, tests, not_built, expectations)
    say(
        f"{cell.id}: {len(to_run)} tests, {jobs(settings)} at a time; not run: {len(tests) - len(to_run)} by SKIP "
        f"rows, {len(not_built)} not built"
    )
    base_s = float(settings.timeout_s or expectations.timeout_s)
    spec = optest.SweepSpec(
        cell=cell,
        binary=binary,
        tests=to_run,
        runner=built.runner,
        plugin=built.plugins.get(variants.get(cell.variant).build_as or cell.variant),
        icd=prepared.icds.get(cell.icd),
        precision=variants.get(cell.variant).precision or settings.precision or "high",
        timeout_s=base_s,
        jobs=jobs(settings),
        result_dir=results_root / cell.dirname,  # one directory per test below it
        gdb_path=prepared.gdb_path,
        faults=settings.faults,
        limits=_limits(expectations, cell, version, to_run, base_s, layer_mode(settings, cell)),
        reruns={t: expectations.reruns_before(cell.ref, version, cell.variant, cell.icd, t) for t in to_run},
        rerun_factor=expectations.rerun_factor,
        vk_validation=settings.vk_validation,
        canary_driver=built.driver if settings.vk_validation != "off" else None,  # the canary (opvalidation.py)
    )
    ran = optest.sweep(spec, say=say)
    judged, cell_device = _judge_cell(cell, version, ran, expectations, cpu_outcomes)
    return sorted(results + judged, key=lambda r: r.test), ran, cell_device


def layer_mode(settings: Settings, cell: Cell) -> str:
    """The mode a cell's tests run under the validation layer in: --vk-validation on a Vulkan cell, else off."""
    return settings.vk_validation if is_validated(cell, settings.vk_validation) else "off"


def _limits(
    expectations: opjudge.Expectations, cell: Cell, version: str | None, tests: list[str], base_s: float, layer: str
) -> dict[str, float]:
    """Each test's limit in this cell: its own ([[slow]] rows), times the layer's factor when it runs under the
    validation layer (a heavy test then gets its time the first time, instead of being killed and run again alone)."""
    return {t: expectations.limit(cell.ref, version, cell.variant, cell.icd, t, base_s, layer) for t in tests}


def _not_run_before(
    cell: Cell, version: str | None, tests: list[str], not_built: dict[str, str], expectations: opjudge.Expectations
) -> tuple[list[opjudge.TestResult], list[str]]:
    """The cell's tests that are not run at all (SKIP rows: the rows that name no device; sources not built), and
    those to run."""
    results: list[opjudge.TestResult] = []
    to_run: list[str] = []
    for test in tests:
        row = expectations.of(cell.ref, version, cell.variant, cell.icd, test)
        if row is not None and row.status == "SKIP":
            results.append(opjudge.not_run(test, row.reason, opjudge.SKIPPED_BY_ROW, row))
        else:
            to_run.append(test)
    results += [opjudge.not_run(t, why, opjudge.not_built_kind(why)) for t, why in not_built.items()]
    return results, to_run


def _judge_cell(
    cell: Cell,
    version: str | None,
    ran: dict[str, optest.Outcome],
    expectations: opjudge.Expectations,
    cpu_outcomes: dict[str, optest.Outcome],
) -> tuple[list[opjudge.TestResult], opjudge.Device]:
    """Each outcome judged by the row for the device its own run probed (else the cell's), beside the CPU's."""
    devices = {test: device_of(outcome) for test, outcome in ran.items()}
    cell_device = next((d for d in devices.values() if d.known), opjudge.Device())
    results = []
    for test, outcome in ran.items():
        device = devices[test] if devices[test].known else cell_device
        row = expectations.of(cell.ref, version, cell.variant, cell.icd, test, device)
        sig = signature.of_crash(outcome.crash) if outcome.crash else ()
        results.append(opjudge.judge(outcome, cpu_outcomes.get(test), cell.backend, row, sig, expectations.glue))
    return results, cell_device


def _interrupted_cell(
    cell: Cell,
    version: str | None,
    tests: list[str],
    not_built: dict[str, str],
    expectations: opjudge.Expectations,
    cpu_outcomes: dict[str, optest.Outcome],
    results_root: Path,
    limits: dict[str, float],
) -> tuple[list[opjudge.TestResult], dict[str, optest.Outcome], opjudge.Device]:
    """The cell an interrupt stopped, read back from its directory: every test that finished is judged as the
    sweep would judge it. A test that did not finish, or was killed at its limit among others and not yet run again
    alone, has no result: not run (interrupted), never a TIMEOUT it did not earn."""
    results, to_run = _not_run_before(cell, version, tests, not_built, expectations)
    ran = optest.load_cell(results_root / cell.dirname, to_run, cell.backend, limits)
    judged, device = _judge_cell(cell, version, ran, expectations, cpu_outcomes)
    why = "the session was interrupted before it finished"
    results += judged + [opjudge.not_run(t, why, opjudge.INTERRUPTED) for t in to_run if t not in ran]
    return sorted(results, key=lambda r: r.test), ran, device


def device_of(outcome: optest.Outcome) -> opjudge.Device:
    """The device a test ran on, from the `backend` event of its first run that has one (a run that died before
    probing has none; then a rerun's); unknown when none did."""
    for run in outcome.runs():
        if run.directory is not None:
            device = opjudge.Device.of_backend(read_events(run.directory / "events.jsonl").backend)
            if device.known:
                return device
    return opjudge.Device()


def _active(ran: dict[str, optest.Outcome]) -> str:
    """The backend MNN used, for a cell whose probe named no device."""
    for outcome in ran.values():
        if outcome.directory is not None:
            record = read_events(outcome.directory / "events.jsonl")
            if record.backend:
                return record.device_name or str(record.backend.get("active", ""))
    return ""


def _suspects(cells: list[dict[str, Any]]) -> None:
    """Driver suspects: per variant, a failure on one ICD while another ICD passes the test."""
    by_variant: dict[str, dict[str, list[opjudge.TestResult]]] = {}
    objects: dict[tuple[str, str], list[opjudge.TestResult]] = {}
    for c in cells:
        if c["icd"] == "-":
            continue
        results = [opjudge.TestResult(**t) for t in c["tests"]]
        objects[(c["variant"], c["icd"])] = results
        by_variant.setdefault(c["variant"], {})[c["icd"]] = results
    for by_icd in by_variant.values():
        opjudge.mark_driver_suspects(by_icd)
    for c in cells:
        if (c["variant"], c["icd"]) in objects:
            c["tests"] = [r.as_dict() for r in objects[(c["variant"], c["icd"])]]
