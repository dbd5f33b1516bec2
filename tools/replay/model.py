"""What a replay is given (Options) and what it gives back (a JobResult per job, a StepResult per step)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mnnrepro.fixtures import ROOT

from .expressions import Strict
from .workflow import WORKFLOW

STOPPED = "stopped"  # a job stopped by --until: neither success (steps were left out) nor failure
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPO_NAME = "mnnrepro"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnnrepro" / "replay"


@dataclass
class StepResult:
    job: str
    step: str
    rc: int | None  # None: skipped
    seconds: float
    note: str = ""
    counts: bool = True  # False: continue-on-error


@dataclass
class JobResult:
    job: str
    status: str  # success, failure, skipped, or STOPPED (--until: the steps after a chosen one were not run)
    outputs: dict[str, str] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    summary: str = ""  # the file its $GITHUB_STEP_SUMMARY was written to ("" for none)


@dataclass
class Options:
    repo: Path = ROOT
    workflow: Path = WORKFLOW
    worktree: bool = False
    event: str = "push"
    state_dir: Path = field(default_factory=default_state_dir)
    mirror: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    keep_work: bool = False
    inputs: dict[str, str] = field(default_factory=dict)  # --input: workflow_dispatch inputs
    # `uses:` patterns -> local action directories (composite.parse_map; its default maps */mnnrepro@* here)
    actions: tuple[tuple[str, Path], ...] = ()
    # --until: the target job stops after the first step whose name contains it or whose id is it ("": whole job)
    until: str = ""


def merge(results: list[JobResult]) -> JobResult:
    """A matrix job seen from its dependants: failed if any combination failed; outputs from the last one."""
    status = "success"
    if any(r.status == "failure" for r in results):
        status = "failure"
    elif results and all(r.status == "skipped" for r in results):
        status = "skipped"
    outputs: dict[str, str] = {}
    for r in results:
        outputs.update({k: v for k, v in r.outputs.items() if v != ""})
    return JobResult(results[0].job if results else "", status, outputs)


def needs_context(needs: Mapping[str, JobResult]) -> Strict:
    return Strict(
        "needs",
        {name: Strict(f"needs.{name}", {"result": r.status, "outputs": dict(r.outputs)}) for name, r in needs.items()},
    )


def summary_lines(results: list[JobResult]) -> list[str]:
    """Where each job's step summary ($GITHUB_STEP_SUMMARY, which GitHub shows on the run's page) was written."""
    written = [r for r in results if r.summary]
    return ["", "step summaries:", *(f"  {r.job}: {r.summary}" for r in written)] if written else []
