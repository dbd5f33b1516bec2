"""Reports of the ops session (issue 13), from its summary.json dictionary only: the terminal table, summary.json,
junit.xml (one test case per MNN test per cell), summary.md; and the comparison of two runs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .opjudge import CHANGES, STATUSES

SHORT = {"NOT-EXERCISED": "NOT-EX", "UNEXPECTED-PASS": "UNEXP-PASS"}


def _columns(data: dict[str, Any]) -> list[str]:
    """The statuses any cell has, in STATUSES order (PASS always)."""
    seen = {s for c in data.get("cells", []) for s, n in c.get("counts", {}).items() if n}
    return [s for s in STATUSES if s == "PASS" or s in seen]


def table(data: dict[str, Any]) -> str:
    cols = _columns(data)
    head = ["cell", *[SHORT.get(s, s) for s in cols], "mismatched", "s"]
    rows = [
        [c["cell"], *[str(c["counts"].get(s, 0)) for s in cols], str(c["mismatched"]), f"{c.get('seconds', 0):.0f}"]
        for c in data.get("cells", [])
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for c in data.get("cells", []):
        for t in c["tests"]:
            if not t["matched"]:
                lines.append(f"  {c['cell']} {t['test']}: {t['status']} (expected {t['expected']}) {t['reason'][:160]}")
    for cell in data.get("not_run", []):
        lines.append(f"  {cell}: not run (interrupted)")
    return "\n".join(lines)


def junit(data: dict[str, Any]) -> ET.Element:
    suites = ET.Element("testsuites", name=f"mnnrepro ops {data.get('ref', '')}")
    for c in data.get("cells", []):
        tests = c["tests"]
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=c["cell"],
            tests=str(len(tests)),
            failures=str(sum(not t["matched"] for t in tests)),
            skipped=str(sum(t["status"] == "SKIP" for t in tests)),
            time=str(c.get("seconds", 0)),
        )
        for t in tests:
            case = ET.SubElement(suite, "testcase", classname=c["cell"], name=t["test"], time=str(t["duration_s"]))
            if t["status"] == "SKIP":
                ET.SubElement(case, "skipped", message=t["reason"][:500])
            elif not t["matched"]:
                fail = ET.SubElement(case, "failure", message=f"{t['status']} (expected {t['expected']})")
                fail.text = t["reason"]
            props = ET.SubElement(case, "properties")
            for key in ("status", "expected", "upstream"):
                if t.get(key):
                    ET.SubElement(props, "property", name=key, value=str(t[key]))
    return suites


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(data: dict[str, Any]) -> str:
    cols = _columns(data)
    out = [
        f"# mnnrepro ops: MNN {data.get('ref')} ({str(data.get('commit') or '')[:10]}), {data.get('status')}",
        "",
        f"Selection {', '.join(data.get('selection', []))}; precision {data.get('precision')}; "
        f"{data.get('jobs')} test processes at a time, {data.get('timeout_s'):.0f} s each at most; runner "
        f"{data.get('runner')}; {data.get('registered')} tests registered.",
        "",
        "| cell | device | " + " | ".join(cols) + " | mismatched | seconds |",
        "|" + " --- |" * (len(cols) + 4),
    ]
    for c in data.get("cells", []):
        counts = " | ".join(str(c["counts"].get(s, 0)) for s in cols)
        device = _md(c.get("device", ""))
        out.append(f"| {c['cell']} | {device} | {counts} | {c['mismatched']} | {c.get('seconds', 0)} |")
    out += ["", "## Not passing", "", "| cell | test | status | expected | reason | upstream |", "| --- |" * 6]
    for c in data.get("cells", []):
        for t in c["tests"]:
            if t["status"] != "PASS":
                suspect = " (driver suspect: passes on another ICD)" if t.get("driver_suspect") else ""
                reason = t["expectation"] if t["matched"] and t["expectation"] else t["reason"]
                out.append(
                    f"| {c['cell']} | {_md(t['test'])} | {t['status']}{suspect} | {t['expected']} | "
                    f"{_md(reason[:200])} | {_md(t.get('upstream', ''))} |"
                )
    if data.get("not_built"):
        out += ["", "## Test sources not built", ""]
        out += [f"- `test/{rel}`: {_md(why)}" for rel, why in sorted(data["not_built"].items())]
    return "\n".join(out) + "\n"


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
        out += [f"## {kind} ({len(group)})", "", "| variant | icd | test | before | after |", "|" + " --- |" * 5]
        out += [f"| {r['variant']} | {r['icd']} | {_md(r['test'])} | {r['before']} | {r['after']} |" for r in group]
        out.append("")
    return "\n".join(out)
