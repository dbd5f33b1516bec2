"""One job of the workflow (one matrix combination) in its container: its contexts and environment, its steps
in order (`run:` scripts with the runner's file commands, `uses:` through actions.py), post steps and outputs."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from . import actions, composite
from .containers import LABEL, MIRROR_IN_CONTAINER, PREPARE, Container, job_image, registry_mounts
from .errors import ReplayError
from .expressions import Context, Strict, evaluate_if, expand, expand_value, to_str, truthy
from .model import DEFAULT_PATH, REPO_NAME, STOPPED, JobResult, StepResult, needs_context
from .workflow import glob_regex, local_action, parse_env_file, parse_path_file

if TYPE_CHECKING:
    from .engine import Replay


class JobRun:
    def __init__(
        self,
        replay: Replay,
        name: str,
        job: dict[str, Any],
        combo: dict[str, Any],
        needs: dict[str, JobResult],
        label: str,
        until: str = "",
    ) -> None:
        self.replay, self.name, self.job, self.combo, self.needs, self.label = replay, name, job, combo, needs, label
        self.until = until  # --until (the target job only): stop after the first step it names
        self.result = JobResult(label, "success")
        self.steps_ctx = Strict("steps")
        self.github_env: dict[str, str] = {}
        self.paths: list[str] = []
        self.post: list[Callable[[], int]] = []
        self.post_names: list[str] = []
        self.summary: list[str] = []
        self.container: Container | None = None
        self.home = self.workspace = self.temp = self.tool_cache = self.tmpdir = ""
        self.log_path = replay.run_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.log"

    # -- output --------------------------------------------------------------------------------------------

    def log(self, line: str) -> None:
        self.replay.say(line)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    # -- context -------------------------------------------------------------------------------------------

    def ctx(self, env: Mapping[str, str]) -> Context:
        return {
            "github": self.replay.github(self.name, self.workspace),
            "env": Strict("env", env),
            "matrix": Strict("matrix", self.combo),
            "needs": needs_context(self.needs),
            "runner": Strict(
                "runner",
                {
                    "os": "Linux",
                    "arch": "X64",
                    "name": "mnnrepro-replay",
                    "temp": self.temp,
                    "tool_cache": self.tool_cache,
                    "environment": "github-hosted",
                    "debug": "",
                },
            ),
            "steps": self.steps_ctx,
            "job": Strict("job", {"status": self.result.status}),
            "strategy": Strict("strategy", {"fail-fast": True, "job-index": 0, "job-total": 1, "max-parallel": 1}),
            "vars": Strict("vars"),
            "inputs": Strict("inputs", self.replay.inputs),
            "__status": self.result.status,
            "__hash_files": self.hash_files,
        }

    def hash_files(self, patterns: list[str]) -> str:
        """hashFiles(): sha256 over the sha256 of each matching workspace file, in path order; '' for none."""
        assert self.container is not None
        listing = self.container.exec(
            ["sh", "-c", 'cd "$1" && find . -path ./.git -prune -o -type f -print0', "sh", self.workspace]
        )
        files = sorted(p[2:] for p in listing.stdout.decode().split("\0") if p.startswith("./"))
        regexes = [glob_regex(p) for p in patterns]
        chosen = [f for f in files if any(r.match(f) for r in regexes)]
        if not chosen:
            return ""
        sums = self.container.exec(["sha256sum", "--", *chosen], workdir=self.workspace).stdout.decode()
        digest = hashlib.sha256()
        for line in sums.splitlines():
            digest.update(bytes.fromhex(line.split()[0]))
        return digest.hexdigest()

    def base_env(self) -> dict[str, str]:
        env = {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": self.workspace,
            "GITHUB_EVENT_NAME": self.replay.opts.event,
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_SHA": self.replay.sha,
            "GITHUB_REPOSITORY": f"local/{REPO_NAME}",
            "GITHUB_RUN_ID": self.replay.run_id,
            "GITHUB_RUN_NUMBER": "1",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_JOB": self.name,
            "GITHUB_WORKFLOW": str(self.replay.workflow.get("name", "")),
            "GITHUB_SERVER_URL": "https://github.com",
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_TEMP": self.temp,
            "RUNNER_TOOL_CACHE": self.tool_cache,
            "HOME": self.home,
        }
        if self.tmpdir:
            env["TMPDIR"] = self.tmpdir
        if self.replay.opts.mirror is not None:
            env["MNN_GIT_URL"] = MIRROR_IN_CONTAINER
            # The mirror belongs to whoever owns it on this machine; git refuses foreign repositories otherwise.
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"})
        env.update(self.replay.opts.env)
        return env

    # -- the job -------------------------------------------------------------------------------------------

    def run(self) -> JobResult:
        self.log(f"== job {self.label}: {self.job.get('name', self.name)}")
        start = time.monotonic()
        timeout_s = float(self.job.get("timeout-minutes", 360)) * 60
        try:
            image, options, on_host = job_image(self.job, self.log)
        except ReplayError as exc:
            self.log(exc.render())
            self.record("(replay) set up job", 1, time.monotonic() - start, exc.message)
            self.result.status = "failure"
            return self.result
        work = self.replay.runner_dir() if on_host else Path()
        mounts = registry_mounts()
        if on_host:
            shutil.rmtree(work, ignore_errors=True)
            if work.exists():
                raise ReplayError(f"cannot empty {work} (files of another user?)", hint=f"sudo rm -rf {work}")
            # Host directories at the same paths, as on a runner: the suite mounts them into its own containers.
            self.home = str(work / "home")
            self.workspace = str(work / "work" / REPO_NAME / REPO_NAME)
            self.temp = str(work / "work" / "_temp")
            self.tool_cache = str(work / "tool-cache")
            # On a runner the job's /tmp is the host's, so the Docker daemon sees what the job puts there (the
            # suite's mount-point skeletons); here TMPDIR is a host directory at the same path instead.
            self.tmpdir = str(work / "tmp")
            for d in (self.home, self.workspace, self.temp, self.tool_cache, self.tmpdir):
                Path(d).mkdir(parents=True, exist_ok=True)
                mounts.append((d, d, False))
        else:
            self.home, self.workspace = "/github/home", f"/__w/{REPO_NAME}/{REPO_NAME}"
            self.temp, self.tool_cache = "/__w/_temp", "/__t"
        if Path("/var/run/docker.sock").exists():
            mounts.append(("/var/run/docker.sock", "/var/run/docker.sock", False))
        if self.replay.opts.mirror is not None:
            mounts.append((str(self.replay.opts.mirror), MIRROR_IN_CONTAINER, True))
        labels = {LABEL: self.replay.run_id, f"{LABEL}.job": self.name}
        try:
            with Container(image, labels=labels, mounts=mounts, options=options) as c:
                self.container = c
                c.exec(["sh", "-c", PREPARE, "sh", self.workspace, self.temp, self.home, self.tool_cache])
                self.record(
                    "(replay) set up job",
                    0,
                    time.monotonic() - start,
                    f"{image}{' on the host paths' if on_host else ''}",
                )
                try:
                    self.steps(start, timeout_s)
                    self.post_steps()
                finally:
                    if on_host and not self.replay.opts.keep_work:
                        # Files the job made as root: removed from inside, where it has the rights to.
                        c.exec(
                            ["sh", "-c", 'rm -rf "$1"/* "$1"/.[!.]* 2>/dev/null; true', "sh", str(work)], check=False
                        )
        finally:
            self.container = None
            if on_host and not self.replay.opts.keep_work:
                shutil.rmtree(work, ignore_errors=True)
        if self.summary:
            path = self.log_path.with_suffix(".summary.md")
            path.write_text("\n".join(self.summary))
            self.result.summary = str(path)
            self.log(f"   job summary: {path}")
        try:
            ctx = self.ctx(self.env_for({}))
            outputs = self.job.get("outputs") or {}
            self.result.outputs = {k: to_str(expand_value(v, ctx)) for k, v in outputs.items()}
        except ReplayError as exc:
            self.log(exc.render())
            self.result.status = "failure"
        self.log(f"== job {self.label}: {self.result.status} ({time.monotonic() - start:.1f} s)")
        return self.result

    def record(self, step: str, rc: int | None, seconds: float, note: str = "", counts: bool = True) -> None:
        self.result.steps.append(StepResult(self.label, step, rc, seconds, note, counts))

    def env_for(self, step_env: Mapping[str, Any]) -> dict[str, str]:
        """workflow env < job env < $GITHUB_ENV < step env; each level's expressions see the levels below."""
        env = self.base_env()
        for level in (self.replay.workflow.get("env") or {}, self.job.get("env") or {}):
            ctx = self.ctx(env)
            env.update({k: to_str(expand_value(v, ctx)) for k, v in level.items()})
        env.update(self.github_env)
        ctx = self.ctx(env)
        env.update({k: to_str(expand_value(v, ctx)) for k, v in step_env.items()})
        path = env.get("PATH", DEFAULT_PATH)
        env["PATH"] = ":".join([*reversed(self.paths), path])
        return env

    def steps(self, start: float, timeout_s: float) -> None:
        # A step with an id that never runs (the job failed or stopped before it: --until) reads as GitHub has it:
        # its outputs empty, not an unknown property (job outputs often name the last steps).
        for step in self.job.get("steps") or []:
            if "id" in step:
                self.steps_ctx.setdefault(
                    str(step["id"]), Strict(f"steps.{step['id']}", {"outputs": {}, "outcome": "", "conclusion": ""})
                )
        for index, step in enumerate(self.job.get("steps") or []):
            step_id = str(step.get("id", f"__{index}"))
            env = self.env_for(step.get("env") or {})
            ctx = self.ctx(env)
            name = self.step_name(step, ctx)
            if not evaluate_if(step.get("if"), ctx):
                self.log(f"-- [{self.label}] {name}: skipped")
                self.steps_ctx[step_id] = Strict(
                    f"steps.{step_id}", {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                )
                self.record(name, None, 0.0, "skipped")
                if self.stop_here(step, index, name):
                    return
                continue
            remaining = timeout_s - (time.monotonic() - start)
            step_timeout = min(remaining, float(step.get("timeout-minutes", 1e9)) * 60)
            self.log(f"-> [{self.label}] {name}")
            t0 = time.monotonic()
            outputs: dict[str, str] = {}
            try:
                if "uses" in step:
                    rc = self.uses(step, ctx, env, outputs)
                else:
                    rc = self.run_step(step, ctx, env, outputs, step_timeout)
            except ReplayError as exc:
                self.log(exc.render())
                rc = 1
            seconds = time.monotonic() - t0
            continue_on_error = truthy(expand_value(step.get("continue-on-error", False), ctx))
            outcome = "success" if rc == 0 else "failure"
            self.steps_ctx[step_id] = Strict(
                f"steps.{step_id}",
                {"outputs": outputs, "outcome": outcome, "conclusion": "success" if continue_on_error else outcome},
            )
            self.log(f"<- [{self.label}] {name}: rc={rc} ({seconds:.1f} s)")
            self.record(
                name, rc, seconds, "continue-on-error" if rc and continue_on_error else "", not continue_on_error
            )
            if rc != 0 and not continue_on_error:
                self.result.status = "failure"
            if self.stop_here(step, index, name):
                return

    def stop_here(self, step: Mapping[str, Any], index: int, name: str) -> bool:
        """--until: after the first step whose name contains it or whose id is it, the job stops; a job that got
        there without a failure is STOPPED, never success (its later steps, uploads and post steps did not run)."""
        if not self.until or (self.until not in name and str(step.get("id", "")) != self.until):
            return False
        left = len(self.job.get("steps") or []) - 1 - index
        self.log(f"== [{self.label}] stopped after {name!r} (--until {self.until}): {left} later step(s) not run")
        self.record(f"(replay) stopped after {name} (--until)", None, 0.0, f"{left} later step(s) not run")
        if self.result.status == "success":
            self.result.status = STOPPED
        return True

    def post_steps(self) -> None:
        for name, action in reversed(list(zip(self.post_names, self.post, strict=True))):
            if self.result.status != "success":
                why = "the job was stopped by --until" if self.result.status == STOPPED else "the job did not succeed"
                self.log(f"-- [{self.label}] {name}: skipped ({why})")
                self.record(name, None, 0.0, "skipped")
                continue
            t0 = time.monotonic()
            self.log(f"-> [{self.label}] {name}")
            try:
                rc = action()
            except ReplayError as exc:
                self.log(exc.render())
                rc = 1
            self.log(f"<- [{self.label}] {name}: rc={rc} ({time.monotonic() - t0:.1f} s)")
            self.record(name, rc, time.monotonic() - t0)
            if rc:
                self.result.status = "failure"

    @staticmethod
    def step_name(step: Mapping[str, Any], ctx: Context) -> str:
        if "name" in step:
            return expand(str(step["name"]), ctx)
        if "uses" in step:
            return f"Run {step['uses']}"
        first = str(step.get("run", "")).strip().splitlines()
        return f"Run {first[0] if first else ''}"

    def shell(self, step: Mapping[str, Any]) -> tuple[str, str | None]:
        """(command template with {0}, working directory) from the step, the job's and the workflow's defaults."""
        shell, workdir = None, None
        for defaults in (self.replay.workflow.get("defaults"), self.job.get("defaults")):
            run = (defaults or {}).get("run") or {}
            shell = run.get("shell", shell)
            workdir = run.get("working-directory", workdir)
        shell = step.get("shell", shell)
        workdir = step.get("working-directory", workdir)
        templates = {
            None: "bash -e {0}",
            "bash": "bash --noprofile --norc -eo pipefail {0}",
            "sh": "sh -e {0}",
            "python": "python {0}",
        }
        template = templates.get(shell, str(shell))
        if "{0}" not in template:
            raise ReplayError(
                f"shell: {shell!r} is not one the replay knows (bash, sh, python, or a template with {{0}})"
            )
        return template, workdir

    # -- run: ------------------------------------------------------------------------------------------

    def file_commands(self) -> tuple[str, dict[str, str]]:
        directory = f"{self.temp}/_runner_file_commands/{uuid.uuid4().hex[:12]}"
        files = {
            name: f"{directory}/{name}"
            for name in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY")
        }
        assert self.container is not None
        self.container.exec(
            [
                "sh",
                "-c",
                'mkdir -p "$1" && cd "$1" && touch GITHUB_ENV GITHUB_PATH GITHUB_OUTPUT GITHUB_STEP_SUMMARY',
                "sh",
                directory,
            ]
        )
        return directory, files

    def read_file_commands(self, files: Mapping[str, str], outputs: dict[str, str]) -> None:
        assert self.container is not None
        self.github_env.update(parse_env_file(self.container.read(files["GITHUB_ENV"]), "GITHUB_ENV"))
        self.paths.extend(parse_path_file(self.container.read(files["GITHUB_PATH"])))
        outputs.update(parse_env_file(self.container.read(files["GITHUB_OUTPUT"]), "GITHUB_OUTPUT"))
        summary = self.container.read(files["GITHUB_STEP_SUMMARY"])
        if summary.strip():
            self.summary.append(summary)

    def run_step(
        self, step: Mapping[str, Any], ctx: Context, env: dict[str, str], outputs: dict[str, str], timeout_s: float
    ) -> int:
        assert self.container is not None
        script = expand(str(step["run"]), ctx)
        template, workdir = self.shell(step)
        directory, files = self.file_commands()
        path = f"{directory}/step.sh"
        self.container.write(path, script.encode())
        argv = [part.replace("{0}", path) for part in shlex.split(template)]
        if timeout_s < 1e8:
            argv = ["timeout", "--kill-after=10", str(max(1, int(timeout_s))), *argv]
        cwd = self.workspace
        if workdir:
            cwd = str(PurePosixPath(self.workspace) / expand(str(workdir), ctx))
        rc = self.container.stream(argv, env={**env, **files}, workdir=cwd, log=self.log)
        if rc == 124 and timeout_s < 1e8:
            self.log(f"   (timed out after {timeout_s:.0f} s)")
        self.read_file_commands(files, outputs)
        return rc

    # -- uses: -----------------------------------------------------------------------------------------

    def uses(self, step: Mapping[str, Any], ctx: Context, env: dict[str, str], outputs: dict[str, str]) -> int:
        uses = str(step["uses"])
        inputs = {k: to_str(expand_value(v, ctx)) for k, v in (step.get("with") or {}).items()}
        where = composite.action_dir(uses, self.replay.opts.actions, self.replay.checkout_tree)
        if where is not None:
            return composite.run_composite(self, where, uses, inputs, ctx, outputs)
        kind = local_action(uses, inputs)
        handler: dict[str, Callable[[JobRun, Mapping[str, str], dict[str, str], dict[str, str]], int]] = {
            "checkout": actions.checkout,
            "setup-python": actions.setup_python,
            "cache": actions.cache,
            "cache-restore": actions.cache,
            "cache-save": actions.cache_save,
            "upload-artifact": actions.upload_artifact,
            "download-artifact": actions.download_artifact,
        }
        inputs["__kind"] = kind
        inputs["__name"] = self.step_name(step, ctx)
        return handler[kind](self, inputs, env, outputs)
