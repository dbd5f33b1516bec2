"""``mnnrepro triage A B``: what passes at A and fails at B, cell by cell (training) and test by test (MNN's own
tests), each such finding reduced, bisected between A and B and written up as an issue report.

The comparison is pure functions over ``summary.json`` dictionaries (``compare``, ``tables``, ``plan``); the heavy
steps (reduce, bisect, report) are injected (``Heavy``), so the planning is tested without an MNN build.

A finding (a regression) is a key that passes at A and fails at B:
- MNN's own tests: PASS or UNEXPECTED-PASS at A, FAIL, CRASH or TIMEOUT at B (``workloads/ops/judge.py`` FAILING).
- Training cells: PASS or FIXED (the cell trained on the GPU and met every check) at A, FAIL, REPRODUCED,
  UNEXPECTED-CRASH or HANG at B.
Every other change (a move to FALLBACK, FIXED-BY-FALLBACK, NO-GPU-WORK, NOT-EXERCISED, CPU-FAIL, FLAKE ...) is
listed, never a finding: B did not run the op (or the backend) on the GPU, or its CPU reference failed, so there is
no wrong GPU value or GPU crash to reduce or bisect; it is listed so that nobody reads it as a pass. A key that only
one side ran is "not comparable", never a pass.

A training cell is classified by what was observed, not by the words a row of fixtures/matrix.toml put on it (a row
naming A but not B turns one outcome into two verdicts): PASS and FIXED (trained right at both) are "same"; so are
KNOWN-WRONG and FAIL when the failing checks are the same (their ``name: detail`` texts, each side's ref name
replaced by a placeholder); with other failing checks the pair stays a change (did not pass at A). A pass at A and
a failure at B stays a regression whatever the rows say.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import EXIT_MISMATCH, ConfigError
from ..judge import FAIL, FIXED, HANG, KNOWN_WRONG, PASS, REPRODUCED, UNEXPECTED_CRASH
from ..report import INTERRUPTED
from ..workloads.ops.judge import FAILING, NOT_RUN
from ..workloads.train import workload as train

OPS_PASS = ("PASS", "UNEXPECTED-PASS")
OPS_FAIL = FAILING  # FAIL, CRASH, TIMEOUT: a wrong value, a crash or a hang on the GPU
TRAIN_PASS = (PASS, FIXED)
# KNOWN-WRONG: the cell computed wrong values on the GPU (a row expected them there): after a pass at A, a regression.
TRAIN_FAIL = (FAIL, REPRODUCED, UNEXPECTED_CRASH, HANG, KNOWN_WRONG)
ABSENT = "-"
# A key one side did not run to a verdict (NOT-RUN: SKIP rows, not built, interrupted; INTERRUPTED: a training cell
# stopped): not comparable, never "the same" or a change.
UNRUN = (ABSENT, NOT_RUN, "", INTERRUPTED)
# Kinds of a row, the order summary.md lists them in.
REGRESSION, CHANGE, NOT_COMPARABLE, SAME = "regression", "change (not a regression)", "not comparable", "same"
KINDS = (REGRESSION, CHANGE, NOT_COMPARABLE, SAME)
# Exit codes (README, "triage"): 0 no finding; EXIT_MISMATCH (1) at least one finding; 3 nothing comparable.
EXIT_NOTHING_COMPARABLE = 3
BISECT_MODES = {"vulkan-image": "image", "vulkan-buffer": "buffer"}  # what `bisect --mode` can build
# Findings triaged per run (--max-findings): each one's bisect builds MNN many times; the rest are listed.
MAX_FINDINGS = 5
PENDING = "pending"  # a finding's steps not run yet (the top files are written before them)
NOT_TRIAGED = "not triaged"  # a finding over --max-findings: listed, its steps never run


@dataclass(frozen=True)
class Row:
    room: str  # "training" or "ops"
    key: tuple[str, ...]  # training: (workload, variant, icd); ops: (variant, icd, test)
    a: str  # status at A (ABSENT: A did not run it)
    b: str
    kind: str
    why: str

    @property
    def name(self) -> str:
        return "/".join(self.key)


def room_of(summary: dict[str, Any]) -> str:
    return "ops" if summary.get("session") == "ops" else "training"


@dataclass(frozen=True)
class Outcome:
    """One key's status and what a training cell showed beside it: where it trained wrong (FAIL, KNOWN-WRONG) its
    failing checks' ``name: detail`` texts, the ref replaced by ``REF``; where it trained right (PASS, FIXED) the op
    types it ran on the CPU per phase (``cpu_placement``): FIXED checked that the bug's op ran on the GPU, PASS
    without a row did not, so a PASS is the same as a FIXED only where the same ops ran on the CPU. "" where none
    is recorded. Two sides compare whatever a row of fixtures/matrix.toml called them."""

    status: str
    checks: str = ""


REF = "<ref>"
# Training verdicts that say the same observed outcome in a row's words (one side's row named it, the other's not).
TRAINED_RIGHT = (PASS, FIXED)
TRAINED_WRONG = (KNOWN_WRONG, FAIL)
# What judge.py puts around the failing checks in a cell's reason: KNOWN-WRONG's prefix naming the row, and the
# notes judge() appends (no row for the cell, the row covering the ref).
_KNOWN_WRONG_PREFIX = re.compile(r"^known wrong values \(.*?\): (?=[a-z_]+: )")  # up to the first check's name
_NO_GOLDEN = re.compile(r"no committed golden for <ref>: vs the (?:CPU run of this build|float64 numpy reference): ")
_REASON_NOTES = (" (no expectation for this cell in fixtures/matrix.toml", " (expectation: the row for refs ")


def outcomes(summary: dict[str, Any]) -> dict[tuple[str, ...], Outcome]:
    """Each key of one summary with its outcome: per test of an ops run (its status), per cell of a training run
    (its verdict and failing checks; the workload is the cell id's prefix, ``mnistv2:3.3.0/...``; none is mnist)."""
    out: dict[tuple[str, ...], Outcome] = {}
    head = summary["header"] if isinstance(summary.get("header"), dict) else summary
    for cell in summary.get("cells") or []:
        variant, icd = str(cell.get("variant", "")), str(cell.get("icd", ""))
        if room_of(summary) == "ops":
            for t in cell.get("tests") or []:
                out[(variant, icd, str(t["test"]))] = Outcome(str(t.get("status", "")))
        else:
            cid = str(cell.get("cell", ""))
            workload = cid.split(":", 1)[0] if ":" in cid else train.NAME
            verdict = str(cell.get("verdict", ""))
            refs = (cell.get("ref"), head.get("ref"), head.get("commit"))
            checks = (
                failing_checks(cell, refs)
                if verdict in TRAINED_WRONG
                else cpu_placement(cell)
                if verdict in TRAINED_RIGHT
                else ""
            )
            out[(workload, variant, icd)] = Outcome(verdict, checks)
    return out


def cpu_placement(cell: dict[str, Any]) -> str:
    """The op types a training cell ran on the CPU, per phase (``placement``: ``{phase: {"cpu_ops": {type: n}}}``),
    as ``phase: Type, Type; ...``; "" where the cell recorded no placement."""
    placement = cell.get("placement")
    if not isinstance(placement, dict) or not placement:
        return ""
    phases = []
    for phase in sorted(placement):
        ops = (placement[phase] or {}).get("cpu_ops") or {} if isinstance(placement[phase], dict) else {}
        phases.append(f"{phase}: {', '.join(sorted(ops)) or 'none'}")
    return "; ".join(phases)


def failing_checks(cell: dict[str, Any], refs: Sequence[object] = ()) -> str:
    """A training cell's failing checks as ``name: detail; ...`` (what judge.py joins into FAIL's reason and
    KNOWN-WRONG's after its row prefix), each of ``refs`` replaced by ``REF``. From the cell's ``checks`` (status
    "fail"); without any, from its ``reason`` less the row prefix and judge()'s trailing notes."""
    failed = [
        c
        for c in cell.get("checks") or []
        if isinstance(c, dict) and (c.get("status") == "fail" if c.get("status") else c.get("passed") is False)
    ]
    if failed:
        text = "; ".join(f"{c.get('name', '')}: {c.get('detail', '')}" for c in failed)
    else:
        text = _KNOWN_WRONG_PREFIX.sub("", str(cell.get("reason") or cell.get("why") or ""), count=1)
        for note in _REASON_NOTES:
            if note in text:
                text = text[: text.rindex(note)]
    for ref in sorted({str(r) for r in refs if r and str(r) != "0" * 40}, key=len, reverse=True):
        # the ref as a word ("3.6.1", a sha), not inside another ("3.6.10", "3.6.1x")
        text = re.sub(rf"(?<![\w.]){re.escape(ref)}(?!\w|\.\w)", REF, text)
    # Where one ref has a committed golden and the other not, the gradient check compares with the CPU run of that
    # build instead (workloads/train/session.py says so before its numbers): the same check, another reference.
    text = _NO_GOLDEN.sub("", text)
    return text.strip()


def classify(room: str, a: str, b: str, a_checks: str = "", b_checks: str = "") -> tuple[str, str]:
    """(kind, why) of one key's pair of statuses (training: with each side's failing checks, ``Outcome.checks``)."""
    if a in UNRUN or b in UNRUN:
        return (
            NOT_COMPARABLE,
            "run at neither" if a in UNRUN and b in UNRUN else f"run at {'B' if a in UNRUN else 'A'} only",
        )
    passes, fails = (OPS_PASS, OPS_FAIL) if room == "ops" else (TRAIN_PASS, TRAIN_FAIL)
    if a in passes and b in fails:
        return REGRESSION, f"passes at A, {b} at B"
    if a == b:
        return SAME, ""
    if room == "training" and {a, b} == set(TRAINED_RIGHT):
        named = "A" if a == FIXED else "B"
        words = f"{a} at A, {b} at B: a row names a fixed bug at {named} only"
        if a_checks and a_checks == b_checks:
            return SAME, f"trained right at both with the same ops on the CPU ({words})"
        # PASS checked no placement: the fixed bug's op may have moved to the CPU (a FIXED-BY-FALLBACK in a row's
        # words). Listed, never "the same".
        how = _unrecorded("is", a_checks, b_checks) or f"differs (A {a_checks}; B {b_checks})"
        return CHANGE, f"trained right at both ({words}), but the placement on the CPU {how}"
    if room == "training" and {a, b} == set(TRAINED_WRONG):
        named = "A" if a == KNOWN_WRONG else "B"
        if a_checks and a_checks == b_checks:
            words = f"{a} at A, {b} at B: a row expects known wrong values at {named} only"
            return SAME, f"trained wrong at both with the same failing checks ({words})"
        differ = _unrecorded("are", a_checks, b_checks) or "differ"
        return CHANGE, f"did not pass at A ({a}): trained wrong at both, but the failing checks {differ}"
    if b in passes:
        return CHANGE, "passes at B"
    return CHANGE, f"{b} at B is no GPU failure to reduce" if b not in fails else f"did not pass at A ({a})"


def _unrecorded(verb: str, a_checks: str, b_checks: str) -> str:
    """ "<verb> not recorded at A (and B)" where a side recorded nothing to compare, else ""."""
    sides = [side for side, text in (("A", a_checks), ("B", b_checks)) if not text]
    return f"{verb} not recorded at {' and '.join(sides)}" if sides else ""


def compare(a_summaries: Sequence[dict[str, Any]], b_summaries: Sequence[dict[str, Any]]) -> list[Row]:
    """Every key of either side, per room, classified; regressions first, then by room and key."""
    rows: list[Row] = []
    for room in ("training", "ops"):
        a = {k: v for s in a_summaries if room_of(s) == room for k, v in outcomes(s).items()}
        b = {k: v for s in b_summaries if room_of(s) == room for k, v in outcomes(s).items()}
        for key in sorted(set(a) | set(b)):
            was, now = a.get(key, Outcome(ABSENT)), b.get(key, Outcome(ABSENT))
            kind, why = classify(room, was.status, now.status, was.checks, now.checks)
            rows.append(Row(room, key, was.status, now.status, kind, why))
    return sorted(rows, key=lambda r: (KINDS.index(r.kind), r.room, r.key))


def keep(rows: Sequence[Row], icds: Sequence[str] = (), variants: Sequence[str] = ()) -> list[Row]:
    """Only the rows of these ICDs (the CPU's "-" always) and variants, as --icd/--variants ask."""

    def where(r: Row) -> tuple[str, str]:
        return (r.key[1], r.key[2]) if r.room == "training" else (r.key[0], r.key[1])

    return [r for r in rows if (not icds or where(r)[1] in (*icds, "-")) and (not variants or where(r)[0] in variants)]


def findings(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if r.kind == REGRESSION]


def exit_code(rows: Sequence[Row]) -> int:
    if findings(rows):
        return EXIT_MISMATCH
    if not any(r.kind != NOT_COMPARABLE for r in rows):
        return EXIT_NOTHING_COMPARABLE  # nothing both sides ran: "no difference" would be a false green
    return 0


def counts(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        room = out.setdefault(r.room, dict.fromkeys(KINDS, 0))
        room[r.kind] += 1
    return out


def tables(rows: Sequence[Row], a_label: str, b_label: str, *, only_changed: bool = False) -> str:
    """Two Markdown tables, per training cell and per MNN test, A beside B (``only_changed``: without SAME rows)."""
    lines: list[str] = []
    for room, title, head in (
        ("training", "Per cell (training)", "| workload | variant | icd |"),
        ("ops", "Per test (MNN's own tests)", "| variant | icd | test |"),
    ):
        mine = [r for r in rows if r.room == room and not (only_changed and r.kind == SAME)]
        total = sum(1 for r in rows if r.room == room)
        lines += [f"## {title}: {total} compared" + (f", {len(mine)} not the same" if only_changed else ""), ""]
        if not mine:
            lines += ["(none)", ""]
            continue
        lines += [f"{head} {a_label} | {b_label} | kind |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {' | '.join(r.key)} | {r.a} | {r.b} | {r.kind}{': ' + r.why if r.why else ''} |" for r in mine]
        lines.append("")
    return "\n".join(lines)


# -- the plan of each finding -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """One end of the triage: the ref asked for, its commit, and the results directory per room."""

    ref: str
    commit: str
    results: dict[str, Path]


@dataclass(frozen=True)
class Action:
    step: str  # "reduce", "bisect", "report", or "skip" (with why)
    args: dict[str, str] = field(default_factory=dict)


def slug(row: Row) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in row.name).strip("-")[:80]


def plan(row: Row, a: Side, b: Side) -> list[Action]:
    """What a finding gets: a training cell is reduced at B and bisected with the reduced graph; an MNN test is
    bisected with the one-test oracle (``bisect --test``); both are written up from B's results."""
    variant, icd = (row.key[1], row.key[2]) if row.room == "training" else (row.key[0], row.key[1])
    good, bad = a.commit or a.ref, b.commit or b.ref
    mode = BISECT_MODES.get(variant)
    report = {"issue": str(b.results[row.room])}
    out: list[Action] = []
    if row.room == "training":
        report["cell"] = next(iter(_cell_ids(b.results[row.room], row)), "")
        if mode is None:
            return [
                Action("skip", {"why": f"{variant}: the reducer and bisect take a Vulkan mode only"}),
                Action("report", report),
            ]
        out.append(Action("reduce", {"ref": bad, "variant": variant, "icd": icd, "workload": row.key[0]}))
        out.append(Action("bisect", {"good": good, "bad": bad, "mode": mode, "icd": icd, "repro": "<reduce>"}))
    else:
        report["test"] = row.key[2]
        if mode is None:
            return [
                Action("skip", {"why": f"{variant}: bisect --test takes a Vulkan mode only"}),
                Action("report", report),
            ]
        out.append(Action("bisect", {"good": good, "bad": bad, "mode": mode, "icd": icd, "test": row.key[2]}))
    report["bisect"] = "<bisect>"
    return [*out, Action("report", report)]


def _cell_ids(results: Path, row: Row) -> list[str]:
    """B's cell id of a training finding (the report picks the crash by it)."""
    try:
        data = json.loads((results / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    return [str(c["cell"]) for c in data.get("cells") or [] if outcomes({"cells": [c]}).get(row.key) is not None]


# -- running the plan ---------------------------------------------------------------------------------------------
class Heavy(Protocol):
    """The steps that build MNN (injected: the unit tests fake them). Each returns its results directory (None:
    the step did not produce one; the next steps are then skipped and the reason recorded)."""

    def reduce(self, args: dict[str, str], out: Path) -> Path | None: ...
    def bisect(self, args: dict[str, str], out: Path) -> Path | None: ...
    def report(self, args: dict[str, str], out: Path) -> Path | None: ...


def execute(actions: Sequence[Action], out: Path, heavy: Heavy, say: Callable[[str], None]) -> list[dict[str, str]]:
    """Run one finding's plan into ``out``; a placeholder (``<reduce>``, ``<bisect>``) becomes the directory that
    step wrote; a step whose input is missing is recorded as not run, never silently dropped."""
    done: dict[str, Path] = {}
    log: list[dict[str, str]] = []
    for action in actions:
        if action.step == "skip":
            log.append({"step": "skip", "why": action.args["why"]})
            continue
        args = dict(action.args)
        missing = [v for v in args.values() if v.startswith("<") and v.strip("<>") not in done]
        if missing and action.step != "report":
            log.append({"step": action.step, "result": f"not run: {', '.join(missing)} produced nothing"})
            continue
        args = {k: str(done[v.strip("<>")]) if v.startswith("<") else v for k, v in args.items() if v not in missing}
        say(f"  {action.step} {' '.join(f'--{k} {v}' for k, v in args.items())}")
        got = getattr(heavy, action.step)(args, out)
        if got is not None:
            done[action.step] = got
        log.append({"step": action.step, **args, "result": str(got) if got is not None else "produced nothing"})
    return log


def load_side(paths: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        file = path / "summary.json" if path.is_dir() else path
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {file}: {exc}", hint="--a-results/--b-results take results dirs") from exc
        if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
            raise ConfigError(f"{file} is not a session summary (no cells)")
        data["_dir"] = str(file.parent)
        out.append(data)
    return out


def side_of(ref: str, summaries: Sequence[dict[str, Any]]) -> Side:
    """The side's ref and commit as its summaries record them (ops: top level; training: the header)."""
    heads: list[dict[str, Any]] = [s["header"] if isinstance(s.get("header"), dict) else s for s in summaries]
    commits = {str(h.get("commit") or "") for h in heads} - {"", "0" * 40}
    refs = {str(h.get("ref") or "") for h in heads} - {""}
    return Side(
        ref or ",".join(sorted(refs)),
        commits.pop() if len(commits) == 1 else "",
        {room_of(s): Path(str(s["_dir"])) for s in summaries},
    )


def _progress(step: dict[str, str]) -> str:
    return " ".join(x for x in (step["step"], step.get("result", step.get("why", ""))) if x)


def write(top: Path, rows: Sequence[Row], a: Side, b: Side, plans: dict[str, Any]) -> str:
    """triage.json and summary.md at the top of the triage's results; returns the Markdown. Written before the
    heavy steps and again after each finding's, so what a kill leaves is true: a finding not yet done says so."""
    found = findings(rows)
    head = f"# triage {a.ref} -> {b.ref}"
    changed = sum(1 for r in rows if r.kind == CHANGE)
    pending = sum(1 for p in plans.values() if any(s["step"] == PENDING for s in p))
    verdict = f"{len(found)} finding(s)" if found else "no difference: nothing that passes at A fails at B"
    left_out = sum(1 for p in plans.values() if any(s["step"].startswith(NOT_TRIAGED) for s in p))
    if left_out:
        verdict += f"; {left_out} {NOT_TRIAGED} (over --max-findings, listed below)"
    if pending:
        verdict += f"; triage unfinished: {pending} still pending (not yet reduced, bisected or written up)"
    if not found and changed:
        verdict = f"no regression found; {changed} change(s) where B did not pass on the GPU either (listed below)"
    if exit_code(rows) == EXIT_NOTHING_COMPARABLE:
        verdict = "nothing comparable: no cell or test ran at both A and B"
    lines = [head, "", f"**{verdict}**", "", "| room | " + " | ".join(KINDS) + " |", "| --- |" + " --- |" * len(KINDS)]
    lines += [f"| {room} | " + " | ".join(str(c[k]) for k in KINDS) + " |" for room, c in counts(rows).items()]
    lines += [
        "",
        "Regressions: A passes (ops PASS/UNEXPECTED-PASS; training PASS/FIXED), B fails (ops FAIL/CRASH/"
        "TIMEOUT; training FAIL/REPRODUCED/UNEXPECTED-CRASH/HANG/KNOWN-WRONG). Other changes (FALLBACK, NO-GPU-WORK, "
        "NOT-EXERCISED, CPU-FAIL, ...) are listed: B ran nothing wrong on the GPU to reduce, nor passed.",
        "",
    ]
    for name, p in plans.items():
        lines += [f"- {name}: " + "; ".join(_progress(s) for s in p)]
    md = "\n".join([*lines, "", tables(rows, f"A {a.ref}", f"B {b.ref}", only_changed=bool(found))])
    (top / "summary.md").write_text(md + "\n")
    data = {
        "a": {**asdict(a), "results": {k: str(v) for k, v in a.results.items()}},
        "b": {**asdict(b), "results": {k: str(v) for k, v in b.results.items()}},
        "counts": counts(rows),
        "exit": exit_code(rows),
        "findings": plans,
        "rows": [{**asdict(r), "key": list(r.key)} for r in rows],
    }
    (top / "triage.json").write_text(json.dumps(data, indent=1))
    return md


def triage(
    rows: Sequence[Row],
    a: Side,
    b: Side,
    top: Path,
    heavy: Heavy | None,
    say: Callable[[str], None] = print,
    max_findings: int = MAX_FINDINGS,
) -> int:
    """Plan (and with ``heavy``, run) the first ``max_findings`` findings, each into top/finding-N-<slug>/; the
    rest are listed as not triaged. The top files are written first (every finding pending) and after each
    finding, so a step timeout leaves a current summary; returns the exit code (a finding is one, triaged or not)."""
    found = [(f"finding-{n}-{slug(row)}", row) for n, row in enumerate(findings(rows), 1)]
    plans: dict[str, Any] = {
        name: [{"step": PENDING} if n <= max_findings else {"step": f"{NOT_TRIAGED} (limit {max_findings})"}]
        for n, (name, _) in enumerate(found, 1)
    }
    write(top, rows, a, b, plans)
    for name, row in found[:max_findings]:
        actions = plan(row, a, b)
        say(f"{name}: {row.room} {row.name}: {row.a} -> {row.b}")
        if heavy is None:
            plans[name] = [{"step": x.step, **x.args, "result": "planned (--plan-only)"} for x in actions]
            for x in actions:
                say(f"  would {x.step} {' '.join(f'--{k} {v}' for k, v in x.args.items())}")
            continue
        out = top / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "finding.json").write_text(json.dumps({**asdict(row), "key": list(row.key)}, indent=1))
        plans[name] = execute(actions, out, heavy, say)
        write(top, rows, a, b, plans)
    for name, _ in found[max_findings:]:
        say(f"{name}: not triaged (--max-findings {max_findings})")
    say(write(top, rows, a, b, plans))
    say(f"(triage written to {top})")
    return exit_code(rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="the ref that passes (older: a regression is looked for), or a label with --a-results")
    p.add_argument("b", help="the ref to triage, e.g. upstream HEAD")
    p.add_argument(
        "--a-results",
        dest="a_results",
        type=Path,
        action="append",
        default=[],
        help="a finished results directory of A (repeat: ops and training); nothing is run at A",
    )
    p.add_argument("--b-results", dest="b_results", type=Path, action="append", default=[])
    p.add_argument(
        "--plan-only",
        dest="plan_only",
        action="store_true",
        help="no reduce, bisect or report: print what each finding would get",
    )
    p.add_argument(
        "--max-findings",
        dest="max_findings",
        type=_positive,
        default=MAX_FINDINGS,
        help=f"reduce, bisect and write up at most N findings (default {MAX_FINDINGS}); the rest are listed",
    )
    p.add_argument("--icd", dest="icds", help="comma-separated Vulkan ICDs (default lavapipe)")
    p.add_argument("--variants", help="comma-separated (default cpu,vulkan-image,vulkan-buffer)")
    p.add_argument("--workload", help="training workloads (default mnist)")
    p.add_argument("--select", help="MNN tests to run (default the expectations' selection)")
    p.add_argument("--git-dir", dest="git_dir", type=Path, help="git repository of MNN for bisect (bare ok)")
    p.add_argument("--results-dir", dest="results_dir")
    p.add_argument("--cache-dir", dest="cache_dir")
    p.add_argument("--runner", choices=["auto", "host", "docker"])
    p.add_argument("--no-gdb", dest="gdb", action="store_const", const=False)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {text!r}")
    return n
