"""Reports of the ops session (issue 13), from its summary.json dictionary only: the terminal table, summary.json,
junit.xml (one test case per MNN test per cell), summary.md; and the comparison of two runs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .judge import CHANGES, NOT_RUN, STATUSES
from .opvalidation import one_line as validation_line

SHORT = {"NOT-EXERCISED": "NOT-EX", "UNEXPECTED-PASS": "UNEXP-PASS"}


def _columns(data: dict[str, Any]) -> list[str]:
    """The statuses any cell has, in STATUSES order (PASS always). NOT-RUN is not among them: see _not_run."""
    seen = {s for c in data.get("cells", []) for s, n in c.get("counts", {}).items() if n}
    return [s for s in STATUSES if s == "PASS" or s in seen]


def _count(c: dict[str, Any], status: str) -> str:
    """A cell's count of one status, with what is counted apart inside it: slow passes, partial fallbacks."""
    n = str(c["counts"].get(status, 0))
    if status == "PASS" and c.get("slow"):
        return f"{n} ({c['slow']} slow)"
    if status == "FALLBACK" and c.get("partial_fallback"):
        return f"{n} ({c['partial_fallback']} partial)"
    return n


def _not_run(c: dict[str, Any]) -> str:
    """ "N (why: n, ...)": tests with no result (SKIP rows, sources not built), never counted as results."""
    info = c.get("not_run") or {"count": 0, "why": {}}
    why = ", ".join(f"{k}: {v}" for k, v in info["why"].items())
    return f"{info['count']}" + (f" ({why})" if why else "")


def partial_line(data: dict[str, Any]) -> str:
    """ "shard K/N: partial, not a whole verdict" for a shard's run (issue 26, shard.py), "" for a whole run."""
    s = data.get("shard")
    return f"shard {s['index']}/{s['total']}: partial, not a whole verdict" if s else ""


def _shard_label(data: dict[str, Any]) -> str:
    s = data.get("shard")
    return f" (shard {s['index']}/{s['total']})" if s else ""


def table(data: dict[str, Any]) -> str:
    cols = _columns(data)
    head = ["cell", *[SHORT.get(s, s) for s in cols], "not run", "mismatched", "s"]
    rows = [
        [
            c["cell"],
            *[_count(c, s) for s in cols],
            _not_run(c),
            str(c["mismatched"]),
            f"{c.get('seconds', 0):.0f}",
        ]
        for c in data.get("cells", [])
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if data.get("shard"):
        shard = data["shard"]
        lines.insert(0, f"{partial_line(data)}: {len(shard['tests'])} of {shard['selection_tests']} selected tests")
    for c in data.get("cells", []):
        for t in c["tests"]:
            if t["matched"] is False:
                lines.append(f"  {c['cell']} {t['test']}: {t['status']} (expected {t['expected']}) {t['reason'][:160]}")
    if data.get("coverage"):
        lines.append("  " + _coverage_line(data))
    if ref := data.get("cpu_reference"):
        lines.append(f"  CPU reference: {ref['line']}")
    if data.get("stale_not_judged"):
        lines.append(f"  stale rows not judged: {data['stale_not_judged']}")
    for row in data.get("stale", []):
        lines.append(f"  stale row [[expect]] #{row['row']} ({row['test']} {row['status']}): {row['why'][:160]}")
    for cell in data.get("not_run", []):
        lines.append(f"  {cell}: not run (interrupted)")
    for c in data.get("cells", []):
        if c.get("validation"):
            lines.append(f"  {c['cell']}: {validation_line(c['validation'])}")
    return "\n".join(lines)


def junit(data: dict[str, Any]) -> ET.Element:
    suites = ET.Element("testsuites", name=f"mnnrepro ops {data.get('ref', '')}{_shard_label(data)}")
    for c in data.get("cells", []):
        tests = c["tests"]
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=c["cell"] + _shard_label(data),
            tests=str(len(tests)),
            failures=str(sum(t["matched"] is False for t in tests)),
            skipped=str(sum(t["status"] == NOT_RUN for t in tests)),
            time=str(c.get("seconds", 0)),
        )
        for t in tests:
            case = ET.SubElement(suite, "testcase", classname=c["cell"], name=t["test"], time=str(t["duration_s"]))
            if t["status"] == NOT_RUN:
                ET.SubElement(case, "skipped", message=f"not run ({t.get('not_run', '')}): {t['reason']}"[:500])
            elif t["matched"] is False:
                fail = ET.SubElement(case, "failure", message=f"{t['status']} (expected {t['expected']})")
                fail.text = t["reason"]
            props = ET.SubElement(case, "properties")
            for key in ("status", "expected", "upstream"):
                if t.get(key):
                    ET.SubElement(props, "property", name=key, value=str(t[key]))
    return suites


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str]) -> list[str]:
    """A Markdown table's head and separator: one `---` cell per column."""
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]


def markdown(data: dict[str, Any]) -> str:
    cols = _columns(data)
    out = [
        f"# mnnrepro ops: MNN {data.get('ref')} ({str(data.get('commit') or '')[:10]}), {data.get('status')}"
        + (f" ({partial_line(data)})" if data.get("shard") else ""),
        "",
        *_shard_lines(data),
        f"Selection {', '.join(data.get('selection', []))}; precision {data.get('precision')}; "
        f"{data.get('jobs')} test processes at a time, {data.get('timeout_s'):.0f} s each at most (a timeout runs "
        f"again alone under a longer limit); runner {data.get('runner')}; {data.get('registered')} tests "
        "registered. Not run (SKIP rows, sources not built) is no result and is counted apart.",
        "",
        _coverage_line(data),
        "",
        *(
            [f"CPU reference (not run in this session): {data['cpu_reference']['line']}.", ""]
            if data.get("cpu_reference")
            else []
        ),
        *_md_table(["cell", "device", *cols, "not run", "mismatched", "seconds"]),
    ]
    for c in data.get("cells", []):
        counts = " | ".join(_count(c, s) for s in cols)
        device = _md(c.get("device", ""))
        out.append(f"| {c['cell']} | {device} | {counts} | {_not_run(c)} | {c['mismatched']} | {c.get('seconds', 0)} |")
    out += ["", "## Not passing", "", *_md_table(["cell", "test", "status", "expected", "reason", "upstream"])]
    for c in data.get("cells", []):
        for t in c["tests"]:
            if t["status"] not in ("PASS", NOT_RUN):
                suspect = " (driver suspect: passes on another ICD)" if t.get("driver_suspect") else ""
                reason = t["expectation"] if t["matched"] and t["expectation"] else t["reason"]
                out.append(
                    f"| {c['cell']} | {_md(t['test'])} | {t['status']}{suspect} | {t['expected']} | "
                    f"{_md(reason[:200])} | {_md(t.get('upstream', ''))} |"
                )
    out += _validation_section(data)
    out += _slow_section(data) + _not_run_section(data) + _stale_section(data) + _left_out_section(data)
    if data.get("not_built"):
        out += ["", "## Test sources not built", ""]
        out += [f"- `test/{rel}`: {_md(why)}" for rel, why in sorted(data["not_built"].items())]
    return "\n".join(out) + "\n"


def _shard_lines(data: dict[str, Any]) -> list[str]:
    """A shard's run says so before anything else (issue 26): its tests, and that stale rows wait for the merge."""
    shard = data.get("shard")
    if not shard:
        return []
    return [
        f"**{partial_line(data)}**: {len(shard['tests'])} of the {shard['selection_tests']} selected tests (a stride "
        f"over a shuffle of seed {shard['seed']}). {data.get('stale_not_judged', '')}. `mnnrepro merge` gives the "
        "shards one verdict.",
        "",
    ]


def _coverage_line(data: dict[str, Any]) -> str:
    """The selection against the tree's op/ and grad/ registrations (issue 21): N built of M, the rest named."""
    cov = data.get("coverage")
    if not cov:
        return "Coverage: not recorded by this run."
    left = len(cov.get("left_out", {}))
    return (
        f"Coverage: {cov['built']} tests built of {cov['registered']} registered for the selection"
        + (f"; {left} left out (listed below with why)" if left else "; none left out")
        + "."
    )


def _left_out_section(data: dict[str, Any]) -> list[str]:
    left_out = (data.get("coverage") or {}).get("left_out") or {}
    if not left_out:
        return []
    out = ["", "## Registered but not built", "", *_md_table(["test", "why"])]
    return out + [f"| {_md(name)} | {_md(why)} |" for name, why in sorted(left_out.items())]


def _validation_section(data: dict[str, Any]) -> list[str]:
    """--vk-validation (issue 25): per Vulkan cell, its canary, then VUID -> the tests that raised it (which ops'
    kernels), NEW where no row of fixtures/validation.toml lists it for that test; NOT-EXERCISED tests; stale rows."""
    cells = [c for c in data.get("cells", []) if c.get("validation")]
    if not cells:
        return []
    out = ["", f"## Validation layer ({data.get('vk_validation')}): VUIDs per test", ""]
    for c in cells:
        v = c["validation"]
        out += [f"### {c['cell']}", "", validation_line(v) + ".", ""]
        if v["vuids"]:
            out += _md_table(["VUID", "messages", "tests (messages)", "listed", "first message"])
            for vuid, e in v["vuids"].items():
                tests = ", ".join(f"{t} ({n})" for t, n in e["tests"].items())
                listed = f"NEW in {', '.join(e['new_in'])}" if e["new_in"] else "listed"
                out.append(f"| {_md(vuid)} | {e['count']} | {_md(tests)} | {_md(listed)} | {_md(e['first'][:200])} |")
            out.append("")
        out += [f"- NOT-EXERCISED for validation: `{t}`: {_md(why)}" for t, why in v["not_exercised"].items()]
        out += [f"- stale row: {_md(row)}" for row in v["stale"]]
    return out


def _slow_section(data: dict[str, Any]) -> list[str]:
    rows = [(c, t) for c in data.get("cells", []) for t in c["tests"] if t.get("slow")]
    if not rows:
        return []
    out = ["", "## Slow (killed at the limit, run again alone)", "", *_md_table(["cell", "test", "status", "reason"])]
    return out + [f"| {c['cell']} | {_md(t['test'])} | {t['status']} | {_md(t['reason'][:200])} |" for c, t in rows]


def _not_run_section(data: dict[str, Any]) -> list[str]:
    rows = [(c, t) for c in data.get("cells", []) for t in c["tests"] if t["status"] == NOT_RUN]
    if not rows:
        return []
    out = ["", "## Not run (no result)", "", *_md_table(["cell", "test", "why", "reason"])]
    return out + [
        f"| {c['cell']} | {_md(t['test'])} | {t.get('not_run', '')} | {_md(t['reason'][:200])} |" for c, t in rows
    ]


def _stale_section(data: dict[str, Any]) -> list[str]:
    if not data.get("stale"):
        return []
    out = ["", "## Stale expectation rows", "", *_md_table(["row", "refs", "variant", "icd", "test", "status", "why"])]
    return out + [
        f"| #{r['row']} | {_md(', '.join(r['refs']))} | {r['variant']} | {r['icd']} | {_md(r['test'])} | "
        f"{r['status']} | {_md(r['why'][:300])} |"
        for r in data["stale"]
    ]


def write_all(results: Path, data: dict[str, Any]) -> list[Path]:
    results.mkdir(parents=True, exist_ok=True)
    paths = [results / "summary.json", results / "junit.xml", results / "summary.md"]
    paths[0].write_text(json.dumps(data, indent=1, default=str))
    tree = ET.ElementTree(junit(data))
    ET.indent(tree)
    tree.write(paths[1], encoding="utf-8", xml_declaration=True)
    paths[2].write_text(markdown(data))
    return paths


def comparison(a: dict[str, Any], b: dict[str, Any], rows: list[dict[str, str]]) -> str:
    """The tests whose status changed from run a to run b, grouped by kind, as Markdown."""
    title = f"# What changed: MNN {a.get('ref')} -> {b.get('ref')}"
    out = [title, ""]
    if not rows:
        return "\n".join([*out, "No test changed status in the cells both runs have.", ""])
    for kind in CHANGES:
        group = [r for r in rows if r["kind"] == kind]
        if not group:
            continue
        out += [f"## {kind} ({len(group)})", "", *_md_table(["variant", "icd", "test", "before", "after", "detail"])]
        out += [
            f"| {r['variant']} | {r['icd']} | {_md(r['test'])} | {r['before']} | {r['after']} | "
            f"{_md(str(r.get('detail', ''))[:200])} |"
            for r in group
        ]
        out.append("")
    return "\n".join(out)
