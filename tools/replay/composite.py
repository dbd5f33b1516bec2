"""Composite actions (`runs.using: composite`) for `uses:` steps: where an action's directory is (a `./path` of
the checkout, or a mapping such as `*/mnnrepro@*` -> this checkout), its inputs bound, and its steps run in the
job's container with `inputs.*` and `github.action_path`."""

from __future__ import annotations

import fnmatch
import importlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from mnnrepro.fixtures import ROOT

from .errors import ReplayError
from .expressions import Context, Strict, evaluate_if, expand, expand_value, to_str
from .model import DEFAULT_PATH

if TYPE_CHECKING:
    from .job import JobRun

# Without --action: any version of any owner's mnnrepro is this checkout (the README's `uses: ORG/mnnrepro@vX`).
DEFAULT_MAP: tuple[tuple[str, Path], ...] = (("*/mnnrepro@*", ROOT),)


def parse_map(items: Sequence[str]) -> tuple[tuple[str, Path], ...]:
    """`--action USES=PATH` items (USES may hold fnmatch wildcards), checked; they come before DEFAULT_MAP."""
    out: list[tuple[str, Path]] = []
    for item in items:
        uses, sep, path = item.partition("=")
        if not sep or "@" not in uses or not path:
            raise ReplayError(f"--action wants OWNER/NAME@VERSION=PATH, got {item!r}")
        where = Path(path).expanduser().resolve()
        if not (where / "action.yml").is_file() and not (where / "action.yaml").is_file():
            raise ReplayError(f"--action {item}: {where} has no action.yml")
        out.append((uses.strip(), where))
    return tuple(out)


def mapped_dir(uses: str, mapping: Sequence[tuple[str, Path]]) -> Path | None:
    """The local directory a non-local `uses:` is mapped to (the first matching entry), or None."""
    for pattern, path in mapping:
        if fnmatch.fnmatchcase(uses, pattern):
            return path
    return None


def action_dir(uses: str, mapping: Sequence[tuple[str, Path]], checkout: Callable[[], Path]) -> Path | None:
    """The directory of a composite action for `uses:`: `./path` in the checkout the job gets (when it holds an
    action.yml), or a mapped one (--action, then DEFAULT_MAP); None: one of workflow.LOCAL_ACTIONS, or unknown."""
    if uses.startswith("./"):
        where = checkout() / uses[2:]
        return where if (where / "action.yml").is_file() or (where / "action.yaml").is_file() else None
    return mapped_dir(uses, (*mapping, *DEFAULT_MAP))


def load_action(directory: Path) -> dict[str, Any]:
    """action.yml (or .yaml) of a directory; ReplayError unless it is a composite action."""
    for name in ("action.yml", "action.yaml"):
        if (directory / name).is_file():
            text = (directory / name).read_text()
            break
    else:
        raise ReplayError(f"{directory} has no action.yml")
    try:
        yaml: Any = importlib.import_module("yaml")
    except ImportError as exc:
        raise ReplayError("PyYAML is not installed", hint="pip install -e '.[ci]'") from exc
    data = yaml.safe_load(text)
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, dict) or runs.get("using") != "composite":
        using = runs.get("using") if isinstance(runs, dict) else None
        raise ReplayError(f"{directory}/action.yml: runs.using is {using!r}; the replay runs composite actions only")
    if not isinstance(runs.get("steps"), list):
        raise ReplayError(f"{directory}/action.yml: runs.steps is not a list")
    for i, step in enumerate(runs["steps"]):
        if "run" in step and "shell" not in step:
            # GitHub refuses a composite run step without shell: too; so does the replay, rather than guess.
            raise ReplayError(f"{directory}/action.yml: step {i + 1} has run: but no shell: (required in composite)")
    return dict(data)


def bind_inputs(action: Mapping[str, Any], given: Mapping[str, str], ctx: Context, say: Any) -> dict[str, str]:
    """The action's inputs: given values, else defaults (expressions in them expanded); required ones checked."""
    declared: Mapping[str, Any] = action.get("inputs") or {}
    for name in sorted(set(given) - set(declared)):
        say(f"   ::warning::unexpected input {name!r} (the action declares {', '.join(declared) or 'none'})")
    bound: dict[str, str] = {}
    for name, spec in declared.items():
        spec = spec or {}
        if name in given:
            bound[name] = given[name]
        elif "default" in spec:
            bound[name] = to_str(expand_value(spec["default"], ctx))
        elif spec.get("required"):
            raise ReplayError(f"input {name!r} is required and was not given")
        else:
            bound[name] = ""
    return bound


def put_action(job: JobRun, source: Path, uses: str) -> str:
    """Copy the action's directory into the job (a git tree: its tracked and untracked-but-not-ignored files, as
    they are now; else every file) at a path under the runner's temp; that path."""
    assert job.container is not None
    slug = uses.replace("@", "/").strip("./") or "local"
    dest = str(PurePosixPath(job.temp) / "_actions" / slug)
    listed = subprocess.run(
        ["git", "-C", str(source), "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True
    )
    if listed.returncode != 0:
        job.container.put_tree(source, dest)
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        for rel in filter(None, listed.stdout.decode().split("\0")):
            src, dst = source / rel, Path(tmp) / rel
            if src.is_file() or src.is_symlink():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst, follow_symlinks=False)
        job.container.put_tree(Path(tmp), dest)
    return dest


def run_composite(
    job: JobRun, source: Path, uses: str, given: Mapping[str, str], ctx: Context, outputs: dict[str, str]
) -> int:
    """Run a composite action's steps; its exit status (the first failed step's), outputs from runs.outputs."""
    action = load_action(source)
    action_path = put_action(job, source, uses)
    job.log(f"   composite action {uses}: {source} -> {action_path}")
    github = Strict("github", {**ctx["github"], "action_path": action_path, "action": uses})
    inputs = Strict("inputs", bind_inputs(action, given, {**ctx, "github": github}, job.log))
    steps = Strict("steps")
    # The steps see the job's status so far (GitHub): after an earlier failed step of the calling job, success()
    # is false and failure() true inside the action too; rc is the action's own first failed step.
    status, rc = str(ctx.get("__status", "success")), 0
    first_path = len(job.paths)
    for index, step in enumerate(action["runs"]["steps"]):
        step_id = str(step.get("id", f"__{index}"))
        base = {**ctx, "github": github, "inputs": inputs, "steps": steps, "__status": status}
        # $GITHUB_ENV and $GITHUB_PATH written by the action's own earlier steps hold for its later ones.
        env = {**ctx["env"], **job.github_env, "GITHUB_ACTION_PATH": action_path}
        env["PATH"] = ":".join([*reversed(job.paths[first_path:]), ctx["env"].get("PATH", DEFAULT_PATH)])
        env.update({k: to_str(expand_value(v, base)) for k, v in (step.get("env") or {}).items()})
        sctx = {**base, "env": Strict("env", env)}
        name = expand(str(step["name"]), sctx) if "name" in step else job.step_name(step, sctx)
        if not evaluate_if(step.get("if"), sctx):
            job.log(f"   -- {name}: skipped")
            steps[step_id] = Strict(f"steps.{step_id}", {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"})
            continue
        job.log(f"   -> {name}")
        out: dict[str, str] = {}
        try:
            if "uses" in step:
                step_rc = job.uses(step, sctx, env, out)
            else:
                step_rc = job.run_step(step, sctx, env, out, 1e9)
        except ReplayError as exc:
            job.log(exc.render())
            step_rc = 1
        job.log(f"   <- {name}: rc={step_rc}")
        outcome = "success" if step_rc == 0 else "failure"
        steps[step_id] = Strict(f"steps.{step_id}", {"outputs": out, "outcome": outcome, "conclusion": outcome})
        if step_rc != 0 and rc == 0:
            status, rc = "failure", step_rc
    final = {**ctx, "github": github, "inputs": inputs, "steps": steps, "__status": status}
    for name, spec in (action.get("outputs") or {}).items():
        outputs[name] = to_str(expand_value((spec or {}).get("value", ""), final))
    return rc
