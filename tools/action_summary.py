"""The reusable action's last step (action.yml): each session's summary.md into $GITHUB_STEP_SUMMARY, every cell
(or, for MNN's own tests, every test) that missed its expectation named as an ::error, and the exit status.

    python tools/action_summary.py [--source TREE] RESULTS_ROOT SESSION[=RC] ...

RESULTS_ROOT/SESSION is the --results-dir each session ran with; RC its exit status. A session fails the job
when its exit status is not 0, when it wrote no summary.json (it never got to judge), or when a cell did not
match; a run whose backend did not run on the GPU is judged so by the session (NOT-EXERCISED, NO-GPU-WORK)
and arrives here as a mismatch, never as a pass.

A `--source` tree is used as is, so its summary.json records no commit and its summary.md says "commit unknown".
The commit recorded in summary.json is always preferred; without one, the git HEAD of the tree (--source TREE,
else the tree the session's header names) takes the place of "commit unknown" in the step summary, said to be
read from the tree's git (and "with local changes" where tracked files differ from it)."""

from __future__ import annotations

import json
import os
import subprocess
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


UNKNOWN = "commit unknown"  # what report.py writes for a ref whose commit the session did not record


def recorded_commit(data: dict[str, Any]) -> str | None:
    """The MNN commit summary.json already records (the header's, or one of its refs'), if any."""
    header = data.get("header") or {}
    refs = header.get("refs")
    found = [header.get("commit"), data.get("commit")]
    if isinstance(refs, dict):
        found += [r.get("commit") for r in refs.values() if isinstance(r, dict)]
    return next((str(c) for c in found if c), None)


def _git(tree: Path, *args: str) -> str | None:
    try:
        got = subprocess.run(
            ["git", "-c", f"safe.directory={tree}", "-C", str(tree), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return got.stdout.strip() if got.returncode == 0 else None


def tree_commit(tree: Path) -> tuple[str, bool] | None:
    """(HEAD, whether tracked files differ from it) of a tree that is the top of a git repository; None for a
    tree that is not one (a directory inside another repository is not: that HEAD is not the tree's)."""
    tree = tree.resolve()
    top = _git(tree, "rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != tree:
        return None
    head = _git(tree, "rev-parse", "--verify", "HEAD")
    if not head:
        return None
    return head, bool(_git(tree, "status", "--porcelain", "--untracked-files=no"))


def with_commit(text: str, data: dict[str, Any], source: Path | None) -> str:
    """summary.md with "commit unknown" replaced by the git HEAD of the tree, when summary.json records no
    commit and the tree (--source, else the header's "source") is a git repository."""
    header = data.get("header") or {}
    tree = source or (Path(str(header["source"])) if header.get("source") else None)
    if UNKNOWN not in text or recorded_commit(data) or tree is None:
        return text
    got = tree_commit(tree)
    if got is None:
        return text
    head, dirty = got
    how = "git HEAD of the tree" + (", with local changes" if dirty else "")
    return text.replace(f"({UNKNOWN})", f"({head[:10]}, {how})").replace(UNKNOWN, f"{head} ({how})")


def judge(root: Path, session: str, rc: int, source: Path | None = None) -> tuple[list[str], str]:
    """(problems, summary.md text) of one session."""
    summary = latest_summary(root / session)
    if summary is None:
        return [f"{session}: no summary.json (exit {rc}): it never got to judge; see its log"], ""
    data = json.loads(summary.read_text())
    md = summary.with_name("summary.md")
    text = with_commit(md.read_text(), data, source) if md.is_file() else ""
    problems = [f"{session}: {line}" for line in unmatched(data)]
    if rc != 0 and not problems:
        problems.append(f"{session}: exit {rc} with every cell matched; see its log")
    return problems, text


def main(argv: list[str]) -> int:
    source: Path | None = None
    if argv[:1] == ["--source"] and len(argv) > 1:
        source, argv = Path(argv[1]), argv[2:]
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    problems: list[str] = []
    parts: list[str] = []
    for item in argv[1:]:
        session, _, rc = item.partition("=")
        found, text = judge(root, session, int(rc or "0"), source)
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
