"""Integration fixtures: run a real session once per (session, ref, options) and share its summary.json
across pytest-xdist workers (a file lock in the shared temp root), so nothing is built or trained twice.

Where MNN's source is not available the tests are skipped and a banner says so at the end of the run;
`.ci/run` turns that banner into a loud failure-to-test message.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import fixtures, source
from mnnrepro.errors import SourceError
from mnnrepro.settings import load

ROOT = Path(__file__).resolve().parents[2]
# Refs from one place: the ci tier of fixtures/matrix.toml (MNNREPRO_IT_REFS overrides, comma-separated).
REFS = tuple(
    r
    for r in (os.environ.get("MNNREPRO_IT_REFS") or ",".join(fixtures.load_matrix().refs_for(("ci",)))).split(",")
    if r
)
_UNAVAILABLE: dict[str, str] = {}


def source_problem(ref: str) -> str | None:
    """None when a tree for ref can be had without network; else why not."""
    if ref in _UNAVAILABLE:
        return _UNAVAILABLE[ref]
    settings = load({})
    try:
        source.resolve(
            ref,
            source=settings.source if ref == (settings.ref or ref) else None,
            cache_dir=settings.cache_dir,
            git_url=settings.git_url,
            allow_clone=False,
        )
        return None
    except SourceError as exc:
        _UNAVAILABLE[ref] = exc.message
        return exc.message


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _UNAVAILABLE:
        return
    tr = terminalreporter
    tr.section("MNN SOURCE NOT AVAILABLE: INTEGRATION TESTS WERE NOT RUN", sep="!", red=True, bold=True)
    for ref, why in sorted(_UNAVAILABLE.items()):
        tr.line(f"  {ref}: {why}", red=True, bold=True)
    tr.line(
        "  Provide it: python -m mnnrepro source fetch --ref REF, source import --git-dir DIR, or --source DIR",
        red=True,
    )


def need_source(ref: str) -> None:
    problem = source_problem(ref)
    if problem:
        pytest.skip(f"MNN source for {ref} not available: {problem}")


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent
    path = root / "mnnrepro-sessions"
    path.mkdir(exist_ok=True)
    return path


SessionRun = dict[str, Any]


@pytest.fixture(scope="session")
def run_session(shared_dir: Path) -> Callable[..., SessionRun]:
    """run_session("vulkan", "3.3.0", "--icd", "lavapipe") -> {"exit": int, "summary": dict, "output": str}.
    The session "ops" runs `mnnrepro ops run` (MNN's own tests, issue 13), "reduce" `mnnrepro reduce` (issue 14),
    with the same options."""

    def run(session: str, ref: str, *extra: str) -> SessionRun:
        need_source(ref)
        key = "-".join([session, ref, *extra]).replace("/", "_").replace(",", "+")
        done = shared_dir / f"{key}.json"
        with open(shared_dir / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                results = shared_dir / key
                env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "mnnrepro",
                        *({"ops": ["ops", "run"], "reduce": ["reduce"]}.get(session) or ["run", session]),
                        "--ref",
                        ref,
                        "--results-dir",
                        str(results),
                        "--no-clone",
                        *extra,
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=3000,
                )
                summaries = sorted(results.glob("*/summary.json"))
                summary = json.loads(summaries[-1].read_text()) if summaries else {}
                done.write_text(
                    json.dumps({"exit": proc.returncode, "summary": summary, "output": proc.stdout + proc.stderr})
                )
        data: SessionRun = json.loads(done.read_text())
        return data

    return run


def cell(summary: dict[str, Any], cell_id: str) -> dict[str, Any]:
    for entry in summary.get("cells", []):
        if entry["cell"] == cell_id:
            return dict(entry)
    raise AssertionError(f"no cell {cell_id} in summary; cells: {[c['cell'] for c in summary.get('cells', [])]}")


def matrix() -> fixtures.Matrix:
    return fixtures.load_matrix()
