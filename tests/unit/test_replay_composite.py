"""Issue 27: the reusable action (action.yml), composite actions in the replay, --repo/--workflow/--action, the
fixture override variables and the action's verdict step. Nothing here starts a container."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import fixtures
from mnnrepro.fixtures import ROOT
from mnnrepro.workloads.ops import judge as opjudge
from tools import action_summary
from tools.replay import cli, composite
from tools.replay.errors import ReplayError
from tools.replay.expressions import Strict
from tools.replay.workflow import local_action

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the `ci` extra")


class FakeContainer:
    def __init__(self) -> None:
        self.trees: list[tuple[Path, str]] = []

    def put_tree(self, src: Path, dest: str) -> None:
        self.trees.append((src, dest))


class FakeJob:
    """What run_composite uses of a JobRun; run: steps are recorded with their expanded script and env."""

    def __init__(self, fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.container = FakeContainer()
        self.temp = "/__w/_temp"
        self.github_env: dict[str, str] = {}
        self.paths: list[str] = []
        self.ran: list[tuple[str, str, dict[str, str]]] = []
        self.lines: list[str] = []
        self.fail = fail

    def log(self, line: str) -> None:
        self.lines.append(line)

    def step_name(self, step: dict[str, Any], ctx: dict[str, Any]) -> str:
        return str(step.get("name", "step"))

    def run_step(
        self, step: dict[str, Any], ctx: dict[str, Any], env: dict[str, str], out: dict[str, str], t: float
    ) -> int:
        from tools.replay.expressions import expand

        script = expand(str(step["run"]), ctx)
        self.ran.append((str(step.get("shell")), script, env))
        out["said"] = script
        return 1 if any(f in script for f in self.fail) else 0

    def uses(self, step: dict[str, Any], ctx: dict[str, Any], env: dict[str, str], out: dict[str, str]) -> int:
        self.ran.append(("uses", str(step["uses"]), env))
        return 0


def _ctx() -> dict[str, Any]:
    return {
        "github": Strict("github", {"workspace": "/__w/MNN/MNN", "event_name": "push"}),
        "env": Strict("env", {"PATH": "/usr/bin"}),
        "steps": Strict("steps"),
        "inputs": Strict("inputs"),
        "__status": "success",
    }


def _action(tmp_path: Path, body: str) -> Path:
    (tmp_path / "action.yml").write_text(body)
    return tmp_path


ACTION = """
inputs:
  who: {required: true}
  where: {default: "."}
outputs:
  said: {value: "${{ steps.hello.outputs.said }}"}
runs:
  using: composite
  steps:
    - id: hello
      shell: sh
      run: echo ${{ inputs.who }} in ${{ inputs.where }} from ${{ github.action_path }}
    - shell: bash
      run: echo "$GITHUB_ACTION_PATH" broken
    - shell: bash
      run: echo after a failure
    - if: always()
      shell: python
      run: print("always")
"""


def test_a_composite_action_runs_its_steps_with_inputs_action_path_and_shells(tmp_path: Path) -> None:
    job = FakeJob(fail={"broken"})
    out: dict[str, str] = {}
    rc = composite.run_composite(job, _action(tmp_path, ACTION), "acme/x@v1", {"who": "me"}, _ctx(), out)  # type: ignore[arg-type]
    assert rc == 1  # the second step failed: the action fails
    path = "/__w/_temp/_actions/acme/x/v1"
    assert job.container.trees == [(tmp_path, path)]
    shells = [r[0] for r in job.ran]
    assert shells == ["sh", "bash", "python"]  # the third is skipped after the failure, always() runs
    assert job.ran[0][1] == f"echo me in . from {path}"
    assert job.ran[1][2]["GITHUB_ACTION_PATH"] == path
    assert out == {"said": f"echo me in . from {path}"}


AFTER_A_FAILURE = """
runs:
  using: composite
  steps:
    - shell: sh
      run: echo on success
    - if: failure()
      shell: sh
      run: echo on failure broken
    - if: success()
      shell: sh
      run: echo on explicit success
    - if: always()
      shell: sh
      run: echo always
"""


def test_a_composite_actions_steps_see_the_calling_jobs_failure(tmp_path: Path) -> None:
    """GitHub: a composite action's steps see the job status so far. Run (if: always()) after an earlier step of
    the job failed, its default and success() steps are skipped and its failure() step runs; the action's rc is
    its own first failed step's."""
    job = FakeJob(fail={"broken"})
    ctx = {**_ctx(), "__status": "failure"}
    rc = composite.run_composite(job, _action(tmp_path, AFTER_A_FAILURE), "a/x@v1", {}, ctx, {})  # type: ignore[arg-type]
    assert [r[1] for r in job.ran] == ["echo on failure broken", "echo always"]
    assert rc == 1
    job = FakeJob()
    assert composite.run_composite(job, tmp_path, "a/x@v1", {}, _ctx(), {}) == 0  # type: ignore[arg-type]
    assert [r[1] for r in job.ran] == ["echo on success", "echo on explicit success", "echo always"]


def test_a_composite_action_checks_required_inputs_and_shell(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="'who' is required"):
        composite.run_composite(FakeJob(), _action(tmp_path, ACTION), "a/x@v1", {}, _ctx(), {})  # type: ignore[arg-type]
    _action(tmp_path, "runs:\n  using: composite\n  steps:\n    - run: echo no shell\n")
    with pytest.raises(ReplayError, match="no shell"):
        composite.load_action(tmp_path)
    _action(tmp_path, "runs:\n  using: node20\n  main: index.js\n")
    with pytest.raises(ReplayError, match="composite actions only"):
        composite.load_action(tmp_path)


def test_uses_of_mnnrepro_maps_to_this_checkout_unless_mapped(tmp_path: Path) -> None:
    other = _action(tmp_path, ACTION)
    assert composite.action_dir("acme/mnnrepro@v3", (), lambda: tmp_path) == ROOT
    mapping = composite.parse_map([f"acme/mnnrepro@v3={other}"])
    assert composite.action_dir("acme/mnnrepro@v3", mapping, lambda: tmp_path) == other
    assert composite.action_dir("actions/checkout@v5", mapping, lambda: tmp_path) is None
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "action.yml").write_text(ACTION)
    assert composite.action_dir("./sub", (), lambda: tmp_path) == tmp_path / "sub"
    with pytest.raises(ReplayError, match="OWNER/NAME@VERSION=PATH"):
        composite.parse_map(["acme/mnnrepro"])
    with pytest.raises(ReplayError, match=r"no action\.yml"):
        composite.parse_map([f"a/b@v1={tmp_path / 'nowhere'}"])


def test_the_action_is_composite_with_the_documented_inputs_and_steps_the_replay_knows() -> None:
    action = composite.load_action(ROOT)
    assert {"sessions", "mnn-tree", "icds", "expectations", "ref-name"} <= set(action["inputs"])
    assert action["inputs"]["icds"]["default"] == "lavapipe,swiftshader"
    for step in action["runs"]["steps"]:
        if "uses" in step:
            local_action(str(step["uses"]), step.get("with"))
    text = (ROOT / "action.yml").read_text()
    assert "--source" in text and "tools/action_summary.py" in text


def _git_repo(tmp_path: Path, workflow: str) -> Path:
    repo = tmp_path / "fork"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "gpu.yml").write_text(workflow)
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    return repo


def test_repo_and_workflow_pick_another_checkouts_workflow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = "on: push\njobs:\n  gpu:\n    runs-on: ubuntu-24.04\n    steps:\n      - uses: acme/mnnrepro@v1\n"
    repo = _git_repo(tmp_path, wf)
    args = cli.parser().parse_args(
        ["--repo", str(repo), "--workflow", ".github/workflows/gpu.yml", "--list", "--state-dir", str(tmp_path / "s")]
    )
    assert cli.replay(args) == 0
    assert "gpu: gpu" in capsys.readouterr().out
    bad = cli.parser().parse_args(["--repo", str(tmp_path), "--list"])
    with pytest.raises(ReplayError, match="not a git checkout"):
        cli.replay(bad)


def test_fixture_override_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "expectations.toml"
    mine.write_text(
        (fixtures.FIXTURES / "ops" / "expectations.toml").read_text().replace("[[expect]]", "[[expect]]", 0)
    )
    monkeypatch.setenv(fixtures.OPS_EXPECTATIONS_ENV, str(tmp_path / "missing.toml"))
    with pytest.raises(Exception, match=r"missing\.toml"):
        opjudge.load_expectations()
    monkeypatch.setenv(fixtures.MATRIX_ENV, str(tmp_path / "nomatrix.toml"))
    with pytest.raises(Exception, match=r"nomatrix\.toml"):
        fixtures.load_matrix()
    monkeypatch.setenv(fixtures.OPS_EXPECTATIONS_ENV, str(mine))
    assert opjudge.load_expectations() == opjudge.load_expectations(fixtures.FIXTURES / "ops" / "expectations.toml")
    monkeypatch.delenv(fixtures.MATRIX_ENV)
    assert fixtures.load_matrix().default_ref


def _results(root: Path, session: str, data: dict[str, Any]) -> None:
    d = root / session / "20260101T000000Z-x"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(data))
    (d / "summary.md").write_text(f"table of {session}\n")


def test_the_verdict_step_names_unmatched_cells_and_writes_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cell = {"cell": "fork/vulkan-buffer/lavapipe", "verdict": "NOT-EXERCISED", "expected": "FIXED", "matched": False}
    _results(tmp_path, "vulkan_buffer", {"cells": [cell], "all_matched": False})
    test = {"test": "op/conv", "status": "FAIL", "expected": "", "matched": False}
    _results(tmp_path, "ops", {"cells": [{"cell": "fork/vulkan-image/lavapipe", "tests": [test]}]})
    _results(
        tmp_path, "cpu", {"cells": [{"cell": "fork/cpu", "verdict": "PASS", "matched": True}], "all_matched": True}
    )
    step = tmp_path / "step.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    assert action_summary.main([str(tmp_path), "vulkan_buffer=1", "ops=1", "cpu=0", "missing=2"]) == 1
    out = capsys.readouterr().out
    assert "::error title=mnnrepro::vulkan_buffer: fork/vulkan-buffer/lavapipe: NOT-EXERCISED (expected FIXED)" in out
    assert "ops: fork/vulkan-image/lavapipe op/conv: FAIL (expected PASS)" in out
    assert "missing: no summary.json (exit 2)" in out and "cpu:" not in out
    assert "table of vulkan_buffer" in step.read_text() and "table of cpu" in step.read_text()
    assert action_summary.main([str(tmp_path), "cpu=0"]) == 0


def test_the_verdict_step_never_reads_a_shard_as_the_whole_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A shard (--shard via extra-args or MNNREPRO_SHARD) that matched its slice exits 0: still no whole verdict.
    cell = {"cell": "fork/vulkan-buffer/lavapipe", "verdict": "FIXED", "expected": "FIXED", "matched": True}
    _results(tmp_path, "vulkan_buffer", {"cells": [cell], "all_matched": True, "shard": {"index": 1, "total": 2}})
    assert action_summary.main([str(tmp_path), "vulkan_buffer=0"]) == 1
    assert "shard 1/2: partial, not a whole verdict" in capsys.readouterr().out
