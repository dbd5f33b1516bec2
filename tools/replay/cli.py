"""The command line of the replay (tools/ci_replay.py), and its closing table."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mnnrepro import fixtures, interrupts
from mnnrepro.cli import guarded
from mnnrepro.fixtures import ROOT

from .composite import parse_map
from .engine import Replay
from .errors import ReplayError
from .model import JobResult, Options, default_state_dir, summary_lines
from .workflow import WORKFLOW, parse_inputs_arg, parse_matrix_arg


def table(results: Sequence[JobResult]) -> list[str]:
    rows = [("job", "step", "rc", "seconds")]
    for job in results:
        for s in job.steps:
            rc = "skip" if s.rc is None else str(s.rc) + ("*" if s.rc and not s.counts else "")
            rows.append((job.job, s.step[:70], rc, f"{s.seconds:.1f}"))
        rows.append((job.job, f"= job {job.status}", "", f"{sum(s.seconds for s in job.steps):.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]


def failed(results: Sequence[JobResult], targets: Sequence[str]) -> list[str]:
    """Why the replay fails: steps that failed, and target jobs that did not run."""
    problems = [f"{s.job}: {s.step} (rc {s.rc})" for j in results for s in j.steps if s.rc and s.counts]
    for target in targets:
        mine = [j for j in results if j.job == target or j.job.startswith(target + " (")]
        if mine and all(j.status == "skipped" for j in mine):
            problems.append(f"{target}: skipped by its if: (see --event)")
    return problems


# ------------------------------------------------------------------------------------------------------ CLI


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/ci_replay.py",
        description="Run jobs of the GitHub Actions workflow locally, each in a fresh Debian 12 container.",
    )
    p.add_argument(
        "--job", dest="replay_jobs", action="append", default=[], help="job id (repeatable); its needs run first"
    )
    p.add_argument("--matrix", default="", help="key=value[,key=value...]: the matrix combination(s) to run")
    p.add_argument("--list", dest="list_jobs", action="store_true", help="list the workflow's jobs and stop")
    p.add_argument("--worktree", action="store_true", help="check out the working tree instead of HEAD")
    p.add_argument("--event", default="push", help="github.event_name (default push; schedule runs `newest`)")
    p.add_argument("--mirror", type=Path, help="a local MNN git repository (bare ok): MNN_GIT_URL in the jobs")
    p.add_argument("--env", dest="replay_env", action="append", default=[], help="NAME=VALUE for every step")
    p.add_argument(
        "--input", dest="inputs", action="append", default=[], help="key=value: a workflow_dispatch input (repeatable)"
    )
    p.add_argument(
        "--state-dir", dest="state_dir", type=Path, help="caches, artifacts, logs (~/.cache/mnnrepro/replay)"
    )
    p.add_argument("--workflow", type=Path, default=WORKFLOW, help=f"relative to --repo (default {WORKFLOW})")
    p.add_argument(
        "--repo",
        type=Path,
        default=ROOT,
        help="the git checkout the workflow lives in and the jobs check out (default: this one)",
    )
    p.add_argument(
        "--action",
        dest="action_map",
        action="append",
        default=[],
        metavar="USES=PATH",
        help="run `uses: USES` (fnmatch ok) from the local directory PATH; */mnnrepro@* is this checkout unless mapped",
    )
    p.add_argument(
        "--until",
        default="",
        metavar="STEP",
        help="stop the --job after the first step whose name contains STEP or whose id is STEP (its needs run whole;"
        " later steps, uploads and post steps do not run; the job reads `stopped`, never success)",
    )
    p.add_argument("--keep-work", dest="keep_work", action="store_true", help="keep runs-on jobs' host directories")
    return p


def main(argv: list[str] | None = None) -> int:
    """`python tools/ci_replay.py`: the replay with the library's error and interrupt conventions (a
    MnnReproError's message and exit code; 128 + N on signal N), as `mnnrepro ci replay` had them."""
    # Progress lines must show as they happen, also when the output is a pipe (CI logs, tee).
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    args = parser().parse_args(argv)

    def body() -> int:
        fixtures.require_checkout()
        return replay(args)

    with interrupts.installed():
        return guarded(body)


def replay(args: argparse.Namespace) -> int:
    """The replay the arguments ask for (or the job list); 1 if a step failed or a target job was skipped."""
    env = {}
    for item in args.replay_env:
        name, sep, value = item.partition("=")
        if not sep:
            raise ReplayError(f"--env wants NAME=VALUE, got {item!r}")
        env[name] = value
    mirror = args.mirror.resolve() if args.mirror else None
    if mirror is not None and not mirror.is_dir():
        raise ReplayError(f"--mirror {mirror} is not a directory")
    repo = args.repo.expanduser().resolve()
    if not (repo / ".git").exists():
        raise ReplayError(f"--repo {repo} is not a git checkout", hint="git init; git add -A; git commit")
    opts = Options(
        repo=repo,
        actions=parse_map(args.action_map),
        workflow=args.workflow,
        worktree=args.worktree,
        event=args.event,
        state_dir=(args.state_dir or default_state_dir()).expanduser().resolve(),
        mirror=mirror,
        env=env,
        keep_work=args.keep_work,
        inputs=parse_inputs_arg(args.inputs),
        until=args.until,
    )
    run = Replay(opts)
    if args.list_jobs:
        print("\n".join(run.describe()))
        return 0
    if not args.replay_jobs:
        raise ReplayError("which job? --job NAME (or --list)")
    events = run.workflow.get("on") or {}
    if opts.event not in (events if isinstance(events, (dict, list)) else [events]):
        raise ReplayError(f"the workflow does not run on {opts.event!r}", hint=f"its events: {', '.join(events)}")
    print(
        f"replay of {opts.workflow} in {opts.repo} ({'working tree' if opts.worktree else 'HEAD ' + run.sha[:12]}), "
        f"event {opts.event}, run {run.run_id}; logs in {run.run_dir}"
    )
    t0 = time.monotonic()
    results = run.run(args.replay_jobs, parse_matrix_arg(args.matrix))
    print("\n".join(["", *table(results), f"wall time {time.monotonic() - t0:.1f} s", *summary_lines(results)]))
    problems = failed(results, args.replay_jobs)
    for p in problems:
        print(f"FAILED: {p}")
    return 1 if problems else 0
