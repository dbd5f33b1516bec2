"""Crash signatures: the top frames inside MNN's own libraries, normalized, without addresses.

A signature is derived from an observed crash (crash.json written by gdb_capture.py) and stored in
fixtures/matrix.toml with the backtrace it came from under fixtures/evidence/. ``python -m mnnrepro
signature CELL_DIR`` prints the signature of a run, ready to paste.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DEPTH = 3
# What every verdict and report says of a crash judged without a backtrace (no gdb, or gdb caught nothing):
# its signature was not checked (issue 22). One phrase for judge.py, workloads/ops/judge.py,
# workloads/reduce/session.py, bisect.py, issue.py.
SIGNAL_ONLY = "judged by signal only"
_CLONE = re.compile(r"(\.(cold|isra|part|constprop|lto_priv)(\.\d+)*)+$|\s*\[clone [^]]*\]$")


def normalize(function: str) -> str:
    """Drop argument lists, compiler clone suffixes and whitespace, so the same code gives the same name."""
    name = function.strip()
    name = _CLONE.sub("", name)
    depth = 0
    out: list[str] = []
    for ch in name:  # remove a trailing "(...)" parameter list, keeping template arguments
        if ch == "(" and depth == 0 and out:
            break
        depth += ch == "<"
        depth -= ch == ">"
        out.append(ch)
    return "".join(out).strip()


def in_mnn(frame: dict[str, Any]) -> bool:
    library = Path(str(frame.get("library") or "")).name
    return library.startswith("libMNN")


def of_crash(crash: dict[str, Any], depth: int = DEPTH) -> tuple[str, ...]:
    names = [normalize(str(f.get("function") or "??")) for f in crash.get("frames", []) if in_mnn(f)]
    return tuple(n for n in names if n != "??")[:depth]


def matches(observed: tuple[str, ...], expected: tuple[str, ...]) -> bool:
    return bool(expected) and observed[: len(expected)] == expected


def of_cell_dir(cell_dir: Path) -> tuple[str, ...]:
    return of_crash(json.loads((cell_dir / "crash.json").read_text()))


def toml_line(sig: tuple[str, ...]) -> str:
    return "signature = [" + ", ".join(json.dumps(s) for s in sig) + "]"
