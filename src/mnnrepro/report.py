"""Reports of one session: the terminal verdict table, and in the results directory summary.json (versioned,
machine-readable), junit.xml (one testcase per cell), summary.md (also appended to GitHub's step summary) and
loss.png (the loss curve of every cell that trained, CPU baseline included).

Every writer reads only what ``summary()`` returns, so a report can be rebuilt from a saved summary.json.
NOT-EXERCISED and HANG are failures in every report, never a pass or a skip (alibaba/MNN#3129: a Vulkan run
that silently fell back to the CPU proves nothing).
"""

from __future__ import annotations

import json
import math
import os
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from . import shard, validation
from .cells import CellRun
from .judge import NEVER_PASS, Verdict
from .signature import SIGNAL_ONLY

SUMMARY_FORMAT = 1
SUMMARY_FILE = "summary.json"
JUNIT_FILE = "junit.xml"
MARKDOWN_FILE = "summary.md"
LOSS_PLOT_FILE = "loss.png"
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"

# Verdicts that fail a report even where an expectation would accept them (none does today: belt and braces).


def table(rows: list[tuple[CellRun, Verdict]]) -> str:
    head = ("cell", "verdict", "expected", "signal", "stage", "device", "why", "backtrace")
    lines = [head]
    for run, v in rows:
        ev = v.evidence
        mark = "ok" if v.matched else "MISMATCH"
        lines.append(
            (
                run.cell.id,
                v.verdict,
                f"{v.expected or '-'} {mark}",
                ev.get("signal") or "-",
                ev.get("stage") or "-",
                (ev.get("device") or "-")[:34],
                v.reason[:90],
                # A crash with no backtrace says how it was judged where the backtrace would be (issue 22).
                ev.get("backtrace") or (judged_by(ev) and f"none: {judged_by(ev)}") or "-",
            )
        )
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(head) - 2)]
    out = []
    for r in lines:
        cells = [str(r[i]).ljust(widths[i]) for i in range(len(head) - 2)]
        out.append("  ".join(cells) + "  " + str(r[-2]))
        if r is not lines[0] and r[-1] != "-":
            out.append(" " * 4 + "backtrace: " + str(r[-1]))
    for run, v in rows:  # the Khronos layer's record of a cell run under it (issue 25)
        if v.evidence.get("validation"):
            out.append(f"  {run.cell.id}: {validation.one_line(v.evidence['validation'])}")
    return "\n".join(out)


def validation_table(data: dict[str, Any], width: int = 110) -> str:
    """VUID, count, first MNN frame and first message of every cell run under the validation layer ("" when none
    was)."""
    rows = validation.vuid_rows(data.get("cells", []))
    if not rows:
        return ""
    lines = [f"{'cell':34}  {'VUID':56}  {'count':>6}  {'':6}  {'MNN frame':44}  first message"]
    # The frame's function only here (its file and line are in summary.md and validation.json).
    for c, v, n, k, f, first in rows:
        lines.append(f"{c[:34]:34}  {v:56}  {n:>6}  {k:6}  {f.split(' (')[0][:44]:44}  {first[:width]}")
    return "\n".join(lines)


INTERRUPTED = "INTERRUPTED"


def interrupted_cell(cell_id: str, ref: str, variant: str, icd: str, reason: str) -> dict[str, Any]:
    """A planned cell that did not finish because the session was stopped: never a pass, never matched."""
    return {
        "cell": cell_id,
        "ref": ref,
        "variant": variant,
        "icd": icd,
        "verdict": INTERRUPTED,
        "expected": "",
        "matched": False,
        "reason": reason,
        "checks": [],
        "evidence": {},
        "losses": [],
        "accuracy": None,
        "placement": {},
    }


def summary(header: dict[str, Any], rows: list[tuple[CellRun, Verdict]]) -> dict[str, Any]:
    return {
        "format": SUMMARY_FORMAT,
        "status": "complete",
        "header": header,
        "cells": [
            {
                "cell": run.cell.id,
                "ref": run.cell.ref,
                "variant": run.cell.variant,
                "icd": run.cell.icd,
                "verdict": v.verdict,
                "expected": v.expected,
                "matched": v.matched,
                "reason": v.reason,
                "checks": [c.__dict__ for c in v.checks],
                "evidence": v.evidence,
                "losses": run.record.losses,
                "accuracy": run.record.accuracy,
                "placement": run.record.placement(0),
            }
            for run, v in rows
        ],
        "all_matched": all(v.matched for _, v in rows),
    }


def placement_rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    """Step 0 of every cell that ran ops: where they ran, per phase (forward, grad_dump, sgd_step)."""
    rows: list[tuple[str, ...]] = []
    for c in data["cells"]:
        if c.get("variant") == "cpu":  # the baseline: nothing of it "falls back"
            continue
        for phase, p in (c.get("placement") or {}).items():
            ops = p.get("ops") or {}
            gpu = sum(n for b, n in ops.items() if b not in ("cpu", "unknown"))
            cpu_ops = ", ".join(f"{t} x{n}" for t, n in (p.get("cpu_ops") or {}).items()) or "-"
            rows.append(
                (str(c["cell"]), str(phase), str(gpu), str(ops.get("cpu", 0)), cpu_ops, str(p.get("backend_switches")))
            )
    return rows


PLACEMENT_HEAD = ("cell", "phase (step 0)", "GPU ops", "CPU ops", "ops that fell back to CPU", "backend switches")


def placement_table(data: dict[str, Any]) -> str:
    rows = [PLACEMENT_HEAD, *placement_rows(data)]
    if len(rows) == 1:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(PLACEMENT_HEAD))]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(len(r))).rstrip() for r in rows)


def write_summary(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def write_all(results: Path, data: dict[str, Any]) -> list[Path]:
    """Write every report of ``data`` (what ``summary()`` returns) into ``results``; return the files written.

    loss.png is left out (and a stale one removed) when no cell trained. summary.md is also appended to the
    file named by $GITHUB_STEP_SUMMARY when that is set; that file is not in the returned list.
    """
    results.mkdir(parents=True, exist_ok=True)
    written = [results / SUMMARY_FILE, results / JUNIT_FILE]
    write_summary(written[0], data)
    write_junit(written[1], data)
    plot = results / LOSS_PLOT_FILE
    plot_note = write_loss_plot(plot, data)
    if plot_note is None:
        written.append(plot)
    md = results / MARKDOWN_FILE
    md.write_text(markdown(data, base=results, loss_plot=plot.name if plot_note is None else None, note=plot_note))
    written.append(md)
    step_summary = os.environ.get(STEP_SUMMARY_ENV)
    if step_summary:
        # The step summary cannot show files of the run: point at the uploaded results directory instead.
        note = f"{plot_note or 'loss curves: ' + plot.name}; all reports: `{results}` (the results artifact)"
        with open(step_summary, "a", encoding="utf-8") as out:
            out.write(markdown(data, base=results, loss_plot=None, note=note) + "\n")
    return written


# --- shared pieces ---------------------------------------------------------------------------------------


def failed(cell: dict[str, Any]) -> bool:
    """A cell fails a report when it missed its expectation; NOT-EXERCISED and HANG always fail."""
    return not cell.get("matched") or cell.get("verdict") in NEVER_PASS


def _short(commit: Any) -> str:
    return str(commit)[:10] if commit else "commit unknown"


def ref_headers(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per MNN ref of the run: its part of the header (commit, source, toolchain, compat measure, ICDs).

    A session over several refs records each under header["refs"]; a one-ref header is its own entry.
    Refs that only the cells name get an empty entry."""
    h = data["header"]
    out: dict[str, dict[str, Any]] = {}
    per_ref = h.get("refs")
    if isinstance(per_ref, dict) and per_ref:
        out.update({str(r): dict(v) if isinstance(v, dict) else {} for r, v in per_ref.items()})
    elif h.get("ref"):
        out[str(h["ref"])] = dict(h)
    for c in data["cells"]:
        out.setdefault(str(c["ref"]), {})
    return out


def refs_line(data: dict[str, Any]) -> str:
    """'3.3.0 (5047919a1a), 47027e10 (47027e1099)': each ref with its commit."""
    return ", ".join(f"{r} ({_short(v.get('commit'))})" for r, v in ref_headers(data).items())


def devices(data: dict[str, Any]) -> dict[str, str]:
    """Per ICD (or variant, where no ICD applies): the device the driver named, with its driver."""
    out: dict[str, str] = {}
    for c in data["cells"]:
        ev = c.get("evidence") or {}
        key = c["icd"] if c["icd"] != "-" else c["variant"]
        name = ev.get("device") or ""
        if not name or key in out:
            continue
        out[key] = f"{name}; driver {ev['driver']}" if ev.get("driver") else str(name)
    return out


def fingerprint(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The run header as (label, value) pairs: what a reader needs to reproduce or compare this run."""
    h = data["header"]
    per_ref = ref_headers(data)
    rows: list[tuple[str, str]] = []
    for ref, rh in per_ref.items():
        origin = f" (source: {rh['source_origin']})" if rh.get("source_origin") else ""
        rows.append(
            (f"MNN {ref}" if len(per_ref) > 1 else "MNN", f"{ref} @ {rh.get('commit') or 'commit unknown'}{origin}")
        )
        if rh.get("compat"):
            rows.append((f"compatibility measure {ref}", str(rh["compat"])))
    toolchains = {
        json.dumps(rh.get("toolchain") or h.get("toolchain") or {}, sort_keys=True) for rh in per_ref.values()
    }
    for text in sorted(toolchains):  # one row unless refs were built with different toolchains
        toolchain = json.loads(text)
        if toolchain:
            rows.append(("toolchain", "; ".join(f"{k}: {v}" for k, v in toolchain.items())))
    runner = str(h.get("runner") or "?")
    for key in ("image", "image_digest"):  # the docker runner's image, where it records one
        if h.get(key):
            runner += f", {key.replace('_', ' ')} {h[key]}"
    rows.append(("runner", runner))
    if h.get("host") or h.get("python"):
        rows.append(("host", f"{h.get('host', '?')}, Python {h.get('python', '?')}"))
    absent = {str(rh.get("gdb_absent")) for rh in per_ref.values() if rh.get("gdb_absent")}
    for why in sorted(absent):  # crashes were judged by their signal only (issue 22)
        rows.append(("gdb", f"none ({why}): crashes {SIGNAL_ONLY}"))
    icds = h.get("icds") or {}
    found = devices(data)
    for name in sorted(set(icds) | set(found)):
        parts = [str(icds[name])] if name in icds else []
        if name in found:
            parts.append(found[name])
        rows.append((f"ICD/device {name}" if name in icds else f"device {name}", " — ".join(parts)))
    w = h.get("workload") or {}
    if w:
        rows.append(
            (
                "workload",
                f"{w.get('steps')} steps x batch {w.get('batch_size')}, seed {w.get('seed')}, "
                f"precision {w.get('precision')}",
            )
        )
    rows.append(("suite", f"mnnrepro {h.get('suite', '?')}, session {h.get('session', '?')}"))
    if h.get("build_seconds") is not None:
        rows.append(("build", f"{h['build_seconds']} s"))
    return rows


def _relative(path: Any, base: Path | None) -> str:
    text = str(path)
    if base is not None:
        try:
            return str(Path(text).relative_to(base))
        except ValueError:
            pass
    return text


def _frames(frames: Any) -> str:
    """A call stack, innermost first: 'a <- b <- c'."""
    if isinstance(frames, list | tuple):
        return " <- ".join(str(f) for f in frames if f)
    return str(frames)


def judged_by(evidence: dict[str, Any]) -> str:
    """'judged by signal only (no gdb: why)' for a crash judged without a backtrace, else ""."""
    words = str(evidence.get("judged_by") or "")
    return words if words.startswith(SIGNAL_ONLY) else ""


def evidence_lines(cell: dict[str, Any], base: Path | None = None) -> list[str]:
    """The evidence of one verdict as short 'name: value' lines (JUnit failure text, Markdown cell details)."""
    ev = cell.get("evidence") or {}
    lines = [
        f"verdict: {cell['verdict']} (expected {cell.get('expected') or 'nothing: no expectation'})",
        f"reason: {cell.get('reason', '')}",
        f"backend: requested {ev.get('requested_backend') or '?'}, active {ev.get('active_backend') or 'none'}",
    ]
    if ev.get("device"):
        lines.append(f"device: {ev['device']}" + (f"; driver {ev['driver']}" if ev.get("driver") else ""))
    lines.append(
        f"exit: code {ev.get('exit_code')}, signal {ev.get('signal') or '-'}, last stage {ev.get('stage') or '-'}, "
        f"{ev.get('duration_s', '?')} s"
    )
    if ev.get("signature"):
        lines.append(f"crash signature: {_frames(ev['signature'])}")
    if judged_by(ev):
        lines.append(f"crash {judged_by(ev)}: no backtrace, the crash signature not checked")
    if ev.get("top_frames"):
        lines.append(f"top frames: {_frames(ev['top_frames'])}")
    if ev.get("backtrace"):
        lines.append(f"backtrace: {_relative(ev['backtrace'], base)}")
    if ev.get("bug_op"):  # FIXED vs FIXED-BY-FALLBACK: where the known bug's op ran (judge.op_placement)
        op = ev["bug_op"]
        ran = ", ".join(f"{b} {n}" for b, n in sorted((op.get("backends") or {}).items())) or "placement unknown"
        lines.append(f"known bug's op: {op.get('op')} in {op.get('phase')}: {ran}")
    for check in cell.get("checks") or []:
        if not check.get("passed"):
            lines.append(f"check {check['name']} failed: {check.get('detail', '')}")
    if cell.get("accuracy") is not None:
        lines.append(f"accuracy: {cell['accuracy']}")
    if ev.get("result_dir"):
        lines.append(f"files: {_relative(ev['result_dir'], base)}")
    if ev.get("command"):
        lines.append("command: " + " ".join(str(a) for a in ev["command"]))
    return lines


# --- JUnit XML -------------------------------------------------------------------------------------------

# Characters XML 1.0 cannot carry (driver output may contain escape codes); ElementTree would write them as is.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(value: Any) -> str:
    return _XML_ILLEGAL.sub("?", "" if value is None else str(value))


def _properties(parent: ET.Element, items: list[tuple[str, Any]]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in items:
        ET.SubElement(props, "property", name=_x(name), value=_x(value))


def junit(data: dict[str, Any]) -> ET.Element:
    """One testsuite, one testcase per cell (classname ref/variant). A cell that missed its expectation, and
    every NOT-EXERCISED or HANG cell, has a <failure>; nothing is ever <skipped>."""
    h = data["header"]
    cells = data["cells"]
    n_failed = sum(failed(c) for c in cells)
    total = sum(float((c.get("evidence") or {}).get("duration_s") or 0.0) for c in cells)
    name = f"mnnrepro.{h.get('session', 'session')}" + (f" ({_partial(data)})" if data.get("shard") else "")
    counts = {"tests": str(len(cells)), "failures": str(n_failed), "errors": "0", "skipped": "0"}
    root = ET.Element("testsuites", {"name": "mnnrepro", "time": f"{total:.3f}", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": _x(name), "time": f"{total:.3f}", **counts})
    _properties(suite, [("format", data.get("format")), ("status", data.get("status", "")), *fingerprint(data)])
    for c in cells:
        ev = c.get("evidence") or {}
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_x(f"{c['ref']}/{c['variant']}"),
            name=_x(c["cell"]),
            time=f"{float(ev.get('duration_s') or 0.0):.3f}",
        )
        _properties(
            case,
            [
                ("verdict", c["verdict"]),
                ("expected", c.get("expected") or ""),
                ("matched", str(bool(c.get("matched"))).lower()),
                ("device", ev.get("device") or ""),
                ("signal", ev.get("signal") or ""),
                ("stage", ev.get("stage") or ""),
                ("signature", _frames(ev["signature"]) if ev.get("signature") else ""),
                ("active_backend", ev.get("active_backend") or ""),
                ("backtrace", ev.get("backtrace") or ""),
            ],
        )
        text = "\n".join(evidence_lines(c))
        if failed(c):
            expected = c.get("expected") or "no expectation"
            failure = ET.SubElement(
                case, "failure", message=_x(f"{c['verdict']} (expected {expected}): {c.get('reason', '')}")
            )
            failure.set("type", _x(c["verdict"]))
            failure.text = _x(text)
        else:
            ET.SubElement(case, "system-out").text = _x(text)
    return root


def write_junit(path: Path, data: dict[str, Any]) -> None:
    tree = ET.ElementTree(junit(data))
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


# --- Markdown --------------------------------------------------------------------------------------------


def _md(value: Any) -> str:
    """One table cell: pipes escaped, on one line."""
    text = "-" if value is None or value == "" else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _row(*cells: Any) -> str:
    return "| " + " | ".join(_md(c) for c in cells) + " |"


def markdown(
    data: dict[str, Any], *, base: Path | None = None, loss_plot: str | None = None, note: str | None = None
) -> str:
    """The run as Markdown: header fingerprint, verdict table, each cell's evidence and checks."""
    cells = data["cells"]
    out = _md_title(data) + _md_verdicts(cells, base) + _md_placement(data) + _md_validation(data)
    if loss_plot:
        out += ["", f"![loss per step, every cell that trained]({loss_plot})"]
    if note:
        out += ["", note]
    out += ["", "### Cells", ""]
    for c in cells:
        out += _md_cell(c, base)
    return "\n".join(out).rstrip() + "\n"


def _md_validation(data: dict[str, Any]) -> list[str]:
    """The Khronos layer's VUIDs per cell (issue 25): none when no cell ran under it."""
    rows = validation.vuid_rows(data.get("cells", []))
    if not rows:
        return []
    head = _row("cell", "VUID", "count", "row", "MNN frame", "first message")
    out = ["", "### Validation layer", "", head, _row(*["---"] * 6)]
    return out + [_row(c, v, n, k, f[:160], first[:300]) for c, v, n, k, f, first in rows]


def _md_title(data: dict[str, Any]) -> list[str]:
    """The heading (session, refs, how many cells matched) and the run's fingerprint table."""
    h = data["header"]
    cells = data["cells"]
    bad = [c for c in cells if failed(c)]
    refs = refs_line(data)
    outcome = (
        "every cell matched its expectation"
        if not bad
        else f"{len(bad)} of {len(cells)} cell(s) did NOT match their expectation"
    )
    if data.get("status") == INTERRUPTED:
        outcome = f"INTERRUPTED; {outcome}"
    if data.get("shard"):  # issue 26: a shard's run never reads as a whole verdict
        outcome = f"{_partial(data)}; {outcome}"
    out = [f"## mnnrepro {h.get('session', '')}: MNN {refs}: {outcome}", "", *_md_scope(data)]
    out += ["| run | |", "| --- | --- |", *(_row(k, v) for k, v in fingerprint(data)), ""]
    return out


def _partial(data: dict[str, Any]) -> str:
    return shard.Shard(int(data["shard"]["index"]), int(data["shard"]["total"])).partial_line


def _md_scope(data: dict[str, Any]) -> list[str]:
    """Issue 26: a shard's slice and that stale rows wait for the merge; a merge's shards, stale rows, unexpected
    passes (judged over every cell: workloads/train/shards.py). None for a whole run with neither."""
    out = []
    if s := data.get("shard"):
        out.append(
            f"**{_partial(data)}**: {len(s['tests'])} of the session's {s['selection_tests']} GPU cells, with the CPU "
            f"baseline(s) they need. {data.get('stale_not_judged', '')}."
        )
    if data.get("merged"):
        out.append(merged_line(data))
    out += [
        f"- **STALE** {s['row']}: trained right in {', '.join(s['trained_right'])}" for s in data.get("stale") or []
    ]
    if data.get("unexpected_passes"):
        out.append(f"- unexpected passes: {', '.join(data['unexpected_passes'])}")
    return [*out, ""] if out else []


def merged_line(data: dict[str, Any]) -> str:
    """What a merged summary (`mnnrepro merge`, ops or training) was made of: every shard, whence, its status."""
    m = data["merged"]
    shards = "; ".join(f"{s['index']}/{m['total']} from {s['from']} ({s['status']})" for s in m["shards"])
    return f"Merged from {len(m['shards'])} shard(s) of {m['total']} (seed {m['seed']}): {shards}."


def _md_verdicts(cells: list[dict[str, Any]], base: Path | None) -> list[str]:
    """The verdict table, one row per cell, and where the backtraces are."""
    out = [
        "### Verdicts",
        "",
        "| cell | verdict | expected | match | signal | stage | device | reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cells:
        ev = c.get("evidence") or {}
        out.append(
            _row(
                c["cell"],
                f"**{c['verdict']}**" + (" (signal only)" if judged_by(ev) else ""),
                c.get("expected") or "-",
                "**MISMATCH**" if failed(c) else "ok",
                ev.get("signal"),
                ev.get("stage"),
                ev.get("device"),
                c.get("reason"),
            )
        )
    traces = [c for c in cells if (c.get("evidence") or {}).get("backtrace")]
    if traces:
        out += ["", "Backtraces:", ""]
        out += [f"- {c['cell']}: `{_relative(c['evidence']['backtrace'], base)}`" for c in traces]
    return out


def _md_placement(data: dict[str, Any]) -> list[str]:
    """The op placement table (step 0), where any cell traced its ops."""
    placement = placement_rows(data)
    if not placement:
        return []
    return [
        "",
        "### Op placement (step 0)",
        "",
        "Where each op of the training step ran, read from MNN's executor callbacks; a backend switch "
        "between consecutive ops implies at least one host-device copy.",
        "",
        "| " + " | ".join(PLACEMENT_HEAD) + " |",
        "|" + " --- |" * len(PLACEMENT_HEAD),
        *(_row(*r) for r in placement),
    ]


def _md_cell(c: dict[str, Any], base: Path | None) -> list[str]:
    """One cell's evidence, command line and checks, folded (open where it did not match)."""
    mark = "MISMATCH" if failed(c) else "ok"
    out = [
        f"<details{' open' if failed(c) else ''}><summary>{_html(c['cell'])}: {_html(c['verdict'])} "
        f"(expected {_html(c.get('expected') or 'nothing')}, {mark})</summary>",
        "",
    ]
    out += [f"- {_md(line)}" for line in evidence_lines(c, base) if not line.startswith("command: ")]
    command = (c.get("evidence") or {}).get("command")
    if command:
        out += ["", "```", " ".join(str(a) for a in command), "```"]
    out += _md_checks(c.get("checks") or [])
    out += ["", "</details>", ""]
    return out


def _md_checks(checks: list[dict[str, Any]]) -> list[str]:
    """A cell's checks as a table (none: no lines)."""
    if not checks:
        return []
    return [
        "",
        "| check | result | detail | value | limit |",
        "| --- | --- | --- | --- | --- |",
        *(
            _row(
                k["name"],
                {"fail": "**FAIL**"}.get(k.get("status") or "", k.get("status") or "")
                or ("pass" if k.get("passed") else "**FAIL**"),
                k.get("detail"),
                k.get("value"),
                k.get("limit"),
            )
            for k in checks
        ),
    ]


def _html(value: Any) -> str:
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- loss plot -------------------------------------------------------------------------------------------


def _why(cell: dict[str, Any]) -> str:
    ev = cell.get("evidence") or {}
    if ev.get("signal"):
        return f"{ev['signal']} at {ev.get('stage') or '?'}"
    return textwrap.shorten(str(cell.get("reason", "")), width=80, placeholder=" ...")


def _trained(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in data["cells"] if c.get("losses")]


def write_loss_plot(path: Path, data: dict[str, Any]) -> str | None:
    """Draw loss.png: loss per step of every cell that trained (CPU baseline in black), and below it each GPU
    cell's difference from the CPU loss of its ref. Returns None when written, else why not (nothing is left
    at ``path`` then)."""
    path.unlink(missing_ok=True)
    cells = _trained(data)
    if not cells:
        return "loss.png not written: no cell trained (no step losses)"
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "loss.png not written: matplotlib is missing (pip install matplotlib)"

    cpu = {c["ref"]: c for c in cells if c["variant"] == "cpu"}
    compared = [c for c in cells if c["variant"] != "cpu" and c["ref"] in cpu]
    fig = Figure(figsize=(10, 7.5 if compared else 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, without pyplot's global state
    if compared:
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    else:
        top, bottom = fig.subplots(1, 1), None
    _plot_losses(top, cells, cpu)
    if bottom is not None:
        _plot_cpu_differences(bottom, compared, cpu, data["header"].get("checks") or {})
    (bottom or top).set_xlabel("step")
    fig.suptitle(_loss_plot_title(data), fontsize=11)
    notes = _loss_plot_notes(data, cells)
    if notes:
        top.text(0.01, 0.02, "\n".join(notes), transform=top.transAxes, fontsize=8, color="firebrick", va="bottom")
    fig.savefig(path, format="png")
    return None


def _plot_losses(ax: Any, cells: list[dict[str, Any]], cpu: dict[str, dict[str, Any]]) -> None:
    """Loss per step of each cell: the CPU baselines (one per ref) in black and greys, each GPU cell its own
    line and markers, a crash's signal at its last loss."""
    styles = ["--", "-.", ":", (0, (5, 1, 1, 1))]
    markers = ["o", "s", "^", "D", "v", "P"]
    for i, c in enumerate(sorted(cells, key=lambda c: (c["variant"] != "cpu", c["cell"]))):
        losses = [float(x) for x in c["losses"]]
        ev = c.get("evidence") or {}
        label = f"{c['cell']}: {ev.get('device') or '?'} [{c['verdict']}]"
        if c["variant"] == "cpu":
            k = list(cpu).index(c["ref"])  # one CPU baseline per ref: black, then greys, solid then dashed
            shade, dash = ("black", "dimgray", "darkgray")[k % 3], ("-", "--")[k // 3 % 2]
            ax.plot(range(len(losses)), losses, color=shade, linestyle=dash, linewidth=2.5, label=label, zorder=1)
        else:
            j = i % len(markers)
            ax.plot(
                range(len(losses)),
                losses,
                linestyle=styles[j % len(styles)],
                marker=markers[j],
                markevery=max(1, len(losses) // 10),
                markersize=5,
                linewidth=1.5,
                label=label,
                zorder=2,
            )
        if ev.get("signal") and losses:  # trained some steps, then crashed: mark where
            ax.annotate(str(ev["signal"]), (len(losses) - 1, losses[-1]), color="red", fontsize=8)
    ax.set_ylabel("loss (cross-entropy)")
    ax.set_title("loss per training step", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _plot_cpu_differences(
    ax: Any, compared: list[dict[str, Any]], cpu: dict[str, dict[str, Any]], checks: dict[str, Any]
) -> None:
    """Each GPU cell's loss minus the CPU loss of its ref, over the judge's band where the matrix sets one."""
    for c in compared:
        base = [float(x) for x in cpu[c["ref"]]["losses"]]
        diff = [float(a) - b for a, b in zip(c["losses"], base, strict=False)]
        ax.plot(range(len(diff)), diff, marker=".", linewidth=1.2, label=c["cell"])
        if "loss_abs_tolerance" in checks:  # the judge's limit: abs + rel * |cpu loss|
            limit = [checks["loss_abs_tolerance"] + checks.get("loss_rel_tolerance", 0.0) * abs(b) for b in base]
            ax.fill_between(range(len(limit)), [-x for x in limit], limit, color="grey", alpha=0.08)
    ax.axhline(0.0, color="black", linewidth=1)
    ax.set_ylabel("loss - CPU loss")
    ax.set_title("difference from the CPU baseline of the same ref and seed", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _loss_plot_title(data: dict[str, Any]) -> str:
    """Refs, session and every device that ran."""
    every = [c.get("evidence") or {} for c in data["cells"]]
    names = list(dict.fromkeys(str(ev["device"]) for ev in every if ev.get("device")))
    return f"MNN {refs_line(data)}, session {data['header'].get('session', '?')}: loss per step\n" + textwrap.fill(
        "devices: " + ("; ".join(names) or "?"), width=110
    )


def _loss_plot_notes(data: dict[str, Any], cells: list[dict[str, Any]]) -> list[str]:
    """What the curves do not show: cells without losses (and why), NaN/Inf gaps."""
    notes = [f"no losses: {c['cell']} [{c['verdict']}: {_why(c)}]" for c in data["cells"] if not c.get("losses")]
    if any(not math.isfinite(float(x)) for c in cells for x in c["losses"]):
        notes.append("NaN/Inf losses are gaps in the curves")
    return notes
