"""The replay: the workflow read from the checkout, the jobs a target needs in order, each matrix combination
run as a JobRun."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .containers import SELF_HOSTED, SELF_HOSTED_HINT, self_hosted
from .errors import ReplayError
from .expressions import Context, Strict, evaluate_if, to_str
from .job import JobRun
from .model import REPO_NAME, JobResult, Options, StepResult, merge, needs_context
from .workflow import dispatch_inputs, expand_matrix, load_workflow, select_matrix


class Replay:
    def __init__(self, opts: Options, say: Callable[[str], None] = print) -> None:
        self.opts = opts
        self.say = say
        self.run_id = str(int(time.time()))
        self.run_dir = opts.state_dir / "runs" / self.run_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.uploaded: set[str] = set()
        self._checkout: Path | None = None
        self._runner_lock: Any = None
        self.workflow = load_workflow(self.workflow_text())
        self.inputs = dispatch_inputs(self.workflow.get("on"), opts.event, opts.inputs)
        self.sha = self._git("rev-parse", "HEAD").strip()

    def _git(self, *args: str) -> str:
        res = subprocess.run(["git", "-C", str(self.opts.repo), *args], capture_output=True, text=True)
        if res.returncode != 0:
            raise ReplayError(f"git {' '.join(args)} in {self.opts.repo}: {res.stderr.strip()}")
        return res.stdout

    def workflow_text(self) -> str:
        """The workflow as the checkout the jobs get has it (HEAD, or the working tree with --worktree)."""
        if self.opts.worktree:
            return (self.opts.repo / self.opts.workflow).read_text()
        return self._git("show", f"HEAD:{self.opts.workflow.as_posix()}")

    def checkout_tree(self) -> Path:
        """This repository as actions/checkout would give it: a clone of HEAD, plus the working tree's tracked and
        untracked-but-not-ignored files (and its deletions) with --worktree."""
        if self._checkout is None:
            dest = self.run_dir / "checkout"
            self._git("clone", "-q", "--no-hardlinks", str(self.opts.repo), str(dest))
            if self.opts.worktree:
                for rel in filter(None, self._git("ls-files", "-z", "-co", "--exclude-standard").split("\0")):
                    src, dst = self.opts.repo / rel, dest / rel
                    if src.is_file() or src.is_symlink():
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        if dst.is_symlink() or dst.exists():
                            dst.unlink()
                        shutil.copy2(src, dst, follow_symlinks=False)
                for rel in filter(None, self._git("ls-files", "-z", "-d").split("\0")):
                    (dest / rel).unlink(missing_ok=True)
            self._checkout = dest
        return self._checkout

    def runner_dir(self) -> Path:
        """Where runs-on jobs keep their workspace, temp and home: one place, the same for every job and every
        replay (as /home/runner is on GitHub, so cached paths such as runner.temp mean the same next time);
        emptied before each job, and held by one replay at a time."""
        if self._runner_lock is None:
            self.opts.state_dir.mkdir(parents=True, exist_ok=True)
            lock = open(self.opts.state_dir / "runner.lock", "w")  # held for the replay's life
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise ReplayError(f"another replay is using {self.opts.state_dir / 'runner'}") from None
            self._runner_lock = lock
        return self.opts.state_dir / "runner"

    def github(self, job_id: str, workspace: str) -> Strict:
        return Strict(
            "github",
            {
                "event_name": self.opts.event,
                "event": {},
                "ref": "refs/heads/main",
                "ref_name": "main",
                "sha": self.sha,
                "repository": f"local/{REPO_NAME}",
                "repository_owner": "local",
                "run_id": self.run_id,
                "run_number": "1",
                "run_attempt": "1",
                "workflow": str(self.workflow.get("name", "")),
                "job": job_id,
                "workspace": workspace,
                "server_url": "https://github.com",
                "actor": "replay",
                "head_ref": "",
                "base_ref": "",
            },
        )

    # -- planning ----------------------------------------------------------------------------------------

    def jobs(self) -> dict[str, dict[str, Any]]:
        return dict(self.workflow["jobs"])

    @staticmethod
    def needs_of(job: Mapping[str, Any]) -> list[str]:
        needs = job.get("needs", [])
        return [needs] if isinstance(needs, str) else list(needs)

    def plan(self, targets: Sequence[str]) -> list[str]:
        jobs, order = self.jobs(), []

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if name not in jobs:
                raise ReplayError(f"no job {name!r} in {self.opts.workflow}", hint=f"jobs: {', '.join(jobs)}")
            if name in trail:
                raise ReplayError(f"needs cycle: {' -> '.join((*trail, name))}")
            for dep in self.needs_of(jobs[name]):
                visit(dep, (*trail, name))
            if name not in order:
                order.append(name)

        for target in targets:
            visit(target, ())
        for name in order:  # said before anything runs, not after the jobs it needs
            if self_hosted(jobs[name]):
                raise ReplayError(
                    SELF_HOSTED.format(name=f"job {name!r}", runs_on=jobs[name].get("runs-on")),
                    hint=SELF_HOSTED_HINT,
                )
        return order

    def describe(self) -> list[str]:
        lines = []
        for name, job in self.jobs().items():
            container = job.get("container")
            image = container.get("image") if isinstance(container, dict) else container
            where = f"container {image}" if container else f"runs-on {job.get('runs-on')}"
            matrix = (job.get("strategy") or {}).get("matrix", {})
            axes = ", ".join(f"{k}={v}" for k, v in matrix.items()) if isinstance(matrix, dict) else str(matrix)
            lines.append(f"{name}: {job.get('name', name)}")
            lines.append(f"    {where}; needs: {', '.join(self.needs_of(job)) or '-'}")
            if axes:
                lines.append(f"    matrix: {axes}")
            if "if" in job:
                lines.append(f"    if: {job['if']}")
        return lines

    def check_until(self, targets: Sequence[str]) -> None:
        """--until names a step of the one asked job (by a part of its name as written, or its id), said before
        anything runs: a costly job replayed whole by a typo would defeat the flag."""
        if not self.opts.until:
            return
        if len(targets) != 1:
            raise ReplayError("--until stops one job: give one --job", hint=f"--job {targets[0]} --until STEP")
        steps = self.jobs()[targets[0]].get("steps") or []
        names = [str(s["name"]) if "name" in s else JobRun.step_name(s, {}) for s in steps]
        ids = [str(s.get("id", "")) for s in steps]
        if not any(self.opts.until in n for n in names) and self.opts.until not in ids:
            raise ReplayError(
                f"--until {self.opts.until!r}: no step of job {targets[0]!r} has it in its name or as its id",
                hint="its steps: " + "; ".join(names),
            )

    # -- running -----------------------------------------------------------------------------------------

    def run(self, targets: Sequence[str], wanted: Mapping[str, str]) -> list[JobResult]:
        jobs = self.jobs()
        order = self.plan(targets)
        axes: set[str] = set()
        for name in order:
            matrix = (jobs[name].get("strategy") or {}).get("matrix") or {}
            if isinstance(matrix, dict):
                axes |= {k for k in matrix if k not in ("include", "exclude")}
                axes |= {k for entry in matrix.get("include") or [] for k in entry}
        unknown = sorted(set(wanted) - axes)
        if unknown:
            raise ReplayError(f"--matrix {', '.join(unknown)}: no such axis in {', '.join(order)}")
        self.check_until(targets)
        done: dict[str, list[JobResult]] = {}
        results: list[JobResult] = []
        for name in order:
            job = jobs[name]
            needs = {dep: merge(done[dep]) for dep in self.needs_of(job)}
            ctx: Context = {
                "github": self.github(name, ""),
                "needs": needs_context(needs),
                "vars": Strict("vars"),
                "inputs": Strict("inputs", self.inputs),
                "__status": "success" if all(r.status == "success" for r in needs.values()) else "failure",
            }
            combos = expand_matrix(job.get("strategy"), ctx)
            if combos != [{}]:
                combos = select_matrix(combos, wanted, name)
            done[name] = []
            for combo in combos:
                ctx_m = {**ctx, "matrix": Strict("matrix", combo)}
                label = name + (f" ({', '.join(to_str(v) for v in combo.values())})" if combo else "")
                if not evaluate_if(job.get("if"), ctx_m):
                    self.say(f"== job {label}: skipped (if: {job.get('if', 'success()')})")
                    result = JobResult(label, "skipped", steps=[StepResult(label, "(job skipped by if:)", None, 0.0)])
                else:
                    until = self.opts.until if name in targets else ""  # the jobs it needs run whole
                    result = JobRun(self, name, job, combo, needs, label, until).run()
                done[name].append(result)
                results.append(result)
        return results
