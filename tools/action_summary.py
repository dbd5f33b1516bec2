"""The reusable action's last step (action.yml): each session's summary.md into $GITHUB_STEP_SUMMARY, every cell
(or, for MNN's own tests, every test) that missed its expectation named as an ::error, and the exit status.

    python tools/action_summary.py RESULTS_ROOT SESSION[=RC] ...

RESULTS_ROOT/SESSION is the --results-dir each session ran with; RC its exit status. A session fails the job
when its exit status is not 0, when it wrote no summary.json (it never got to judge), or when a cell did not
match; a run whose backend did not run on the GPU is judged so by the session (NOT-EXERCISED, NO-GPU-WORK)
and arrives here as a mismatch, never as a pass."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def latest_summary(directory: Path) -> Path | None:
    """The newest results/<time>-<session>/summary.json under a session's results directory."""
    found = sorted(directory.glob("*/summary.json"), key=lambda p: p.parent.name)
    return found[-1] if found else None


def unmatched(data: dict[str, Any]) -> list[str]:
    """`cell: verdict (expected X)` for each training cell, `cell test: status (expected X)` for each test of an
    ops cell, that did not match; a cell judged partial (a shard, an interrupt) is not all matched either."""
    out: list[str] = []
    for cell in data.get("cells", []):
        name = cell.get("cell", "?")
        if "tests" in cell:
            for t in cell["tests"]:
                if t.get("matched") is False:
                    out.append(f"{name} {t.get('test')}: {t.get('status')} (expected {t.get('expected') or 'PASS'})")
        elif not cell.get("matched"):
            out.append(f"{name}: {cell.get('verdict')} (expected {cell.get('expected') or 'no expectation'})")
    shard = data.get("shard") or (data.get("header") or {}).get("shard")
    if shard:  # a shard's slice matched is no verdict of the whole tree (merge the shards for that)
        out.append(f"shard {shard.get('index')}/{shard.get('total')}: partial, not a whole verdict")
    if not out and data.get("all_matched") is False:
        out.append("all_matched is false (see summary.md)")
    return out


def judge(root: Path, session: str, rc: int) -> tuple[list[str], str]:
    """(problems, summary.md text) of one session."""
    summary = latest_summary(root / session)
    if summary is None:
        return [f"{session}: no summary.json (exit {rc}): it never got to judge; see its log"], ""
    data = json.loads(summary.read_text())
    md = summary.with_name("summary.md")
    text = md.read_text() if md.is_file() else ""
    problems = [f"{session}: {line}" for line in unmatched(data)]
    if rc != 0 and not problems:
        problems.append(f"{session}: exit {rc} with every cell matched; see its log")
    return problems, text


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    problems: list[str] = []
    parts: list[str] = []
    for item in argv[1:]:
        session, _, rc = item.partition("=")
        found, text = judge(root, session, int(rc or "0"))
        problems += found
        parts.append(f"## mnnrepro: {session}\n\n{text or '(no summary.md)'}\n")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a") as f:
            f.write("\n".join(parts))
    for p in problems:
        print(f"::error title=mnnrepro::{p}")
    print(f"{len(problems)} unmatched or failed" if problems else "every cell matched its expectation")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
