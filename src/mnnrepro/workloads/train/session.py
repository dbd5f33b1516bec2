"""One session = build what it needs, run its cells, judge them, report. Sessions differ only in data."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ... import (
    __version__,
    fixtures,
    gradcheck,
    interrupts,
    prepare,
    report,
    reuse,
    shard,
    source,
    validation,
    validation_frames,
    variants,
)
from ...cells import Cell, CellRun, driver_argv, is_validated, run_cell
from ...contract import Device, RunRecord
from ...errors import EXIT_MISMATCH, ConfigError
from ...judge import ACCEPTS, FAIL, PASS, TRAINS, Check, Verdict, combine_repeats, judge
from ...prepare import Prepared
from ...runner import Completed
from ...settings import ICD_NAMES, Settings
from .. import base
from . import shards
from . import workload as train
from .models.lenet import sgd_config
from .workload import Training

VALIDATION_SESSION = "vulkan_validation"
# Session name -> the variants it judges. A CPU baseline is added wherever a GPU variant is compared to it.
SESSIONS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu",),
    "vulkan_image": ("vulkan-image",),
    "vulkan_buffer": ("vulkan-buffer",),
    "vulkan": ("vulkan-image", "vulkan-buffer"),
    "matrix": ("vulkan-image", "vulkan-buffer"),  # every ref in fixtures/matrix.toml
    "vulkan_fp16": ("vulkan-buffer-low",),  # buffer mode at precision low
    "opencl": ("opencl",),  # needs a GPU-type OpenCL device; PoCL (CPU type) gives NOT-EXERCISED
    # Every workload of [workloads] (issue 24) with these variants, one table; --variants picks others.
    "workloads": ("cpu", "vulkan-image", "vulkan-buffer"),
    # The Vulkan cells under the Khronos validation layer (issue 25): a VUID no row of fixtures/validation.toml
    # lists, or a cell whose canary the layer did not report, fails the cell.
    VALIDATION_SESSION: ("vulkan-image", "vulkan-buffer"),
}


def cells_for(ref: str, names: tuple[str, ...], icds: tuple[str, ...], workload: str = train.NAME) -> list[Cell]:
    """The CPU baseline first (wherever a GPU variant is compared with it), then each variant: once per ICD
    where it takes one, else once."""
    cells = []
    if variants.BASELINE in names or any(n != variants.BASELINE for n in names):
        cells.append(Cell(ref, variants.BASELINE, "-", workload))
    for name in names:
        if name == variants.BASELINE:
            continue
        per = [Cell(ref, name, i, workload) for i in icds] if variants.get(name).per_icd else []
        cells += per or [Cell(ref, name, "-", workload)]
    return cells


@dataclass
class CellPlan:
    """How one cell runs: its expectation (and the row entry covering the ref), whether it dumps and checks
    gradients, and the workload with the driver arguments that follow."""

    cell: Cell
    expectation: fixtures.Expectation | None
    covered_by: str
    grads: bool
    workload: Training
    timeout_s: float


@dataclass
class MnistRef:
    """The MNIST training workload on one built ref: plans each cell, runs it (with repeats), judges it
    against its expectation, the CPU baseline of the same build and the gradient golden."""

    prepared: Prepared
    settings: Settings
    matrix: fixtures.Matrix
    results: Path
    say: Callable[[str], None]
    baseline: RunRecord | None = None
    baseline_checks: list[Check] = field(default_factory=list)
    # The device each ICD's cells ran on, once one ran (a row may name it: issue 22); later cells plan by it.
    devices: dict[str, Device] = field(default_factory=dict)
    name: str = train.NAME  # the training workload ([workloads.NAME])
    session: str = ""  # the session's name (the validation session judges VUIDs)

    def __post_init__(self) -> None:
        self.built = self.prepared.built
        self.gdb_path = self.prepared.gdb_path
        self.icds = self.prepared.icds
        self.workload = train.workload_of(self.matrix, self.settings, self.name)
        self.spec = self.matrix.workloads.get(self.name)
        self.known = tuple(r for r in self.matrix.expectations if r.outcome == "reproduce")
        self.known_vuids = validation.load_known() if self.settings.vk_validation != "off" else []
        self.version = self.built.tree.version
        # A workload may be checked against another's golden (the static workload: Lenet's, `golden = "mnist"`).
        committed = fixtures.golden_dir(self.spec.golden_workload if self.spec else train.NAME, self.built.ref)
        # A ref without a committed golden is checked against the numpy reference (CPU cell) and the CPU run of
        # this same build (GPU cells): never failed for a file a user cannot have.
        self.golden_dir: Path | None = committed if (committed / "provenance.json").is_file() else None

    def header(self) -> dict[str, Any]:
        b = self.built
        return {
            "ref": b.ref,
            "commit": b.tree.commit,
            "mnn_version": self.version,
            "source": str(b.tree.path),
            "source_origin": b.tree.origin,
            "compat": b.info.compat_reason,
            "core_key": b.core.key,
            "toolchain": b.builder.toolchain,
            "runner": b.runner.name,
            "image_digest": getattr(b.runner, "image_id", None),
            "icds": {n: str(i.manifest) if i.manifest else "host default" for n, i in self.icds.items()},
            "build_seconds": round(b.build_s, 1),
            "prepare_seconds": {k: round(v, 2) for k, v in self.prepared.seconds.items()},
            "builds": b.builder.log.events,
            "golden": str(self.golden_dir) if self.golden_dir else "none committed: numpy reference + this run's CPU",
            # Why there is no gdb ("" with one): every crash is then judged by its signal only (issue 22).
            "gdb_absent": self.prepared.gdb_absent,
        }

    def plan(self, cell: Cell) -> CellPlan:
        """The cell's plan by the row it will most likely be judged by: the row for its ICD's device where a cell
        of that ICD ran already, else the first row covering it on any device (a row may name the device, known
        only once a cell ran: ``resolve`` takes the row for the device the run probed)."""
        ref, known = self.built.ref, self.devices.get(cell.icd)
        if known is not None:
            row = self.matrix.expectation(ref, cell.variant, cell.icd, self.version, known, cell.workload)
            return self.plan_for(cell, row)
        return self.plan_for(
            cell, self.matrix.likely_expectation(ref, cell.variant, cell.icd, self.version, cell.workload)
        )

    def resolve(self, plan: CellPlan, run: CellRun) -> CellPlan | None:
        """After a run: the plan of the row for the device it ran on, when that is another row than the plan's
        (None when it is the same). The row is the one the cell is judged by; no row for the device is no
        expectation (a cell of the host ICD on a GPU no row names), never another device's row."""
        cell, device = plan.cell, run.record.device
        if device.known:
            self.devices.setdefault(cell.icd, device)
        row = self.matrix.expectation(self.built.ref, cell.variant, cell.icd, self.version, device, cell.workload)
        return None if row == plan.expectation else self.plan_for(cell, row)

    def plan_for(self, cell: Cell, expectation: fixtures.Expectation | None) -> CellPlan:
        ref, wl = self.built.ref, self.workload
        if variants.get(cell.variant).precision:
            wl = replace(wl, precision=variants.get(cell.variant).precision)
        fit = self.spec.fitted(cell.variant, cell.icd) if self.spec and not self.settings.steps else None
        if fit is not None:  # measured to fit the driver's time limit ([[workloads.NAME.fit]])
            wl = replace(wl, steps=fit.steps)
        covered_by = (expectation.covers(ref, self.version) or "") if expectation else ""
        timeout_s = self.prepared.timeout_for(cell.backend)
        # Cells that should train also dump gradients and start from the golden's initial parameters; a cell
        # expected to crash does not (a dump would move its crash from sgd_step to grad_dump, hiding the
        # signature of the known bug).
        if expectation is not None and expectation.outcome == "reproduce":
            return CellPlan(cell, expectation, covered_by, False, wl, timeout_s)
        # Dumps only at the golden's steps this workload reaches: `--steps 1` has no step 1 (it is n/a, not run).
        if self.golden_dir is not None:
            args = gradcheck.driver_args(self.golden_dir, run_steps=wl.steps)
        elif cell.variant == variants.BASELINE:
            # No golden: the CPU cell saves its initial parameters; its dumps become this session's golden.
            reached = gradcheck.steps_within(gradcheck.golden_steps(self.matrix), wl.steps)[0]
            init = self.results / "cells" / cell.dirname / "init"
            args = ("--dump-steps", ",".join(str(s) for s in reached), "--save-init", str(init))
        elif (self.session_golden / "provenance.json").is_file():
            args = gradcheck.driver_args(self.session_golden, run_steps=wl.steps)
        else:
            self.say(f"  {cell.id}: no gradient golden (the CPU cell made none); gradients not compared")
            return CellPlan(cell, expectation, covered_by, False, wl, timeout_s)
        return CellPlan(cell, expectation, covered_by, True, replace(wl, extra_args=args), timeout_s)

    @property
    def session_golden(self) -> Path:
        """Where a ref without a committed golden keeps the CPU cell's (MNIST's where it always was)."""
        where = self.results / "golden"
        return where / self.built.ref if self.name == train.NAME else where / self.name / self.built.ref

    def reuse_key(self, plan: CellPlan) -> tuple[str, dict[str, Any]] | None:
        """The content key of a CPU baseline that may be taken from the cache (reuse.py); None where no run is."""
        settings, b = self.settings, self.built
        if plan.cell.variant != variants.BASELINE or not settings.reuse or settings.repeat != 1 or settings.faults:
            return None
        manifests = [fixtures.MNIST / "MANIFEST.json"]
        if self.golden_dir is not None:
            manifests.append(self.golden_dir / "MANIFEST.json")
        parts = reuse.key_parts(
            core_key=b.core.key,
            driver=b.driver,
            runner=b.runner.name,
            image=getattr(b.runner, "image_id", None),
            argv=plan.workload.driver_args(),
            results=self.results,
            manifests=manifests,
        )
        return reuse.key_of(parts), parts

    def execute(self, plan: CellPlan, result_dir: Path, key: str | None) -> tuple[CellRun, dict[str, Any] | None]:
        """The cell's run: from the cache where its key has one, else the driver's. gdb (seconds of start and
        symbol loading) only where a crash is expected or nothing is; a cell expected to train that crashes
        anyway runs once more under gdb for its backtrace and signature."""
        b, cell = self.built, plan.cell
        if key is not None:
            loaded = reuse.load(b.core.variant_dir / "reuse", key, cell, result_dir)
            if loaded is not None:
                self.say(f"  reused the stored run of this build and workload [{key[:12]}] (--no-reuse runs it)")
                return loaded
        trains = plan.expectation is not None and plan.expectation.outcome in TRAINS
        run = self._drive(plan, result_dir, gdb=not trains)
        crashed = run.completed.signal is not None and not run.completed.timed_out and not run.completed.killed_by
        if trains and crashed and self.gdb_path is not None:
            self.say(f"  {cell.id}: {run.completed.signal_name} without gdb; once more under gdb for the backtrace")
            again = self._drive(plan, result_dir / "gdb-rerun", gdb=True)
            if again.crash is not None:
                for name in ("crash.json", "backtrace.txt"):
                    if (again.result_dir / name).is_file():
                        shutil.copy2(again.result_dir / name, result_dir / name)
                run = replace(run, crash=again.crash, gdb=True)
        return run, None

    def _drive(self, plan: CellPlan, result_dir: Path, *, gdb: bool) -> CellRun:
        b, cell = self.built, plan.cell
        return run_cell(
            cell,
            driver=b.driver,
            plugin=b.plugins.get(cell.variant),
            icd=self.icds.get(cell.icd),
            workload=plan.workload,
            timeout_s=plan.timeout_s,
            runner=b.runner,
            result_dir=result_dir,
            use_gdb=gdb and self.gdb_path is not None,
            gdb_path=self.gdb_path,
            faults=self.settings.faults if cell.backend == "vulkan" else (),
            say=self.say,
            vk_validation=self.settings.vk_validation,
        )

    def run_once(self, plan: CellPlan, result_dir: Path) -> tuple[CellRun, Verdict]:
        b, cell = self.built, plan.cell
        started = time.monotonic()
        keyed = self.reuse_key(plan)
        reused: dict[str, Any] | None = None
        try:
            run, reused = self.execute(plan, result_dir, keyed[0] if keyed else None)
            run, plan = self._by_device(plan, run, result_dir)
            extra: tuple[Check, ...] = ()
            if plan.grads and run.completed.returncode == 0 and not run.completed.timed_out:
                extra = (_gradient_check(run, cell, self.golden_dir, self.session_golden, plan.workload, self),)
            baseline, unmeasured = self._baseline_for(plan)
            verdict = judge(
                run,
                plan.expectation,
                steps=plan.workload.steps,
                checks=self.matrix.checks_for(self.name),
                unmeasured=unmeasured,
                baseline=baseline,
                known_bugs=self.known,
                extra_checks=extra,
                baseline_checks=self.baseline_checks,
                covered_by=plan.covered_by,
                gdb_absent=self.prepared.gdb_absent,
            )
        except Exception as exc:  # a malformed file of one cell must not end the session
            run, verdict = unreadable_cell(cell, result_dir, plan.expectation, exc)
        if keyed is not None and reused is None and verdict.verdict == PASS and verdict.matched:
            try:
                reuse.save(b.core.variant_dir / "reuse", keyed[0], keyed[1], run)
            except OSError as exc:  # a full disk costs the next session a run, never this session's verdicts
                self.say(f"  WARNING: could not store the run for reuse: {exc}")
        verdict.evidence["timeout_s"] = plan.timeout_s
        if plan.expectation is not None:  # the row that judged it: stale rows are judged over every cell by it
            verdict.evidence["row"] = plan.expectation.describe()
        if is_validated(cell, self.settings.vk_validation) and reused is None:
            verdict = self.validated(plan, run, verdict)
        if (result_dir / "gdb-rerun").is_dir():  # crashed without gdb: the backtrace is from a rerun under gdb
            verdict.evidence["gdb_rerun"] = str(result_dir / "gdb-rerun")
        verdict.evidence["reused"] = reused  # the stored run judged today (its key, where and when it ran), or None
        # Where the cell's seconds went (bench/warm_profile.py): the run as the harness saw it, then the judging.
        ran = 0.0 if reused else run.completed.duration_s
        verdict.evidence["seconds"] = {"run": round(ran, 2), "judge": round(time.monotonic() - started - ran, 2)}
        return run, verdict

    def validated(self, plan: CellPlan, run: CellRun, verdict: Verdict) -> Verdict:
        """The cell's validation record in its evidence (and validation.json), with where MNN issued each VUID
        (validation_frames.py: reruns under gdb, never judged). In the validation session a cell
        whose canary the layer did not report, or with a VUID no row lists, FAILs, and a listed VUID that did not
        appear is a mismatch (stale, like UNEXPECTED-PASS); elsewhere the training verdict stays what it is."""
        cell, result_dir = plan.cell, run.result_dir
        record = validation.assess(
            result_dir,
            ref=self.built.ref,
            version=self.version,
            variant=cell.variant,
            icd=cell.icd,
            mode=self.settings.vk_validation,
            known=self.known_vuids,
            device=run.record.device,  # rows learned on one GPU (vendor = "NVIDIA") hold there only
        )
        self._attribute(record, plan, run)
        validation.write_record(result_dir, record)
        verdict.evidence["validation"] = record
        if self.session != VALIDATION_SESSION:
            return verdict
        line = validation.one_line(record)
        if record["status"] != validation.EXERCISED or record["findings"]:
            verdict.evidence["training_verdict"] = verdict.verdict
            return replace(verdict, verdict=FAIL, matched=False, reason=f"{line} (training: {verdict.verdict})")
        if record["stale"]:
            return replace(verdict, matched=False, reason=f"{line}; {verdict.reason}")
        return replace(verdict, reason=f"{line}; {verdict.reason}")

    def _attribute(self, record: dict[str, Any], plan: CellPlan, run: CellRun) -> None:
        """Each VUID's MNN frames (validation_frames.attribute): the cell's driver argv again, with its own
        environment, once per VUID under the gdb the cell's runs use."""
        b, cell, result_dir = self.built, plan.cell, run.result_dir
        rerun = None
        if (result_dir / "cell.json").is_file():
            argv = driver_argv(cell, b.driver, b.plugins.get(cell.variant), plan.workload, result_dir, fixtures.MNIST)
            rerun = validation_frames.rerun_of(
                result_dir, argv, self.settings.vk_validation, plan.timeout_s, run.completed.duration_s
            )
        validation_frames.attribute(
            record,
            result_dir,
            rerun,
            runner=b.runner,
            gdb_path=self.gdb_path,
            why_no_gdb=self.prepared.gdb_absent,
            enabled=self.settings.vk_attribution,
            say=self.say,
        )

    def _baseline_for(self, plan: CellPlan) -> tuple[RunRecord | None, dict[str, str]]:
        """The CPU run a cell is compared with, and the checks not measured for it (the workload's, and for a
        cell fitted to fewer steps than the CPU ran: the CPU's first steps, its accuracy n/a)."""
        unmeasured = dict(self.spec.unmeasured) if self.spec else {}
        steps, base = plan.workload.steps, self.baseline
        if base is None or steps >= len(base.losses):
            return base, unmeasured
        unmeasured["accuracy_vs_cpu"] = f"fitted to {steps} steps; the CPU's test accuracy is after {len(base.losses)}"
        return replace(base, steps=base.steps[:steps]), unmeasured

    def _by_device(self, plan: CellPlan, run: CellRun, result_dir: Path) -> tuple[CellRun, CellPlan]:
        """The run and plan the cell is judged by: the row for the device it ran on. Where that row plans the run
        otherwise (gradient dumps: a crash expected or not), the cell runs again by it; where no row names the
        device the first run stands (judged with no expectation, a mismatch that asks for a row)."""
        again = self.resolve(plan, run)
        if again is None:
            return run, plan
        if again.expectation is not None and (again.grads, again.workload) != (plan.grads, plan.workload):
            row = again.expectation.describe()
            self.say(f"  {plan.cell.id}: ran on {run.record.device_name}; its row is {row}: once more by that row")
            shutil.rmtree(result_dir, ignore_errors=True)
            run, _ = self.execute(again, result_dir, None)
        return run, again

    def run(self, cell: Cell) -> tuple[CellRun, Verdict]:
        """Every repeat of one cell, combined into one row (judge.combine_repeats)."""
        repeat = self.settings.repeat
        runs: list[tuple[CellRun, Verdict]] = []
        for rep in range(repeat):
            plan = self.plan(cell)  # after the first run, by the row for the device it ran on
            self.say(f"running {cell.id}{f' (repeat {rep + 1}/{repeat})' if repeat > 1 else ''} ...")
            cell_dir = self.results / "cells" / cell.dirname
            run, verdict = self.run_once(plan, cell_dir / f"repeat-{rep + 1}" if repeat > 1 else cell_dir)
            if cell.variant == variants.BASELINE and rep == 0:
                self.baseline, self.baseline_checks = run.record, verdict.checks
            mark = "as expected" if verdict.matched else "MISMATCH"
            self.say(f"  {verdict.verdict} ({mark}): {verdict.reason}")
            runs.append((run, verdict))
        return combine_repeats(runs)


def unreadable_cell(
    cell: Cell, result_dir: Path, expectation: fixtures.Expectation | None, exc: Exception
) -> tuple[CellRun, Verdict]:
    """A cell whose files could not be read or judged (a torn crash record, a corrupt dump or golden, events that
    break the contract): FAIL with the reason, the traceback beside its files; the session goes on."""
    result_dir.mkdir(parents=True, exist_ok=True)
    trace = result_dir / "harness-error.txt"
    trace.write_text("".join(traceback.format_exception(exc)))
    reason = f"the cell's output could not be read or judged: {type(exc).__name__}: {str(exc)[:300]} (see {trace})"
    run = CellRun(cell, result_dir, Completed(argv=(), returncode=-1, duration_s=0.0), RunRecord(), None, [], False)
    expected = ACCEPTS.get(expectation.outcome, "") if expectation else ""
    evidence = {"result_dir": str(result_dir), "harness_error": str(trace)}
    return run, Verdict(FAIL, False, expected, reason, [], evidence)


def _gradient_check(
    run: CellRun, cell: Cell, golden_dir: Path | None, session_golden: Path, workload: Training, ref_run: MnistRef
) -> Check:
    """Gradients and updates of the first steps: against the committed golden where there is one; else the CPU
    cell against the workload's float64 numpy reference (and, passing, it becomes this session's golden) and
    every GPU cell against that CPU run of the same build. Only the steps the workload ran are compared; the
    golden's others are n/a (not run), said in the check's detail. The workload's tensors of exact value zero
    are judged by an absolute limit ([workloads.NAME.gradcheck])."""
    precision, run_steps, matrix, ref = workload.precision, workload.steps, ref_run.matrix, ref_run.built.ref
    zero = train.zero_rule(ref_run.spec)
    if golden_dir is not None:
        grad = gradcheck.check_run(
            run.result_dir, golden_dir, cell.backend, precision, matrix=matrix, run_steps=run_steps, zero=zero
        )
        return Check("gradients", grad.passed, grad.summary(), None, str(run.result_dir / "gradcheck"))
    if cell.variant == "cpu":
        steps, not_run = gradcheck.steps_within(gradcheck.golden_steps(matrix), run_steps)
        ref_report = train.check_against_reference(
            ref_run.spec,
            gradcheck.Dumps(run.result_dir / "grads", run.result_dir / "init"),
            steps,
            sgd=sgd_config(run.record.start.get("config") or {}),
            losses=run.record.losses,
            artifacts=run.result_dir / "gradcheck",
            not_run=(not_run, run_steps),
        )
        detail = f"no committed golden for {ref}: vs the float64 numpy reference: {ref_report.summary()}"
        if ref_report.passed:
            dest = make_session_golden(run, steps, session_golden, ref, workload)
            detail += f"; this run is the session's golden for the GPU cells ({dest})"
        return Check("gradients", ref_report.passed, detail, None, str(run.result_dir / "gradcheck"))
    grad = gradcheck.check_run(
        run.result_dir, session_golden, cell.backend, precision, matrix=matrix, run_steps=run_steps, zero=zero
    )
    return Check(
        "gradients",
        grad.passed,
        f"no committed golden for {ref}: vs the CPU run of this build: {grad.summary()}",
        None,
        str(run.result_dir / "gradcheck"),
    )


def make_session_golden(run: CellRun, steps: list[int], dest: Path, ref: str, workload: Training) -> Path:
    """A golden-format tree (gradcheck.Dumps + provenance.json) made from a CPU run that passed the numpy
    reference check; lives in the results dir, never in fixtures/. Its provenance names its workload and model
    as a committed golden's does (`gradcheck verify` reads a mnistv2 session golden as mnistv2's)."""
    staging = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copytree(run.result_dir / "init", staging / "init")
    for step in steps:
        shutil.copytree(run.result_dir / "grads" / f"step{step}", staging / f"step{step}")
    shapes = train.MODELS[workload.model].shapes
    provenance = {
        "format": gradcheck.GOLDEN_FORMAT,
        "ref": ref,
        "origin": "this session's CPU run (no committed golden); checked against the numpy reference first",
        "run": str(run.result_dir),
        "config": run.record.start.get("config") or {},
        "steps": steps,
        "losses": run.record.losses[: len(steps)],
        "parameters": [{"name": n, "shape": list(shape)} for n, shape in shapes.items()],
        **train.golden_identity(workload),
    }
    (staging / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(staging, dest)
    return dest


def check_session(name: str, settings: Settings, names: tuple[str, ...] | None = None) -> None:
    """Configuration errors a session can know before anything is built or any directory is made."""
    if variants.takes_icds(names or SESSIONS[name]) and not settings.icds:
        raise ConfigError(
            f"session {name} judges Vulkan cells but no Vulkan ICD was given (--icd is empty)",
            hint=f"name at least one: --icd {','.join(ICD_NAMES[:2])} (known: {', '.join(ICD_NAMES)})",
        )


def shard_cells(cells: list[Cell], picked: shard.Shard) -> tuple[list[Cell], dict[str, Any]]:
    """Shard K's cells of a training session's plan (issue 26), in plan order, and summary.json's ``shard`` record:
    its slice of the non-CPU cells (shard.py's stride over the fixed-seed shuffle of their ids), plus the CPU
    baseline of each (ref, workload) that slice holds and no other (a GPU cell is judged against the CPU run of its
    own ref and workload: tracking, and gradients where no golden is committed). A session with no GPU cell, or a
    shard that would hold none, is a ConfigError: there is nothing to split, or the shard would judge nothing."""
    gpu = [c.id for c in cells if c.variant != variants.BASELINE]
    if not gpu:
        raise ConfigError(
            f"--shard {picked.index}/{picked.total}: this session plans no GPU cell, only CPU baselines: nothing to "
            "split (shards split the GPU cells, each running the CPU baselines its own cells need)",
            hint="run the session whole (drop --shard and MNNREPRO_SHARD)",
        )
    record = picked.header(gpu)
    mine = set(record["tests"])
    if not mine:
        raise ConfigError(
            f"--shard {picked.index}/{picked.total}: the session plans {len(gpu)} GPU cell(s); shard {picked.index} "
            "would hold none",
            hint=f"split it into at most {len(gpu)} shards",
        )
    needed = {(c.ref, c.workload) for c in cells if c.id in mine}
    kept = [c for c in cells if c.id in mine or (c.variant == variants.BASELINE and (c.ref, c.workload) in needed)]
    record["cpu_cells"] = [c.id for c in kept if c.variant == variants.BASELINE]
    record["plan"] = [c.id for c in cells]  # the whole session's cells: the merge checks every shard planned these
    return kept, record


def session_refs(name: str, settings: Settings, matrix: fixtures.Matrix) -> list[str]:
    """`matrix` runs every ref of the ci and push tiers (or the one asked for); the others run one ref."""
    if settings.ref:
        return [settings.ref]
    return matrix.refs_for(("ci", "push")) if name == "matrix" else [matrix.default_ref]


def _mark_interrupted(data: dict[str, Any], stopped: BaseException, not_run: list[Cell]) -> None:
    """The summary of an interrupted session: every planned cell that did not finish is INTERRUPTED."""
    reason = f"not finished: the session was interrupted ({interrupts.signal_name(stopped)})"
    data["cells"] += [report.interrupted_cell(c.id, c.ref, c.variant, c.icd, reason) for c in not_run]
    data["status"] = report.INTERRUPTED
    data["all_matched"] = False


@dataclass
class MnistSession:
    """The MNIST workload of one session, as the session loop runs it (workloads/base.py): the cells of every
    ref, each ref prepared (built) when its first cell comes; the reports of report.py."""

    name: str
    names: tuple[str, ...]
    settings: Settings
    matrix: fixtures.Matrix
    refs: list[str]
    say: Callable[[str], None]
    started: float  # the session's start, and the seconds its checks and preflight took
    checked: float
    per_ref: dict[str, dict[str, Any]] = field(default_factory=dict)  # each ref's header (fingerprint)
    built: dict[tuple[str, str], MnistRef] = field(default_factory=dict)  # per (ref, workload)
    prepared: dict[str, Prepared] = field(default_factory=dict)  # each ref built once, for every workload
    results: Path = field(init=False)  # made, with the workload read, in begin (signals held from there)
    workload: Training = field(init=False)
    workloads: tuple[str, ...] = (train.NAME,)  # the training workloads, in order ([workloads.NAME])
    sliced: shard.Shard | None = None  # --shard K/N (issue 26): this run is one slice, its reports partial
    shard_record: dict[str, Any] | None = None  # summary.json's `shard` entry, made with the plan

    def plan(self) -> list[Cell]:
        cells = [
            c for w in self.workloads for ref in self.refs for c in cells_for(ref, self.names, self.settings.icds, w)
        ]
        if self.sliced is None:
            return cells
        kept, self.shard_record = shard_cells(cells, self.sliced)
        return kept

    def begin(self) -> None:
        self.results = prepare.results_dir(self.settings, self.name)
        self.say(f"mnnrepro {__version__}: session {self.name}, results in {self.results}")
        if self.shard_record is not None:
            self.say(shards.slice_line(self.shard_record))
        for line in self.settings.describe():
            self.say(f"  {line}")
        self.workload = train.workload_of(self.matrix, self.settings, self.workloads[0])

    def run(self, cell: Cell) -> tuple[CellRun, Verdict]:
        mnist = self.built.get((cell.ref, cell.workload))
        if mnist is None:  # the ref's first cell: build it, its header filled in once it is
            prepared = self.prepared.get(cell.ref)
            if prepared is None:
                self.per_ref[cell.ref] = {"ref": cell.ref}
                prepared = prepare.prepare(cell.ref, self.names, self.settings, self.matrix, self.say)
                self.prepared[cell.ref] = prepared
            mnist = MnistRef(
                prepared, self.settings, self.matrix, self.results, self.say, name=cell.workload, session=self.name
            )
            self.per_ref[cell.ref].update(mnist.header())
            self.built[(cell.ref, cell.workload)] = mnist
        run, verdict = mnist.run(cell)
        if self.sliced is not None:  # one cell's pass does not make its row stale: other shards may use the row
            verdict = replace(verdict, reason=shards.unsay_stale(verdict.reason))
        return run, verdict

    def several(self) -> bool:
        """Another workload than MNIST's alone: the reports name each (MNIST's alone read as before)."""
        return self.workloads != (train.NAME,)

    def stopped_midway(self, cell: Cell) -> None:
        """A training cell an interrupt stopped keeps nothing: it is INTERRUPTED with the cells not run."""
        return None

    def first(self) -> dict[str, Any]:
        return self.per_ref.get(self.refs[0], {"ref": self.refs[0]})

    def summarize(
        self, rows: list[tuple[CellRun, Verdict]], stopped: BaseException | None, not_run: list[Cell]
    ) -> dict[str, Any]:
        header: dict[str, Any] = {
            "suite": __version__,
            # The code and rows that judged it (fixtures.suite_digest): `mnnrepro merge` refuses shards that differ.
            "suite_digest": fixtures.suite_digest(),
            "session": self.name,
            **self.first(),
            "refs": self.per_ref,
            "host": platform.platform(),
            "python": sys.version.split()[0],
            "workload": _described(self.workload),
            "checks": self.matrix.checks,
            "seconds": {
                "checks_and_preflight": round(self.checked, 2),
                "until_reports": round(time.monotonic() - self.started, 2),
            },
        }
        if self.several():
            header["workloads"] = {
                w: {**_described(train.workload_of(self.matrix, self.settings, w)), "checks": self.matrix.checks_for(w)}
                for w in self.workloads
            }
        header["verdict_settings"] = shards.verdict_settings(self.settings, self.names, self.workloads)
        data = report.summary(header, rows)
        if self.shard_record is not None:
            shards.mark_partial(data, self.shard_record)
        elif stopped is None:  # over every cell of the session (an interrupted one lacks some: not judged)
            data.update(shards.judge_whole(data["cells"]))
        if stopped is not None:
            _mark_interrupted(data, stopped, not_run)
        return data

    def write_reports(self, data: dict[str, Any]) -> list[Path]:
        return report.write_all(self.results, data)

    def show(
        self,
        data: dict[str, Any],
        rows: list[tuple[CellRun, Verdict]],
        written: list[Path],
        stopped: BaseException | None,
    ) -> None:
        say, wl = self.say, self.workload
        say("")
        commits = ", ".join(f"{r} ({(h.get('commit') or '?')[:10]})" for r, h in self.per_ref.items())
        if self.several():
            shapes = ", ".join(
                f"{w} ({t.model}) {t.steps} steps x batch {t.batch_size}"
                for w in self.workloads
                for t in [train.workload_of(self.matrix, self.settings, w)]
            )
            say(f"MNN {commits}, runner {self.first().get('runner', '?')}, workloads: {shapes}")
        else:
            say(f"MNN {commits}, runner {self.first().get('runner', '?')}, {wl.steps} steps x batch {wl.batch_size}")
        say(report.table(rows))
        placement = report.placement_table(data)
        if placement:
            say("\nop placement (step 0):\n" + placement)
        vuids = report.validation_table(data)
        if vuids:
            say("\nvalidation layer (VUID, count, first message):\n" + vuids)
        say("\nreports: " + ", ".join(str(p) for p in written))
        for line in shards.whole_lines(data):  # stale rows, or (a shard) that they wait for the merge
            say(line)
        if stopped is not None:
            say(f"session {self.name}: INTERRUPTED after {len(rows)} cell(s); the results dir keeps what finished")

    def exit_code(self, data: dict[str, Any], rows: list[tuple[CellRun, Verdict]]) -> int:
        name = f"{self.name} ({shards.partial_line(self.shard_record)})" if self.shard_record else self.name
        if data["all_matched"]:
            self.say(f"session {name}: every cell matched its expectation")
            return 0
        self.say(f"session {name}: {sum(not v.matched for _, v in rows)} cell(s) did not match their expectation")
        return EXIT_MISMATCH


def _described(workload: Training) -> dict[str, Any]:
    """A workload as summary.json records it: MNIST's as before there were workloads (no name, model, options)."""
    out = dict(workload.__dict__)
    if (workload.name, workload.model, workload.model_args) == (train.NAME, train.DEFAULT_MODEL, ()):
        for key in ("name", "model", "model_args"):
            out.pop(key)
    return out


def session_workloads(name: str, matrix: fixtures.Matrix, asked: tuple[str, ...] | None) -> tuple[str, ...]:
    """The workloads a session trains: those asked for (--workload), else every one for `workloads`, else
    MNIST's. An unknown name is a ConfigError listing the known ones, before anything is built."""
    chosen = asked or (tuple(matrix.workloads) if name == "workloads" else (train.NAME,))
    for workload in chosen:
        train.workload_of(matrix, Settings(), workload)
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"--workload {','.join(chosen)}: a workload named twice (its cells would share directories)")
    return chosen


def session_variants(name: str, settings: Settings) -> tuple[str, ...]:
    """The session's variants; `workloads` takes --variants (default cpu, vulkan-image, vulkan-buffer). Another
    session's variants are its own: --variants there is a ConfigError, never silently dropped."""
    if not settings.variants:
        return SESSIONS[name]
    if name != "workloads":
        raise ConfigError(
            f"--variants {','.join(settings.variants)}: session {name} runs its own variants "
            f"({', '.join(SESSIONS[name])}); only session workloads takes --variants",
            hint=f"drop --variants (or MNNREPRO_VARIANTS), or run: mnnrepro run workloads --variants "
            f"{','.join(settings.variants)}",
        )
    unknown = [v for v in settings.variants if v not in variants.NAMES]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}", hint=f"known: {', '.join(variants.NAMES)}")
    return settings.variants


def run_session(
    name: str, settings: Settings, *, say: Callable[[str], None] = print, workloads: tuple[str, ...] | None = None
) -> int:
    started = time.monotonic()
    names = session_variants(name, settings)
    check_session(name, settings, names)
    sliced = shard.parse(settings.shard)  # a bad --shard (or MNNREPRO_SHARD) is refused before anything is built
    matrix = fixtures.load_matrix()
    chosen = session_workloads(name, matrix, workloads)
    refs = session_refs(name, settings, matrix)
    if sliced is not None:  # a session with nothing to split, or a shard that would be empty: known now
        shard_cells([c for w in chosen for r in refs for c in cells_for(r, names, settings.icds, w)], sliced)
    for ref in refs:
        source.validate_ref(ref)
    fixtures.verify_mnist()
    for workload in chosen:
        spec = matrix.workloads.get(workload)
        for ref in refs:  # a corrupt or truncated golden is known now, not after the build
            golden = fixtures.golden_dir(spec.golden_workload if spec else train.NAME, ref)  # old layout: an error
            if golden.is_dir():
                fixtures.verify_golden_manifest(golden)
    if name == VALIDATION_SESSION and settings.vk_validation == "off":  # sync, when asked, stays sync
        settings = replace(settings, vk_validation="on")
    if settings.vk_validation != "off":
        validation.load_known()  # a malformed fixtures/validation.toml is known now, not after the build
    settings, _ = prepare.preflight_for(settings, names, say)
    checked = time.monotonic() - started  # settings, fixtures and goldens verified, preflight
    # From the moment the results directory exists a signal is held, and raises only while the cells run
    # (base.session_loop): none escapes between the cells and the reports, which are written whole.
    session = MnistSession(name, names, settings, matrix, refs, say, started, checked, workloads=chosen, sliced=sliced)
    return base.session_loop(session, say=say)
