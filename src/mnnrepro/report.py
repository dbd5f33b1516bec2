"""Reports: the terminal verdict table and summary.json (versioned, machine-readable)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .cells import CellRun
from .judge import Verdict

SUMMARY_FORMAT = 1


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
                ev.get("backtrace") or "-",
            )
        )
    widths = [max(len(str(r[i])) for r in lines) for i in range(len(head) - 2)]
    out = []
    for r in lines:
        cells = [str(r[i]).ljust(widths[i]) for i in range(len(head) - 2)]
        out.append("  ".join(cells) + "  " + str(r[-2]))
        if r is not lines[0] and r[-1] != "-":
            out.append(" " * 4 + "backtrace: " + str(r[-1]))
    return "\n".join(out)


def summary(header: dict[str, Any], rows: list[tuple[CellRun, Verdict]]) -> dict[str, Any]:
    return {
        "format": SUMMARY_FORMAT,
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
            }
            for run, v in rows
        ],
        "all_matched": all(v.matched for _, v in rows),
    }


def write_summary(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
