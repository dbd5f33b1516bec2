"""Turns a cell's files into a verdict with its evidence. It reads the driver's output; it never re-runs.

Verdicts (one meaning each, see README):
  REPRODUCED        crashed the way the expectation for this cell says the known bug crashes
  FIXED             a known-bug cell trained on the backend under test and passed every check; where the row
                    names the bug's op, that op ran on the GPU in the row's phase (every instance)
  FIXED-BY-FALLBACK a known-bug cell trained and passed every check, but the bug's op (the row's `op`) ran on the
                    CPU in the row's phase (any instance): the backend declined it, no kernel was fixed
  KNOWN-WRONG       trained, but computes known wrong values: every failing check's text matches the row's
                    `match` (a 'known-wrong' row: 3.6.x image mode on NVIDIA, issue 22); expected, never a pass
  PASS / FAIL       a cell with no known bug met / missed its checks (FAIL also: a known-bug cell that
                    trained but missed a check, or the driver reported an error)
  NOT-EXERCISED     the backend under test was not the one MNN used; never a pass
  HANG              killed at its time limit
  UNEXPECTED-CRASH  crashed, but not with the expected signal/stage

A crash without a backtrace (no gdb: Prepared.gdb_absent, or gdb caught nothing) is known by its signal and stage
alone: its verdict says "judged by signal only" (issue 22), never that a signature was verified.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from . import signature
from .cells import CellRun
from .contract import EXIT_MEANINGS, EXIT_NOT_EXERCISED, RunRecord
from .fixtures import ABSOLUTE_CHECKS, HOST_ICD, Expectation, is_version_range
from .signature import SIGNAL_ONLY

REPRODUCED = "REPRODUCED"
FIXED = "FIXED"
FIXED_BY_FALLBACK = "FIXED-BY-FALLBACK"

FALLBACK = "FALLBACK"  # a run that completed with the op(s) under test on another backend (the reducer's verdict)
# Verdicts of a run whose op under test ran on the CPU: the reducer's FALLBACK and the MNIST workload's
# FIXED-BY-FALLBACK. Neither is a fix (bisect and the issue report word them so).
OFF_GPU = (FALLBACK, FIXED_BY_FALLBACK)


def change_words(old_verdict: str, new_verdict: str, good_is_old: bool) -> str:
    """What a bisect's first changed commit is, in words: a commit where the op leaves the GPU is not a fix
    (upstream's 39be21c56 declines alibaba/MNN#3129's Deconvolution on Vulkan, which then runs on the CPU)."""
    if new_verdict in OFF_GPU and old_verdict not in OFF_GPU:
        return "first commit where the op leaves the GPU"
    if old_verdict in OFF_GPU and new_verdict not in OFF_GPU:
        return "first commit where the op runs on the GPU again"
    return "first commit with the new verdict" if good_is_old else "first commit with the fixed verdict"


KNOWN_WRONG = "KNOWN-WRONG"
PASS = "PASS"
FAIL = "FAIL"
NOT_EXERCISED = "NOT-EXERCISED"
HANG = "HANG"
UNEXPECTED_CRASH = "UNEXPECTED-CRASH"

# Verdicts that fail every report, whatever the expectation says: the backend was not judged at all.
NEVER_PASS = (NOT_EXERCISED, HANG)

# What each expected outcome accepts.
ACCEPTS = {
    "reproduce": REPRODUCED,
    "fixed": FIXED,
    "fixed-by-fallback": FIXED_BY_FALLBACK,
    "pass": PASS,
    "known-wrong": KNOWN_WRONG,
}
# Expected outcomes of a known-bug cell that trains (a crash matching the bug's 'reproduce' row is a regression).
TRAINS_WITH_BUG = ("fixed", "fixed-by-fallback", "known-wrong")
# Expected outcomes of a cell that runs to the end (no gdb needed, gradients dumped).
TRAINS = ("pass", *TRAINS_WITH_BUG)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str
    value: Any = None
    limit: Any = None
    # "pass" / "fail"; "n/a": the check does not fit this workload (not counted either way); "excused": an
    # absolute check the CPU run of the same ref and workload misses too (no fault of the backend under test).
    status: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            self.status = "pass" if self.passed else "fail"


def not_applicable(name: str, why: str, limit: Any = None) -> Check:
    return Check(name, True, f"n/a: {why}", None, limit, status="n/a")


@dataclass
class Verdict:
    verdict: str
    matched: bool
    expected: str  # the verdict the expectation wants, or "" when there is none
    reason: str
    checks: list[Check] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


def _cpu_checks(
    losses: list[float], acc: float | None, checks: dict[str, float], baseline: RunRecord | None
) -> list[Check]:
    """A GPU cell against the CPU run of the same ref and workload: every step's loss, and the accuracy."""
    out: list[Check] = []
    if baseline is None or not baseline.losses or not baseline.done:
        out.append(Check("tracks_cpu", False, "no complete CPU baseline run of the same ref and workload"))
    else:
        abs_tol, rel_tol = checks.get("loss_abs_tolerance", 0.02), checks.get("loss_rel_tolerance", 0.01)
        pairs = list(zip(losses, baseline.losses, strict=False))  # lengths compared below
        worst_i, worst, worst_excess = -1, 0.0, -math.inf
        for i, (a, b) in enumerate(pairs):
            diff = abs(a - b)
            excess = diff - (abs_tol + rel_tol * abs(b))
            if excess > worst_excess:
                worst_i, worst, worst_excess = i, diff, excess
        ok = bool(pairs) and len(pairs) == len(baseline.losses) and worst_excess <= 0
        out.append(
            Check(
                "tracks_cpu",
                ok,
                f"max |loss - cpu| {worst:.6f} at step {worst_i} (limit {abs_tol} + {rel_tol}*|cpu|)",
                round(worst, 6),
                abs_tol,
            )
        )
        gap_limit = checks.get("max_accuracy_gap", 0.03)
        gap = abs((acc or 0.0) - (baseline.accuracy or 0.0))
        out.append(
            Check(
                "accuracy_vs_cpu",
                gap <= gap_limit,
                f"|{acc} - cpu {baseline.accuracy}| = {gap:.4f} <= {gap_limit}",
                round(gap, 4),
                gap_limit,
            )
        )
    return out


def training_checks(
    run: RunRecord, *, steps: int, checks: dict[str, float], baseline: RunRecord | None, compare_to_baseline: bool
) -> list[Check]:
    """Every check of a run that trained. The absolute ones (loss_fell, accuracy) apply only to workloads of at
    least [checks] absolute_min_steps steps (the workload their thresholds were measured on); below that they
    are n/a, and a GPU cell is held to the CPU run of the same workload instead (tracks_cpu, accuracy_vs_cpu)."""
    out: list[Check] = []
    min_steps = int(checks.get("absolute_min_steps", 0))
    short = steps < min_steps
    why_short = f"its threshold was measured at {min_steps} steps; this workload has {steps}"
    losses = run.losses
    out.append(
        Check(
            "completed",
            run.done and len(losses) == steps,
            f"{len(losses)}/{steps} steps, done={run.done}",
            len(losses),
            steps,
        )
    )
    finite = all(math.isfinite(x) for x in losses) and bool(losses)
    out.append(Check("finite_loss", finite, "every loss finite" if finite else "NaN/Inf loss"))
    w = int(checks.get("loss_fall_window", 5))
    if short or steps < 2 * w:
        out.append(
            not_applicable("loss_fell", why_short if short else f"needs {2 * w} steps, the workload has {steps}")
        )
    elif len(losses) >= 2 * w and finite:
        first, last = sum(losses[:w]) / w, sum(losses[-w:]) / w
        out.append(
            Check(
                "loss_fell",
                last < first,
                f"mean first {w} {first:.4f} -> last {w} {last:.4f}",
                round(last, 5),
                round(first, 5),
            )
        )
    else:
        out.append(Check("loss_fell", False, f"need at least {2 * w} finite losses"))
    acc = run.accuracy
    limit = checks.get("min_accuracy", 0.5)
    if short:
        out.append(not_applicable("accuracy", f"{why_short} (test accuracy {acc})", limit))
    else:
        out.append(Check("accuracy", acc is not None and acc >= limit, f"test accuracy {acc} >= {limit}", acc, limit))
    if compare_to_baseline:
        out += _cpu_checks(losses, acc, checks, baseline)
    return out


def _evidence(run: CellRun, covered_by: str) -> dict[str, Any]:
    """What every verdict carries: the command, how it ended, where, on which backend and device."""
    rec, completed, last = run.record, run.completed, run.record.last_stage
    device = rec.backend.get("device") or {}
    evidence: dict[str, Any] = {
        "command": run.argv,
        "exit_code": completed.returncode,
        "signal": completed.signal_name,
        "duration_s": round(completed.duration_s, 2),
        "stage": last.label() if last else None,
        "requested_backend": rec.backend.get("requested", run.cell.backend),
        "active_backend": rec.backend.get("active"),
        "device": rec.device_name,
        "driver": device.get("driver_info") or device.get("driver_name"),
        "device_facts": rec.device.as_dict(),  # what a row's device, vendor and driver keys were matched against
        "backtrace": str(run.backtrace_path) if run.backtrace_path else None,
        "top_frames": [f.get("function") for f in (run.crash or {}).get("frames", [])[:6]],
        "result_dir": str(run.result_dir),
    }
    if covered_by and is_version_range(covered_by):
        evidence["expectation_covers"] = covered_by
    return evidence


def signal_only_words(gdb_absent: str) -> str:
    """How a crash without a backtrace was judged, and why there was none."""
    return f"{SIGNAL_ONLY} (no gdb: {gdb_absent})" if gdb_absent else f"{SIGNAL_ONLY} (no backtrace)"


def _crash(
    run: CellRun,
    expectation: Expectation | None,
    known_bugs: tuple[Expectation, ...],
    evidence: dict[str, Any],
    gdb_absent: str = "",
) -> tuple[str, str]:
    """A run ended by a signal: REPRODUCED when it matches a known bug's row (signal, stage, step, signature),
    else UNEXPECTED-CRASH saying what differed. Without a backtrace (``gdb_absent``: why there was no gdb) the
    signature cannot be checked: the verdict and evidence["judged_by"] say it was judged by signal only."""
    sig, last = run.completed.signal_name, run.record.last_stage
    where = f"{sig} at stage {evidence['stage']}"
    observed = signature.of_crash(run.crash) if run.crash else None
    evidence["signature"] = list(observed) if observed is not None else None
    only = signal_only_words(gdb_absent) if observed is None else ""
    evidence["judged_by"] = only or "signal, stage and crash signature"
    candidates = [expectation] if expectation and expectation.outcome == "reproduce" else []
    known = _known_signature(expectation, known_bugs)
    if known:
        candidates.append(known)
    mismatch = ""
    for row in candidates:
        if not (sig == row.signal and last is not None and last.name == row.stage and row.step in (None, last.step)):
            mismatch = f"expected {row.signal} at {row.stage}[step {row.step}]"
            continue
        if row.signature and observed is not None and not signature.matches(observed, row.signature):
            mismatch = f"frames {' < '.join(observed) or '(none in MNN)'} are not {' < '.join(row.signature)}"
            continue
        note = f" ({only}{'; the signature not verified' if row.signature else ''})" if only else ""
        return REPRODUCED, f"{where}: the known bug {row.bug}{note}"
    return UNEXPECTED_CRASH, where + (f" ({mismatch})" if mismatch else "") + (f" ({only})" if only else "")


def _ended_early(run: CellRun, evidence: dict[str, Any]) -> tuple[str, str] | None:
    """Verdicts decided before any training check: a container limit, a time limit, no proof of the backend,
    a driver error. None when the run trained (or crashed: see _crash)."""
    rec, completed = run.record, run.completed
    if completed.killed_by:  # a container limit ended it (docker_runner): neither a crash of MNN's nor a hang
        return FAIL, f"killed by {completed.killed_by} at stage {evidence['stage']}"
    if completed.timed_out:
        return HANG, f"killed after {completed.duration_s:.0f}s at stage {evidence['stage']}"
    # Proof first: a run whose backend under test was not active is never judged on anything else.
    if completed.returncode == EXIT_NOT_EXERCISED or rec.exercised is False:
        return NOT_EXERCISED, rec.backend.get("reason") or "driver reported the backend was not active"
    if rec.exercised is None and completed.signal is None:
        return (
            NOT_EXERCISED if completed.returncode == 0 else FAIL,
            f"driver gave no backend proof (exit {completed.returncode}); see {run.result_dir}/stderr.txt",
        )
    if completed.signal is None and completed.returncode != 0:
        meaning = EXIT_MEANINGS.get(completed.returncode, "unknown exit code")
        message = (rec.error or {}).get("message", "")
        return FAIL, f"driver exit {completed.returncode} ({meaning}) {message}".strip()
    return None


def _excuse(cs: list[Check], baseline_checks: tuple[Check, ...] | list[Check]) -> None:
    """An absolute check that the CPU run of the same ref and workload fails too is no fault of the GPU's."""
    cpu_failed = {c.name for c in baseline_checks if c.status == "fail"}
    for c in cs:
        if c.status == "fail" and c.name in ABSOLUTE_CHECKS and c.name in cpu_failed:
            c.passed, c.status = True, "excused"
            c.detail += "; excused: the CPU run of the same ref and workload misses it too"


def judge(
    run: CellRun,
    expectation: Expectation | None,
    *,
    steps: int,
    checks: dict[str, float],
    baseline: RunRecord | None,
    known_bugs: tuple[Expectation, ...] = (),
    extra_checks: tuple[Check, ...] = (),
    baseline_checks: tuple[Check, ...] | list[Check] = (),
    covered_by: str = "",
    gdb_absent: str = "",
    unmeasured: Mapping[str, str] | None = None,
) -> Verdict:
    """``known_bugs``: the matrix's 'reproduce' rows, so a 'fixed' cell that regresses is named REPRODUCED.
    ``baseline_checks``: the checks of the CPU run of the same ref and workload; an absolute check that it
    failed too is excused for a GPU cell. ``covered_by``: the expectation row's entry that covers this ref
    when it is not the ref itself (a version range), said in the reason. ``gdb_absent``: why the run had no gdb
    (Prepared.gdb_absent; "" with one), said in a crash's verdict. ``unmeasured``: checks (by name) whose
    thresholds were never measured for this cell's workload or step count, with why: n/a, never a failure
    (issue 24: [workloads.NAME.checks] unmeasured, a fitted cell's accuracy against a longer CPU run).
    A known-bug GPU cell that trains is
    judged on where the bug's op ran (the row's `op`/`phase`, else its bug's 'reproduce' row's): FIXED only
    with every instance on the GPU, FIXED-BY-FALLBACK with any on the CPU, FAIL when placement is unknown."""
    rec = run.record
    expected = ACCEPTS.get(expectation.outcome, "") if expectation else ""
    evidence = _evidence(run, covered_by)

    def verdict(v: str, reason: str, cs: list[Check] | None = None) -> Verdict:
        matched = bool(expected) and v == expected and v not in NEVER_PASS
        if not expectation and run.record.device.known and run.cell.icd == HOST_ICD:
            facts = run.record.device
            reason += (
                f" (no expectation for this cell in fixtures/matrix.toml: no row names its device {facts.name!r}, "
                f"vendor {facts.vendor or '?'!r}, driver {facts.driver or '?'!r}; add one learned on it)"
            )
        elif not expectation:
            reason += " (no expectation for this cell in fixtures/matrix.toml)"
        elif "expectation_covers" in evidence:
            reason += f" (expectation: the row for refs {covered_by})"
        return Verdict(v, matched, expected, reason, cs or [], evidence)

    early = _ended_early(run, evidence)
    if early is not None:
        return verdict(*early)
    if run.completed.signal_name is not None:
        return verdict(*_crash(run, expectation, known_bugs, evidence, gdb_absent))
    gpu = run.cell.backend != "cpu"
    cs = training_checks(rec, steps=steps, checks=checks, baseline=baseline, compare_to_baseline=gpu)
    why_not = unmeasured or {}
    cs = [not_applicable(c.name, f"{why_not[c.name]} ({c.detail})", c.limit) if c.name in why_not else c for c in cs]
    cs += list(extra_checks)  # e.g. gradients against the CPU golden (gradcheck.py)
    if gpu:
        _excuse(cs, baseline_checks)
    bug_op = _bug_op(expectation, known_bugs) if gpu else None
    placed = op_placement(rec, bug_op.op, bug_op.phase, run.cell.backend) if bug_op else None
    if bug_op is not None:
        cs.append(_placement_check(bug_op, placed, run.cell.backend))
        evidence["bug_op"] = {"op": bug_op.op, "phase": bug_op.phase, **(asdict(placed) if placed else {})}
    failed = [c for c in cs if not c.passed]
    if expectation is not None and expectation.outcome == "known-wrong":
        return verdict(*_known_wrong(expectation, failed, rec), cs)
    if failed:
        return verdict(FAIL, "; ".join(f"{c.name}: {c.detail}" for c in failed), cs)
    summary = _trained_summary(rec)
    if bug_op is None or placed is None:
        return verdict(FIXED if expectation and expectation.bug else PASS, summary, cs)
    return verdict(*_fixed_or_fallback(bug_op, placed, expectation, summary), cs)


def _trained_summary(rec: RunRecord) -> str:
    return (
        f"trained {len(rec.losses)} steps on {rec.device_name or rec.backend.get('active')}, "
        f"loss {rec.losses[0]:.3f}->{rec.losses[-1]:.3f}, accuracy {rec.accuracy}"
    )


def _known_wrong(row: Expectation, failed: list[Check], rec: RunRecord) -> tuple[str, str]:
    """A cell whose row expects known wrong values: KNOWN-WRONG when it failed checks and every failing check's
    text ("name: detail") matches the row's `match`; FAIL (a mismatch) when one does not (not the known wrong
    values, or more than them); PASS (a mismatch: the row is stale) when it trained right."""
    known = f"the row expects {KNOWN_WRONG} ({row.reason})"
    if not failed:
        return PASS, f"{_trained_summary(rec)}; {known}: now trains right, the row is stale"
    pattern = re.compile(row.match)
    texts = [f"{c.name}: {c.detail}" for c in failed]
    other = [t for t in texts if not pattern.search(t)]
    if other:
        why = f"not the known wrong values: {len(other)} failing check(s) not matched by the row's match {row.match!r}"
        return FAIL, "; ".join(texts) + f"; {why} ({known})"
    return KNOWN_WRONG, f"known wrong values ({row.reason}): " + "; ".join(texts)


@dataclass(frozen=True)
class OpPlacement:
    """Where every instance of one op type ran in one phase, over every step the run traced."""

    cpu: int  # instances on the CPU
    gpu: int  # instances on the backend under test
    steps: int  # traced steps of the phase
    backends: dict[str, int] = field(default_factory=dict)  # backend -> instances

    @property
    def elsewhere(self) -> int:
        """Instances on neither: a backend the trace could not name ("unknown") or another one."""
        return sum(self.backends.values()) - self.cpu - self.gpu


def op_placement(record: RunRecord, op: str, phase: str, backend: str) -> OpPlacement | None:
    """The driver's `ops` events (native/README.md) of ``phase``, every step: None when the run recorded none for
    that phase (traced ops off, or it never got there), so a verdict never assumes where the op ran. ``gpu``
    counts only ``backend`` (the cell's): an instance the trace put on "unknown" is not on the GPU."""
    events = [e for e in record.ops if e.get("phase") == phase]
    if not events:
        return None
    backends: Counter[str] = Counter()
    for event in events:
        for where, types in (event.get("by_backend") or {}).items():
            backends[str(where)] += int((types or {}).get(op, 0))
    return OpPlacement(
        backends.get("cpu", 0), backends.get(backend, 0), len(events), {b: n for b, n in backends.items() if n}
    )


def _bug_op(expectation: Expectation | None, known_bugs: tuple[Expectation, ...]) -> Expectation | None:
    """The row naming the known bug's op for this cell: its own, else its bug's 'reproduce' row (the crashing op),
    so a known bug's fix is always judged on where that op ran."""
    if expectation is None or not expectation.bug:
        return None
    if expectation.op:
        return expectation
    return next((r for r in known_bugs if r.bug == expectation.bug and r.op), None)


def _placement_check(row: Expectation, placed: OpPlacement | None, backend: str) -> Check:
    """Where the bug's op ran: unknown (no placement for the phase; or none on the CPU and an instance on neither
    the CPU nor ``backend``, so FIXED cannot be said) or absent (the op never ran there) fails, since neither
    FIXED nor FIXED-BY-FALLBACK can then be said; otherwise it passes and the verdict says which."""
    what = f"{row.op} in {row.phase}"
    if placed is None:
        return Check(
            "op_placement",
            False,
            f"{what}: no op placement recorded for {row.phase} (the driver traces ops unless --no-trace-ops); "
            f"cannot tell a fixed kernel from a CPU fallback ({row.bug})",
        )
    if not placed.backends:
        return Check(
            "op_placement", False, f"{what}: the op did not run ({placed.steps} traced step(s)); is the row stale?"
        )
    where = ", ".join(f"{b} {n}" for b, n in sorted(placed.backends.items()))
    if placed.elsewhere and not placed.cpu:
        return Check(
            "op_placement",
            False,
            f"{what}: {where} over {placed.steps} step(s): {placed.elsewhere} instance(s) on neither the CPU nor "
            f"{backend}; cannot tell a fixed kernel from a fallback ({row.bug})",
        )
    return Check("op_placement", True, f"{what}: {where} over {placed.steps} step(s)", placed.cpu, 0)


def _fixed_or_fallback(
    row: Expectation, placed: OpPlacement, expectation: Expectation | None, summary: str
) -> tuple[str, str]:
    """FIXED-BY-FALLBACK when any instance of the bug's op ran on the CPU, else FIXED; the reason says where it
    ran and, when the row expects the other one, that the row no longer describes what is seen."""
    total = sum(placed.backends.values())
    outcome = expectation.outcome if expectation else ""
    if placed.cpu:
        reason = (
            f"{summary}; but {row.op} ran on the CPU in {row.phase} ({placed.cpu} of {total} instances over "
            f"{placed.steps} step(s)): the backend declined it, the kernel of {row.bug} is not fixed"
        )
        if outcome == "fixed":
            reason += "; the row expects FIXED (the op on the GPU)"
        return FIXED_BY_FALLBACK, reason
    reason = f"{summary}; {row.op} ran on the GPU in {row.phase} ({total} of {total} instances)"
    if outcome == "fixed-by-fallback":
        reason += f"; the row expects {row.op} on the CPU: the kernel now runs on the GPU, the row is stale"
    return FIXED, reason


def _known_signature(expectation: Expectation | None, known_bugs: tuple[Expectation, ...]) -> Expectation | None:
    """A 'fixed' (or 'fixed-by-fallback') cell that crashes the way its bug's 'reproduce' row describes is
    REPRODUCED (a regression)."""
    if expectation is None or expectation.outcome not in TRAINS_WITH_BUG or not expectation.bug:
        return None
    for row in known_bugs:
        if row.bug == expectation.bug and row.outcome == "reproduce":
            return row
    return None


def combine_repeats(runs: list[tuple[CellRun, Verdict]]) -> tuple[CellRun, Verdict]:
    """One row for N repeats of a cell: matched only if every repeat matched; the rate and determinism are
    evidence. The row's verdict is the first repeat's when all agree, else the most frequent one."""
    first_run, first = runs[0]
    if len(runs) == 1:
        return first_run, first
    counts = Counter(v.verdict for _, v in runs)
    verdict = first.verdict if len(counts) == 1 else counts.most_common(1)[0][0]
    losses = [tuple(r.record.losses) for r, _ in runs if r.record.losses]
    deterministic = len(set(losses)) <= 1 if losses else None
    rate = ", ".join(f"{v} {n}/{len(runs)}" for v, n in counts.most_common())
    evidence = dict(first.evidence)
    evidence["repeats"] = {"n": len(runs), "verdicts": dict(counts), "identical_losses": deterministic}
    reason = (
        f"{rate}; losses {'identical' if deterministic else 'differ' if deterministic is False else 'n/a'} "
        f"across repeats; first: {first.reason}"
    )
    combined = Verdict(verdict, all(v.matched for _, v in runs), first.expected, reason, first.checks, evidence)
    return first_run, combined
