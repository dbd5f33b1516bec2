"""The scheduled triage of upstream HEAD (issue 27): the workflow's `nightly-head` job and its per-finding
artifacts, and tools/upstream_refs.py, the one place both scheduled jobs learn the newest release from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import bisect
from mnnrepro.fixtures import ROOT
from tools import upstream_refs
from tools.replay import workflow
from tools.replay.expressions import Strict, evaluate_if, expand

TAGS = """\
0df31a8667bdfdbdea084eef43b6812897e75db9\trefs/tags/3.9.0
ea44a3ebd5dd6348eea501047b17c43aa3ecccb6\trefs/tags/3.10.0
d407447ed56c4121a11ccbd266dc184ca1ead0c2\trefs/tags/3.10.0^{}
1111111111111111111111111111111111111111\trefs/tags/0.2.2.3
2222222222222222222222222222222222222222\trefs/tags/Android-9.8.1
3333333333333333333333333333333333333333\trefs/tags/v9.9.9
"""


def jobs() -> dict[str, Any]:
    pytest.importorskip("yaml", reason="PyYAML comes with the `ci` extra")
    wf: dict[str, Any] = workflow.load_workflow((ROOT / workflow.WORKFLOW).read_text())
    return dict(wf["jobs"])


def step_running(job: dict[str, Any], text: str) -> dict[str, Any]:
    found = [s for s in job["steps"] if text in s.get("run", "")]
    assert len(found) == 1, f"{len(found)} steps run {text!r}"
    return dict(found[0])


def test_the_newest_release_is_by_version_and_its_commit_is_the_peeled_one() -> None:
    tags = upstream_refs.releases(TAGS)
    assert set(tags) == {"3.9.0", "3.10.0"}  # four-part, prefixed and v-tags are not releases
    assert upstream_refs.newest(tags) == ("3.10.0", "d407447ed56c4121a11ccbd266dc184ca1ead0c2")
    assert upstream_refs.newest({}) is None
    assert upstream_refs.head_of("abc\tHEAD\ndef\trefs/heads/master\n") == "abc"
    assert upstream_refs.head_of("def\trefs/heads/master\n") is None


def git(cwd: Path, *args: str, date: str = "") -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env.update({"GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"})
    if date:
        env.update({"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def upstream(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository like upstream: commits a day apart, the release 3.6.1 (annotated) on the third, HEAD later."""
    up = tmp_path / "up"
    up.mkdir()
    git(up, "init", "-q", "-b", "master")
    for day in range(1, 7):
        (up / f"f{day}").write_text(str(day))
        git(up, "add", f"f{day}")
        git(up, "commit", "-qm", f"c{day}", date=f"2026-07-0{day}T12:00:00")
        if day == 3:
            git(up, "tag", "-a", "3.6.1", "-m", "release", date=f"2026-07-0{day}T12:00:00")
            git(up, "tag", "3.6.1.1")  # not a release shape
    return up, git(up, "rev-parse", "3.6.1^{commit}").strip(), git(up, "rev-parse", "HEAD").strip()


def test_the_script_prints_the_release_its_commit_and_head(tmp_path: Path) -> None:
    up, tag_commit, head = upstream(tmp_path)
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "upstream_refs.py"), str(up)], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["tag=3.6.1", f"tag_commit={tag_commit}", f"head={head}"]


def test_only_the_schedule_and_a_manual_run_triage_head() -> None:
    j = jobs()
    for name in ("nightly-head", "newest"):
        for event, runs in (("schedule", True), ("workflow_dispatch", True), ("push", False), ("pull_request", False)):
            ctx = {"github": Strict("github", {"event_name": event}), "__status": "success"}
            assert evaluate_if(j[name]["if"], ctx) is runs, (name, event)


def test_both_scheduled_jobs_take_the_release_from_one_script() -> None:
    j = jobs()
    for name in ("nightly-head", "newest"):
        run = step_running(j[name], "tools/upstream_refs.py")["run"]
        assert '"${MNN_GIT_URL:-https://github.com/alibaba/MNN.git}"' in run or '"$url"' in run
        assert "sort -t." not in run  # the tag logic lives in the script only
    text = (ROOT / workflow.WORKFLOW).read_text()
    assert "sort -t. -k1,1n" not in text


def test_the_history_fetched_is_enough_for_bisect(tmp_path: Path) -> None:
    """The job's fetch step, run as written against a file:// remote: bisect plans TAG..HEAD in what it fetched."""
    up, tag_commit, head = upstream(tmp_path)
    step = step_running(jobs()["nightly-head"], "--shallow-since")
    temp, out, summary = tmp_path / "temp", tmp_path / "output", tmp_path / "summary"
    temp.mkdir()
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    env.update({"RUNNER_TEMP": str(temp), "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(summary)})
    env.update({"MNN_GIT_URL": f"file://{up}", "TAG": "3.6.1", "HEAD_SHA": head})
    subprocess.run(["bash", "-e", "-c", step["run"]], env=env, check=True, capture_output=True, text=True)
    git_dir = Path(out.read_text().split("dir=", 1)[1].split()[0])
    assert git_dir == temp / "mnn.git" and (git_dir / "shallow").is_file()  # not the whole history
    rng = bisect.plan(git_dir, "3.6.1", head)
    assert rng.old == tag_commit and rng.new == head and len(rng.commits) == 3
    assert "3 mainline commits after 3.6.1" in summary.read_text()


def test_triage_compares_both_sides_sessions_and_its_exit_code_is_the_jobs() -> None:
    job = jobs()["nightly-head"]
    assert job["container"]["image"] == "debian:12" and job["env"]["ICD"] == "lavapipe"
    sessions = step_running(job, "mnnrepro ops run")["run"]
    assert "mnnrepro run workloads" in sessions and '"a:$TAG" "b:$HEAD_SHA"' in sessions
    source = step_running(job, "source import")["run"]
    assert '--ref "$TAG"' in source and '--ref "$HEAD_SHA"' in source
    triage = step_running(job, "mnnrepro triage")
    run = triage["run"]
    assert 'triage "$TAG" "$HEAD_SHA" --git-dir "$GIT_DIR_MNN" --icd "$ICD"' in run
    for side in ("a", "b"):
        for room in ("ops", "training"):
            assert f'--{side}-results "$NIGHTLY/{side}/{room}/latest"' in run
    assert "--plan-only" not in run  # each finding is reduced, bisected and written up
    assert 'summary.md" >> "$GITHUB_STEP_SUMMARY"' in run
    assert "0) exit 0 ;;" in run and 'exit "$rc"' in run  # 1 (finding) and 3 (nothing comparable) fail the job
    assert 0 < triage["timeout-minutes"] < job["timeout-minutes"] <= 360


def test_one_artifact_per_finding_and_the_summary() -> None:
    j = jobs()
    job, split = j["nightly-head"], j["nightly-head-findings"]
    assert job["outputs"]["findings"] == "${{ steps.findings.outputs.findings }}"
    findings = next(s for s in job["steps"] if s.get("id") == "findings")
    assert findings["if"] == "always()" and "finding-*" in findings["run"]
    uploads = {s["with"]["name"]: s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")}
    assert "summary.md" in uploads["nightly-head-triage"]["with"]["path"]
    assert uploads["nightly-head-findings"]["with"]["path"].endswith("/finding-*/")
    assert split["needs"] == "nightly-head" and split["if"].startswith("always() && ")
    assert split["strategy"]["matrix"]["finding"] == "${{ fromJSON(needs.nightly-head.outputs.findings) }}"
    up = next(s for s in split["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    names = [
        expand(up["with"]["name"], {"matrix": Strict("matrix", {"finding": f})})
        for f in ("finding-1-vulkan-image-lavapipe-op-binary-add", "finding-2-mnist-vulkan-buffer-lavapipe")
    ]
    assert names == [
        "nightly-head-finding-1-vulkan-image-lavapipe-op-binary-add",
        "nightly-head-finding-2-mnist-vulkan-buffer-lavapipe",
    ]
    down = next(s for s in split["steps"] if s.get("uses", "").startswith("actions/download-artifact"))
    assert down["with"]["name"] == "nightly-head-findings"
