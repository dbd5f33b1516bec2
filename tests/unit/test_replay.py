"""The workflow replay's pure parts: expressions, if:, matrices, uses: mapping, file commands, artifacts, caches.

Nothing here starts a container; `python tools/ci_replay.py --job JOB` itself is exercised by hand (see
tools/replay/__init__.py).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mnnrepro.fixtures import ROOT
from tools.replay import cli, containers, engine, model, workflow
from tools.replay.errors import ReplayError
from tools.replay.expressions import Strict, evaluate, evaluate_if, expand, expand_value
from tools.replay.workflow import (
    expand_matrix,
    find_cache,
    local_action,
    parse_env_file,
    parse_path_file,
    plan_upload,
    select_matrix,
)


def ctx(status: str = "success", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "github": Strict("github", {"event_name": "push", "run_id": "42"}),
        "env": Strict("env", {"REF": "3.3.0"}),
        "matrix": Strict("matrix", {"ref": "3.3.0", "icd": "lavapipe", "session": "vulkan_buffer"}),
        "runner": Strict("runner", {"temp": "/__w/_temp"}),
        "steps": Strict("steps", {"cache": Strict("steps.cache", {"outputs": {"cache-hit": "true"}})}),
        "needs": Strict(
            "needs",
            {
                "setup": Strict(
                    "needs.setup",
                    {"outputs": {"refs": '["3.3.0", "47027e10"]', "commits": '{"3.3.0": "5047919a"}'}},
                )
            },
        ),
        "__status": status,
    }
    base.update(extra)
    return base


# -- expressions ---------------------------------------------------------------------------------------------


def test_expand_replaces_each_expression() -> None:
    text = "nox -s ${{ matrix.session }} -- --ref ${{ matrix.ref }} in ${{ runner.temp }}/x (${{ github.run_id }})"
    assert expand(text, ctx()) == "nox -s vulkan_buffer -- --ref 3.3.0 in /__w/_temp/x (42)"


def test_expand_writes_values_as_github_does() -> None:
    assert expand("${{ 1 }} ${{ true }} ${{ null }}|${{ 1.5 }}", ctx()) == "1 true |1.5"
    assert expand("${{ format('{0}-{1}', env.REF, 'x') }}", ctx()) == "3.3.0-x"


def test_a_closing_brace_pair_inside_a_string_literal_is_text() -> None:
    assert expand("${{ format('{{0}}}}') }}!", ctx()) == "{0}}!"


def test_an_unknown_context_is_an_error_naming_it() -> None:
    with pytest.raises(ReplayError, match=r"unknown context 'secrets'"):
        expand("token ${{ secrets.TOKEN }}", ctx())


def test_an_unknown_property_of_a_strict_context_is_an_error_not_empty() -> None:
    with pytest.raises(ReplayError, match=r"matrix\.sesion"):
        expand("${{ matrix.sesion }}", ctx())
    with pytest.raises(ReplayError, match=r"env\.COMMIT"):
        expand("${{ env.COMMIT }}", ctx())
    with pytest.raises(ReplayError, match=r"steps\.nosuchstep"):
        expand("${{ steps.nosuchstep.outputs.x }}", ctx())


def test_an_unset_step_output_is_empty_as_on_github() -> None:
    assert expand("[${{ steps.cache.outputs.cache-matched-key }}]", ctx()) == "[]"
    assert expand("${{ steps.cache.outputs.cache-hit }}", ctx()) == "true"


def test_an_unknown_function_is_an_error_naming_it() -> None:
    with pytest.raises(ReplayError, match=r"unknown function toUpper\(\)"):
        evaluate("toUpper('a')", ctx())


def test_syntax_errors_are_reported() -> None:
    with pytest.raises(ReplayError, match="cannot parse"):
        evaluate('matrix.ref == "3.3.0"', ctx())
    with pytest.raises(ReplayError, match="unterminated"):
        expand("${{ matrix.ref ", ctx())


def test_fromjson_and_an_index_by_expression() -> None:
    assert evaluate("fromJSON(needs.setup.outputs.commits)[matrix.ref]", ctx()) == "5047919a"
    assert evaluate("fromJSON(needs.setup.outputs.refs)[1]", ctx()) == "47027e10"


def test_a_lone_expression_keeps_its_type() -> None:
    assert expand_value("${{ fromJSON(needs.setup.outputs.refs) }}", ctx()) == ["3.3.0", "47027e10"]
    assert expand_value(" ${{ fromJSON(needs.setup.outputs.refs) }}", ctx()) != ["3.3.0", "47027e10"]


def test_string_comparison_is_case_insensitive_and_types_coerce() -> None:
    assert evaluate("'LavaPipe' == matrix.icd", ctx()) is True
    assert evaluate("'1' == 1", ctx()) is True
    assert evaluate("'' == 0", ctx()) is True
    assert evaluate("'a' != 'A'", ctx()) is False
    assert evaluate("contains(fromJSON(needs.setup.outputs.refs), '3.3.0')", ctx()) is True


def test_and_or_return_their_operands() -> None:
    assert evaluate("'' || 'fallback'", ctx()) == "fallback"
    assert evaluate("'a' && 'b'", ctx()) == "b"
    assert evaluate("!('a' && '')", ctx()) is True


# -- if: -----------------------------------------------------------------------------------------------------


def test_if_without_a_status_function_needs_success() -> None:
    assert evaluate_if(None, ctx()) is True
    assert evaluate_if(None, ctx("failure")) is False
    assert evaluate_if("matrix.icd == 'lavapipe'", ctx()) is True
    assert evaluate_if("matrix.icd == 'lavapipe'", ctx("failure")) is False
    assert evaluate_if("${{ matrix.icd == 'swiftshader' }}", ctx()) is False


def test_if_with_status_functions() -> None:
    assert evaluate_if("always()", ctx("failure")) is True
    assert evaluate_if("failure()", ctx("failure")) is True
    assert evaluate_if("failure()", ctx()) is False
    assert evaluate_if("success()", ctx("failure")) is False
    assert evaluate_if("cancelled()", ctx()) is False


def test_if_on_outputs_and_events() -> None:
    assert evaluate_if("steps.cache.outputs.cache-hit != 'true'", ctx()) is False
    assert evaluate_if("steps.cache.outputs.cache-matched-key != ''", ctx()) is False
    event = "github.event_name == 'schedule' || github.event_name == 'workflow_dispatch'"
    assert evaluate_if(event, ctx()) is False
    scheduled = ctx(github=Strict("github", {"event_name": "schedule"}))
    assert evaluate_if(event, scheduled) is True


def test_if_with_an_unknown_expression_is_an_error() -> None:
    with pytest.raises(ReplayError, match="hashfile"):
        evaluate_if("hashfile('x') != ''", ctx())


# -- matrices ------------------------------------------------------------------------------------------------


def test_matrix_product_in_key_order() -> None:
    combos = expand_matrix({"matrix": {"ref": ["a", "b"], "icd": ["lavapipe", "swiftshader"]}}, ctx())
    assert combos == [
        {"ref": "a", "icd": "lavapipe"},
        {"ref": "a", "icd": "swiftshader"},
        {"ref": "b", "icd": "lavapipe"},
        {"ref": "b", "icd": "swiftshader"},
    ]


def test_matrix_from_a_job_output() -> None:
    combos = expand_matrix({"matrix": {"ref": "${{ fromJSON(needs.setup.outputs.refs) }}"}}, ctx())
    assert combos == [{"ref": "3.3.0"}, {"ref": "47027e10"}]


def test_matrix_include_and_exclude() -> None:
    strategy = {
        "matrix": {
            "ref": ["a", "b"],
            "icd": ["lavapipe", "swiftshader"],
            "exclude": [{"ref": "b", "icd": "swiftshader"}],
            "include": [{"icd": "lavapipe", "steps": 3}, {"ref": "c", "icd": "host"}],
        }
    }
    combos = expand_matrix(strategy, ctx())
    assert {"ref": "b", "icd": "swiftshader"} not in combos
    assert {"ref": "a", "icd": "lavapipe", "steps": 3} in combos
    assert {"ref": "b", "icd": "lavapipe", "steps": 3} in combos
    assert {"ref": "a", "icd": "swiftshader"} in combos
    assert combos[-1] == {"ref": "c", "icd": "host"}
    assert len(combos) == 4


def test_no_matrix_is_one_job_and_a_bad_axis_is_an_error() -> None:
    assert expand_matrix(None, ctx()) == [{}]
    with pytest.raises(ReplayError, match=r"matrix\.ref"):
        expand_matrix({"matrix": {"ref": "3.3.0"}}, ctx())


def test_select_matrix_narrows_by_the_given_values() -> None:
    combos = expand_matrix({"matrix": {"ref": ["a", "b"], "icd": ["lavapipe", "swiftshader"]}}, ctx())
    assert select_matrix(combos, {"ref": "b", "icd": "lavapipe"}, "reproduce") == [{"ref": "b", "icd": "lavapipe"}]
    # A key this job's matrix lacks (session, for the build job) does not narrow it.
    assert select_matrix(combos, {"ref": "a", "session": "x"}, "build") == combos[:2]
    with pytest.raises(ReplayError, match="no combination"):
        select_matrix(combos, {"ref": "z"}, "reproduce")


def test_parse_matrix_arg() -> None:
    assert workflow.parse_matrix_arg("ref=3.3.0, icd=lavapipe") == {"ref": "3.3.0", "icd": "lavapipe"}
    with pytest.raises(ReplayError, match="key=value"):
        workflow.parse_matrix_arg("ref")


# -- file commands -------------------------------------------------------------------------------------------


def test_env_file_lines_and_heredocs() -> None:
    text = "A=1\nURL=x=y\n\nMULTI<<EOF\nline one\nline=two\nEOF\nB=\n"
    assert parse_env_file(text) == {"A": "1", "URL": "x=y", "MULTI": "line one\nline=two", "B": ""}


def test_env_file_errors() -> None:
    with pytest.raises(ReplayError, match="no closing"):
        parse_env_file("X<<EOF\nnever closed\n")
    with pytest.raises(ReplayError, match="cannot read line"):
        parse_env_file("just text\n", "GITHUB_OUTPUT")


def test_path_file() -> None:
    assert parse_path_file("/a/bin\n\n  /b/bin  \r\n") == ["/a/bin", "/b/bin"]


# -- uses: ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uses", "kind"),
    [
        ("actions/checkout@v5", "checkout"),
        ("actions/setup-python@v6", "setup-python"),
        ("actions/cache@v5", "cache"),
        ("actions/cache/restore@v5", "cache-restore"),
        ("actions/cache/save@v5", "cache-save"),
        ("actions/upload-artifact@v6", "upload-artifact"),
        ("actions/download-artifact@v7", "download-artifact"),
    ],
)
def test_uses_maps_to_a_local_equivalent(uses: str, kind: str) -> None:
    assert local_action(uses) == kind


def test_uses_without_a_local_equivalent_or_with_unknown_inputs() -> None:
    with pytest.raises(ReplayError, match="no local equivalent for uses: docker/build-push-action@v6"):
        local_action("docker/build-push-action@v6")
    with pytest.raises(ReplayError, match="repository"):
        local_action("actions/checkout@v5", {"repository": "alibaba/MNN"})
    with pytest.raises(ReplayError, match="no @version"):
        local_action("actions/checkout")


# -- artifacts and caches ------------------------------------------------------------------------------------


def test_upload_plan_excludes_and_roots() -> None:
    ws = "/w"
    found = [
        "/w/results/run1/summary.json",
        "/w/results/run1/cells/a/events.jsonl",
        "/w/results/latest/summary.json",
        "/w/results/run1/.hidden/x",
    ]
    plan = plan_upload(["/w/results/", "!/w/results/latest", "!/w/results/latest/**"], found, include_hidden=False)
    assert plan.root == f"{ws}/results"
    assert plan.files == ("/w/results/run1/cells/a/events.jsonl", "/w/results/run1/summary.json")
    with_hidden = plan_upload(["/w/results/", "!/w/results/latest"], found, include_hidden=True)
    assert "/w/results/run1/.hidden/x" in with_hidden.files


def test_upload_plan_wildcards_and_a_single_file() -> None:
    found = [
        "/h/.cache/mnnrepro/build/k1/logs/core.log",
        "/h/.cache/mnnrepro/build/k1/CMakeCache.txt",
        "/h/.cache/mnnrepro/build/k1-driver-n/configure.log",
    ]
    patterns = ["/h/.cache/mnnrepro/build/*/logs/", "/h/.cache/mnnrepro/build/*-driver-*/*.log"]
    plan = plan_upload(patterns, found, include_hidden=False)
    assert plan.root == "/h/.cache/mnnrepro/build"
    assert plan.files == (
        "/h/.cache/mnnrepro/build/k1-driver-n/configure.log",
        "/h/.cache/mnnrepro/build/k1/logs/core.log",
    )
    single = plan_upload(["/t/mnn-build.tar"], ["/t/mnn-build.tar"], include_hidden=False)
    assert single.root == "/t" and single.files == ("/t/mnn-build.tar",)


def test_upload_plan_leaves_out_hidden_files_under_the_root() -> None:
    found = ["/h/variants/k/lib/libMNN.so", "/h/variants/k/.complete.json"]
    assert plan_upload(["/h/variants"], found, include_hidden=False).files == ("/h/variants/k/lib/libMNN.so",)


def _cache_entry(store: Path, key: str, paths: list[str], created: float) -> None:
    d = store / workflow.cache_dir_name(key)
    d.mkdir(parents=True)
    (d / "cache.tar").write_bytes(b"")
    (d / "meta.json").write_text(json.dumps({"key": key, "paths": paths, "created": created}))


def test_find_cache_exact_then_newest_prefix_for_the_same_paths(tmp_path: Path) -> None:
    now = time.time()
    _cache_entry(tmp_path, "ccache-3.3.0-1", ["~/c"], now - 20)
    _cache_entry(tmp_path, "ccache-3.3.0-2", ["~/c"], now - 10)
    _cache_entry(tmp_path, "ccache-3.3.0-3", ["~/other"], now)
    _cache_entry(tmp_path, "toolchain/with/slashes", ["/t"], now)
    hit = find_cache(tmp_path, "ccache-3.3.0-1", ["ccache-"], ["~/c"])
    assert hit is not None and hit[0] == "ccache-3.3.0-1"
    prefix = find_cache(tmp_path, "ccache-3.3.0-9", ["nothing-", "ccache-3.3.0-"], ["~/c"])
    assert prefix is not None and prefix[0] == "ccache-3.3.0-2"
    assert find_cache(tmp_path, "ccache-x", [], ["~/c"]) is None
    slashed = find_cache(tmp_path, "toolchain/with/slashes", [], ["/t"])
    assert slashed is not None and slashed[1].parent == tmp_path


# -- the workflow itself -------------------------------------------------------------------------------------


def test_the_workflow_uses_only_what_the_replay_can_stand_in_for() -> None:
    pytest.importorskip("yaml", reason="PyYAML comes with the `ci` extra")
    wf = workflow.load_workflow((ROOT / workflow.WORKFLOW).read_text())
    assert "schedule" in wf["on"] and "push" in wf["on"]
    permissive: dict[str, Any] = {
        name: {} for name in ("github", "env", "matrix", "runner", "steps", "job", "strategy", "vars", "inputs")
    }
    permissive["needs"] = {
        "setup": {
            "outputs": {
                "refs": '["3.3.0"]',
                "commits": '{"3.3.0": "c"}',
                "ops_refs": '["3.3.0"]',
                "ops_shards": "[1, 2, 3, 4]",
            }
        },
        "nightly-head": {"outputs": {"findings": '["finding-1-mnist-vulkan-image-lavapipe"]'}},
    }
    permissive["__hash_files"] = lambda patterns: "h"
    seen = 0
    for name, job in wf["jobs"].items():
        container = job.get("container")
        image = container["image"] if isinstance(container, dict) else container
        if containers.self_hosted(job):  # the GPU jobs: never queued without the variable, refused by the replay
            assert image is None and "vars.GPU_RUNNER == 'true'" in job["if"], name
        else:
            assert image in containers.DEBIAN_12 or (image is None and str(job["runs-on"]).startswith("ubuntu-")), name
        for step in job["steps"]:
            if "uses" in step:
                local_action(step["uses"], step.get("with"))
        for text in re.findall(r"\$\{\{(.*?)\}\}", json.dumps(job)):
            evaluate(text, permissive)
            seen += 1
    assert seen > 20


def test_a_self_hosted_gpu_job_is_refused_clearly_before_anything_runs(tmp_path: Path) -> None:
    """Issue 22: `tools/ci_replay.py --job gpu` says it cannot replay a self-hosted GPU job (no GPU in its containers)
    before running the jobs it needs, and says what to do instead; the workflow has such jobs."""
    pytest.importorskip("yaml", reason="PyYAML comes with the `ci` extra")
    run = engine.Replay(model.Options(worktree=True, state_dir=tmp_path), say=lambda _: None)
    gpu = [name for name, job in run.jobs().items() if containers.self_hosted(job)]
    assert gpu, "no self-hosted GPU job in the workflow"
    for name in gpu:
        with pytest.raises(ReplayError, match=r"self-hosted runner .*cannot run it.*no GPU") as exc:
            run.plan([name])
        assert "--icd host --runner host" in exc.value.hint
        with pytest.raises(ReplayError, match="self-hosted"):
            containers.job_image(run.jobs()[name], lambda _: None)
    assert run.plan(["reproduce"]) == ["setup", "build", "reproduce"]


# -- the report ----------------------------------------------------------------------------------------------


def test_the_table_and_what_fails_the_replay() -> None:
    ok = model.JobResult("checks", "success", steps=[model.StepResult("checks", "nox -s lint", 0, 12.34)])
    tolerated = model.StepResult("reproduce (3.3.0)", "flaky", 1, 1.0, counts=False)
    broken = model.StepResult("reproduce (3.3.0)", "nox -s vulkan_buffer", 1, 2.0)
    mixed = model.JobResult("reproduce (3.3.0)", "failure", steps=[tolerated, broken])
    skipped = model.JobResult("newest", "skipped", steps=[model.StepResult("newest", "(job skipped by if:)", None, 0)])
    lines = cli.table([ok, mixed, skipped])
    assert lines[0].split() == ["job", "step", "rc", "seconds"]
    assert any("nox -s lint" in line and line.split()[-2:] == ["0", "12.3"] for line in lines)
    assert any("flaky" in line and " 1*" in line for line in lines)
    assert any("newest" in line and "skip" in line for line in lines)
    problems = cli.failed([ok, mixed, skipped], ["checks", "reproduce", "newest"])
    assert problems == ["reproduce (3.3.0): nox -s vulkan_buffer (rc 1)", "newest: skipped by its if: (see --event)"]
    assert cli.failed([ok], ["checks"]) == []


# -- where the replay lives (issue 23: developer tools leave the library) ------------------------------------


def _imports_of(path: Path) -> list[str]:
    """What a file imports, as written: `from .a import b` gives `.a` and `.a.b` (b may be a module)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names += [base, *(base.rstrip(".") + "." + alias.name for alias in node.names)]
    return names


def test_the_library_neither_holds_nor_imports_the_replay() -> None:
    import mnnrepro

    package = Path(mnnrepro.__file__).parent
    assert importlib.util.find_spec("mnnrepro.replay") is None, "replay is back inside the library"
    offending = {
        f"{path.relative_to(package)}: {name}"
        for path in package.rglob("*.py")
        for name in _imports_of(path)
        if name.split(".")[0] == "tools" or re.fullmatch(r"\.+replay|mnnrepro\.replay|\.+replay\..*", name)
    }
    assert not offending, f"the library imports the replay tool: {sorted(offending)}"


def test_the_old_subcommand_only_points_at_the_new_command(capsys: pytest.CaptureFixture[str]) -> None:
    from mnnrepro import cli as library_cli

    assert library_cli.main(["ci", "replay", "--list"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "python tools/ci_replay.py --job JOB" in err, err


def test_the_documented_command_runs_from_any_directory(tmp_path: Path) -> None:
    """`python tools/ci_replay.py` lists the jobs as the replay describes them, and keeps the library's error
    format and exit code (what `mnnrepro ci replay` printed)."""
    pytest.importorskip("yaml", reason="PyYAML comes with the `ci` extra")
    script = ROOT / "tools" / "ci_replay.py"
    state = tmp_path / "state"
    listed = subprocess.run(
        [sys.executable, str(script), "--list", "--state-dir", str(state)], cwd=tmp_path, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    described = engine.Replay(model.Options(state_dir=state), say=lambda _: None).describe()
    assert listed.stdout.splitlines() == described
    assert any(line.startswith("checks: ") for line in described)
    bad = subprocess.run(
        [sys.executable, str(script), "--env", "X", "--list", "--state-dir", str(state)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert (bad.returncode, bad.stdout, bad.stderr) == (
        2,
        "",
        "mnnrepro: workflow replay: --env wants NAME=VALUE, got 'X'\n",
    )


def test_no_function_of_the_replay_is_over_80_lines() -> None:
    sources = sorted((ROOT / "tools" / "replay").glob("*.py"))
    assert len(sources) > 5, sources
    long = [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sources
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, long


# -- issue 26: the op sweep's fan-out and what the replay needs to run it -------------------------------------

DISPATCH = {
    "workflow_dispatch": {
        "inputs": {
            "ops_select": {"type": "string", "default": ""},
            "quick": {"type": "boolean", "default": False},
            "tier": {"type": "choice", "options": ["ci", "all"], "default": "ci"},
        }
    },
    "push": {},
}


def test_dispatch_inputs_defaults_overrides_and_errors() -> None:
    assert workflow.dispatch_inputs(DISPATCH, "workflow_dispatch", {}) == {
        "ops_select": "",
        "quick": False,
        "tier": "ci",
    }
    got = workflow.dispatch_inputs(DISPATCH, "workflow_dispatch", {"ops_select": "op/binary/,grad/", "quick": "true"})
    assert got == {"ops_select": "op/binary/,grad/", "quick": True, "tier": "ci"}
    # Another event: no inputs given, the declared ones read empty (null on GitHub), never an unknown-property error.
    assert workflow.dispatch_inputs(DISPATCH, "push", {}) == {"ops_select": "", "quick": "", "tier": ""}
    with pytest.raises(ReplayError, match="no such workflow_dispatch input"):
        workflow.dispatch_inputs(DISPATCH, "workflow_dispatch", {"ops_selct": "x"})
    with pytest.raises(ReplayError, match="--event workflow_dispatch"):
        workflow.dispatch_inputs(DISPATCH, "push", {"ops_select": "x"})
    with pytest.raises(ReplayError, match="not one of its options"):
        workflow.dispatch_inputs(DISPATCH, "workflow_dispatch", {"tier": "some"})
    with pytest.raises(ReplayError, match="true or false"):
        workflow.dispatch_inputs(DISPATCH, "workflow_dispatch", {"quick": "yes"})
    assert workflow.parse_inputs_arg(["ops_select=op/a,op/b", "x=a=b", "empty="]) == {
        "ops_select": "op/a,op/b",
        "x": "a=b",
        "empty": "",
    }
    with pytest.raises(ReplayError, match="key=value"):
        workflow.parse_inputs_arg(["novalue"])


def _repo_with_workflow(tmp_path: Path, text: str) -> Path:
    """A checkout holding this workflow, with one commit (the replay reads the checkout's HEAD)."""
    repo = tmp_path / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / workflow.WORKFLOW).write_text(text)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    return repo


def test_inputs_reach_expressions_of_a_replay(tmp_path: Path) -> None:
    """--input sets the `inputs` context of every job (a workflow-level env reads it as on GitHub)."""
    pytest.importorskip("yaml", reason="PyYAML comes with the `ci` extra")
    repo = _repo_with_workflow(
        tmp_path,
        "on:\n  workflow_dispatch:\n    inputs:\n      n:\n        type: string\n        default: ''\n"
        "env:\n  N: ${{ inputs.n || '4' }}\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: 'true'\n",
    )

    def replay(**inputs: str) -> engine.Replay:
        opts = model.Options(
            repo=repo, worktree=True, event="workflow_dispatch", state_dir=tmp_path / "state", inputs=dict(inputs)
        )
        return engine.Replay(opts, say=lambda _: None)

    assert expand("${{ inputs.n || '4' }}", {"inputs": Strict("inputs", replay().inputs)}) == "4"
    assert expand("${{ inputs.n || '4' }}", {"inputs": Strict("inputs", replay(n="2").inputs)}) == "2"
    with pytest.raises(ReplayError, match="no such workflow_dispatch input"):
        replay(m="2")


def test_download_by_pattern_one_directory_per_artifact_unless_one_or_merged() -> None:
    up = [f"results-ops-3.3.0-lavapipe-shard-{k}" for k in (1, 2, 3, 4)] + ["results-ops-3.3.0-swiftshader-shard-1"]
    pattern = "results-ops-3.3.0-lavapipe-shard-*"
    assert workflow.artifacts_to_download(up, "", pattern, False) == [(n, n) for n in up[:4]]
    assert workflow.artifacts_to_download(up, "", pattern, True) == [(n, "") for n in up[:4]]
    lone = "results-ops-3.3.0-swiftshader-shard-*"
    assert workflow.artifacts_to_download(up, "", lone, False) == [(up[4], "")]  # a lone match comes flat
    assert workflow.artifacts_to_download(up, up[1], "", False) == [(up[1], "")]
    assert workflow.artifacts_to_download(up, "missing", "", False) == []
    assert workflow.artifacts_to_download(up, "", "nothing-*", False) == []
    assert len(workflow.artifacts_to_download(up, "", "", False)) == 5  # neither: every artifact of the run
    assert local_action("actions/download-artifact@v7", {"pattern": "a-*", "path": "p", "merge-multiple": "true"})


def test_download_artifact_puts_each_match_in_its_place(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tools.replay import actions

    names = ["shard-1", "shard-2"]
    for n in names:
        (tmp_path / "artifacts" / n).mkdir(parents=True)
    put: list[tuple[Path, str]] = []
    logs: list[str] = []
    job: Any = SimpleNamespace(
        container=SimpleNamespace(put_tree=lambda src, dest: put.append((src, dest))),
        replay=SimpleNamespace(uploaded={*names, "other"}, opts=SimpleNamespace(state_dir=tmp_path)),
        workspace="/w",
        home="/h",
        log=logs.append,
    )
    outputs: dict[str, str] = {}
    rc = actions.download_artifact(job, {"pattern": "shard-*", "path": "/t/shards", "__name": "d"}, {}, outputs)
    assert rc == 0 and outputs["download-path"] == "/t/shards"
    assert put == [(tmp_path / "artifacts" / n, f"/t/shards/{n}") for n in names]
    put.clear()
    assert actions.download_artifact(job, {"name": "nope", "__name": "d"}, {}, outputs) == 1
    assert put == [] and any("no artifact nope" in line for line in logs)


def test_the_step_summaries_are_listed_at_the_end() -> None:
    done = model.JobResult("ops-merge (3.3.0, lavapipe)", "success", summary="/r/ops-merge.summary.md")
    assert model.summary_lines([model.JobResult("setup", "success"), done]) == [
        "",
        "step summaries:",
        "  ops-merge (3.3.0, lavapipe): /r/ops-merge.summary.md",
    ]
    assert model.summary_lines([model.JobResult("setup", "success")]) == []


def test_the_op_sweep_fans_out_over_shards_and_one_merge_judges_them() -> None:
    """The ops job: a shard axis from the setup job (OPS_SHARDS, one place), --shard K/N and --select from the
    dispatch input, a uniquely named artifact per (ref, icd, shard); ops-merge: after every shard (always()),
    the download pattern of its (ref, icd) matches exactly that pair's shard artifacts."""
    pytest.importorskip("yaml", reason="PyYAML comes with the `ci` extra")
    wf = workflow.load_workflow((ROOT / workflow.WORKFLOW).read_text())
    ops, merge = wf["jobs"]["ops"], wf["jobs"]["ops-merge"]
    assert wf["env"]["OPS_SHARDS"] == "${{ inputs.ops_shards || '4' }}"
    assert set(wf["on"]["workflow_dispatch"]["inputs"]) >= {"ops_select", "ops_shards"}
    assert ops["strategy"]["fail-fast"] is False and merge["strategy"]["fail-fast"] is False
    assert ops["strategy"]["matrix"]["shard"] == "${{ fromJSON(needs.setup.outputs.ops_shards) }}"
    run = next(s["run"] for s in ops["steps"] if "nox -s ops" in s.get("run", ""))
    assert '--shard "$SHARD/$OPS_SHARDS"' in run and "--no-clone" in run and '--select "$SELECT"' in run
    assert ops["env"]["SELECT"] == "${{ inputs.ops_select }}" and "--results-dir results/ops" in run
    assert not any("mnnrepro build" in s.get("run", "") for s in ops["steps"])  # the build job's artifact only
    assert set(engine.Replay.needs_of(merge)) == {"setup", "ops"} and merge["if"].startswith("!cancelled()")
    upload = next(s for s in ops["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    download = next(s for s in merge["steps"] if s.get("uses", "").startswith("actions/download-artifact"))
    names = []
    for ref, icd, shard in [("3.3.0", "lavapipe", k) for k in (1, 2, 3, 4)] + [("3.3.0", "swiftshader", 1)]:
        c = {"matrix": Strict("matrix", {"ref": ref, "icd": icd, "shard": shard})}
        names.append(expand(upload["with"]["name"], c))
    assert len(set(names)) == len(names)
    c = {"matrix": Strict("matrix", {"ref": "3.3.0", "icd": "lavapipe"})}
    picked = workflow.artifacts_to_download(names, "", expand(download["with"]["pattern"], c), False)
    assert [n for n, _ in picked] == names[:4]
    merge_run = next(s["run"] for s in merge["steps"] if "mnnrepro merge" in s.get("run", ""))
    assert "GITHUB_STEP_SUMMARY" in merge_run and '"stale"' in merge_run


# -- --until: a costly job replayed up to a step ----------------------------------------------------------------


def _job_run(tmp_path: Path, job: dict[str, Any], until: str, fail: str = "") -> tuple[Any, list[str]]:
    """A JobRun whose steps are faked (no container): run:/uses: record what ran; one post step."""
    from types import SimpleNamespace

    from tools.replay.job import JobRun

    replay: Any = SimpleNamespace(
        say=lambda _: None,
        run_dir=tmp_path,
        workflow={},
        inputs={},
        opts=model.Options(state_dir=tmp_path),
        sha="0" * 40,
        run_id="1",
        github=lambda name, ws: Strict("github", {"event_name": "push"}),
    )
    ran: list[str] = []
    run: Any = JobRun(replay, "costly", job, {}, {}, "costly", until)

    def fake(step: dict[str, Any], *_: Any) -> int:
        ran.append(str(step.get("run", step.get("uses"))))
        return 1 if fail and fail in ran[-1] else 0

    def post() -> int:
        ran.append("post: cache save")
        return 0

    run.run_step, run.uses = fake, fake
    run.post.append(post)
    run.post_names.append("Post cache")
    run.steps(time.monotonic(), 1e6)
    run.post_steps()
    return run, ran


COSTLY = {
    "steps": [
        {"uses": "actions/checkout@v6"},
        {"name": "Imports of the suite", "id": "imports", "run": "python -c 'import mnnrepro'"},
        {"name": "The costly sweep", "run": "nox -s ops"},
        {"name": "Upload", "if": "always()", "uses": "actions/upload-artifact@v6"},
    ]
}


@pytest.mark.parametrize("until", ["Imports", "imports"])
def test_until_stops_the_job_after_the_step_and_never_calls_it_success(tmp_path: Path, until: str) -> None:
    run, ran = _job_run(tmp_path, COSTLY, until)
    assert ran == ["actions/checkout@v6", "python -c 'import mnnrepro'"]  # no sweep, no upload, no post step
    assert run.result.status == model.STOPPED != "success"
    assert [s.step for s in run.result.steps][-2:] == [
        "(replay) stopped after Imports of the suite (--until)",
        "Post cache",
    ]
    assert run.result.steps[-1].rc is None and "later step(s)" not in run.result.steps[-1].note
    assert run.result.steps[-2].note == "2 later step(s) not run"
    assert any("= job stopped" in line for line in cli.table([run.result]))
    assert cli.failed([run.result], ["costly"]) == []  # the steps it ran passed


def test_until_after_a_failed_step_is_a_failure_and_without_until_the_job_runs_whole(tmp_path: Path) -> None:
    run, ran = _job_run(tmp_path, COSTLY, "Imports", fail="import")
    assert run.result.status == "failure" and len(ran) == 2
    (tmp_path / "whole").mkdir()
    whole, ran = _job_run(tmp_path / "whole", COSTLY, "")
    assert whole.result.status == "success" and ran[-1] == "post: cache save" and len(ran) == 5


def test_until_goes_to_the_asked_job_only_and_must_name_one_of_its_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("yaml", reason="PyYAML comes with the `ci` extra")
    repo = _repo_with_workflow(
        tmp_path,
        "on: push\njobs:\n  setup:\n    runs-on: ubuntu-24.04\n    steps:\n      - name: Imports\n        run: 'true'\n"
        "  costly:\n    needs: setup\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - name: Imports\n        run: 'true'\n",
    )
    got: list[tuple[str, str]] = []

    class FakeRun:
        def __init__(self, replay: Any, name: str, job: Any, combo: Any, needs: Any, label: str, until: str) -> None:
            got.append((name, until))
            self.label = label

        def run(self) -> model.JobResult:
            return model.JobResult(self.label, "success")

    monkeypatch.setattr(engine, "JobRun", FakeRun)

    def replay(until: str) -> engine.Replay:
        opts = model.Options(repo=repo, worktree=True, state_dir=tmp_path / "state", until=until)
        return engine.Replay(opts, say=lambda _: None)

    replay("Imports").run(["costly"], {})
    assert got == [("setup", ""), ("costly", "Imports")]
    with pytest.raises(ReplayError, match="no step of job 'costly'"):
        replay("Typo").run(["costly"], {})
    with pytest.raises(ReplayError, match="one --job"):
        replay("Imports").run(["setup", "costly"], {})
    assert cli.parser().parse_args(["--job", "costly", "--until", "Imports"]).until == "Imports"


def test_a_step_the_job_stopped_before_reads_as_empty_outputs_not_an_unknown_property(tmp_path: Path) -> None:
    # nightly-head's job outputs name its `findings` step; a replay stopped before it (--until) must still finish.
    from tools.replay.expressions import expand_value

    job = {"steps": [*COSTLY["steps"][:2], {"name": "Findings", "id": "findings", "run": "ls"}]}
    run, ran = _job_run(tmp_path, job, "imports")
    assert "ls" not in ran and run.result.status == model.STOPPED
    assert expand_value("${{ steps.findings.outputs.findings }}", run.ctx(run.env_for({}))) in ("", None)
