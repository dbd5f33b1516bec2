"""`ops run --cpu-from`: an earlier session's CPU cell as the CPU reference (a GPU machine's time is the scarce
one, issue 22). It is taken only whole and only from the same MNN commit, and it is read back as the sweep joined
it (the run alone that replaced a timeout, the reruns)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnnrepro.errors import ConfigError
from mnnrepro.workloads.ops import judge as opjudge
from mnnrepro.workloads.ops import optest
from mnnrepro.workloads.ops import session as opsession

COMMIT = "d407447ed56c4121a11ccbd266dc184ca1ead0c2"


def _run(directory: Path, test: str, code: int, *, by: dict[str, dict[str, int]], timed_out: bool = False) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    events = [{"v": 1, "event": "backend", "requested": "cpu", "active": "cpu", "exercised": True}]
    if not timed_out:
        events.append({"v": 1, "event": "test", "name": test, "passed": code == 0, "ops_total": 3, "by_backend": by})
    (directory / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (directory / "result.json").write_text(json.dumps({"returncode": code, "timed_out": timed_out, "duration_s": 2}))


def _session(
    tmp_path: Path, *, commit: str = COMMIT, cpu: bool = True, interrupted: bool = False, precision: str = "high"
) -> Path:
    root = tmp_path / "earlier"
    cpu_cell = {"cell": "3.6.1/cpu/-", "ref": "3.6.1", "variant": "cpu", "icd": "-"}
    cells = [{**cpu_cell, "interrupted": True} if interrupted else cpu_cell] if cpu else []
    cells.append({"cell": "3.6.1/vulkan-image/lavapipe", "ref": "3.6.1", "variant": "vulkan-image", "icd": "lavapipe"})
    root.mkdir(parents=True)
    head = {"session": "ops", "commit": commit, "host": "h", "precision": precision}
    (root / "summary.json").write_text(json.dumps({**head, "cells": cells}))
    cpu_dir = root / "3.6.1__cpu__-"
    _run(cpu_dir / "op__PoolGrad", "op/PoolGrad", 0, by={"cpu": {"PoolGrad": 1, "Cast": 1, "Raster": 2}})
    _run(cpu_dir / "op__slow", "op/slow", -9, by={}, timed_out=True)  # killed among others, then passed alone
    _run(cpu_dir / "op__slow" / "slow", "op/slow", 0, by={"cpu": {"MatMul": 2}})
    _run(cpu_dir / "grad__bad", "grad/bad", 1, by={"cpu": {"Unary": 1}})  # failed, and failed again
    _run(cpu_dir / "grad__bad" / "rerun", "grad/bad", 1, by={"cpu": {"Unary": 1}})
    return root


TESTS = ["op/PoolGrad", "op/slow", "grad/bad"]


def test_the_earlier_cpu_cell_is_read_back_as_the_sweep_joined_it(tmp_path: Path) -> None:
    cell = opsession.cpu_reference_cell(_session(tmp_path), COMMIT)
    outcomes, about = opsession.cpu_reference(cell, TESTS)
    assert about["commit"] == COMMIT and about["tests"] == 3 and "3 tests" in about["line"]
    assert outcomes["op/PoolGrad"].by_backend == {"cpu": {"PoolGrad": 1, "Cast": 1, "Raster": 2}}
    assert outcomes["op/slow"].status == "PASS" and outcomes["op/slow"].by_backend == {"cpu": {"MatMul": 2}}
    assert [r.status for r in outcomes["grad/bad"].runs()] == ["FAIL", "FAIL"]


def test_a_gpu_result_is_judged_beside_the_earlier_cpu_run(tmp_path: Path) -> None:
    """The reference does what a CPU cell of the session does: it names the op types under test (a partial
    fallback) and a failure that the CPU shares."""
    outcomes, _ = opsession.cpu_reference(opsession.cpu_reference_cell(_session(tmp_path), COMMIT), TESTS)
    gpu = optest.Outcome("op/PoolGrad", "PASS", "", 1.0, 0, by_backend={"vulkan": {"Raster": 2}, "cpu": {"Cast": 1}})
    gpu.ops_total = 3
    glue = opjudge.load_expectations().glue
    judged = opjudge.judge(gpu, outcomes["op/PoolGrad"], "vulkan", None, (), glue)
    assert judged.status == "FALLBACK" and "Cast x1" in judged.reason
    bad = optest.Outcome("grad/bad", "FAIL", "differs", 1.0, 1, by_backend={"vulkan": {"Unary": 1}})
    assert opjudge.judge(bad, outcomes["grad/bad"], "vulkan", None, (), glue).status == "CPU-FAIL"


def test_another_commit_no_cpu_cell_or_no_summary_is_refused_before_any_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ran MNN 5047919a1ae5, this session builds d407447ed56c"):
        opsession.cpu_reference_cell(_session(tmp_path, commit="5047919a1ae594d090ee54c7ea3403a9dee8cad4"), COMMIT)
    with pytest.raises(ConfigError, match="it has no CPU cell"):
        opsession.cpu_reference_cell(_session(tmp_path / "b", cpu=False), COMMIT)
    # A stopped CPU cell (its unfinished tests, a failure never confirmed) is no reference; nor another precision.
    with pytest.raises(ConfigError, match="a CPU cell that was interrupted"):
        opsession.cpu_reference_cell(_session(tmp_path / "d", interrupted=True), COMMIT)
    with pytest.raises(ConfigError, match="precision low, this session at high"):
        opsession.cpu_reference_cell(_session(tmp_path / "e", precision="low"), COMMIT, "high")
    with pytest.raises(ConfigError, match="cannot read"):
        opsession.cpu_reference_cell(tmp_path / "nothing", COMMIT)
    with pytest.raises(ConfigError, match="not known"):
        opsession.cpu_reference_cell(_session(tmp_path / "c"), None)


def test_a_test_the_earlier_cell_did_not_finish_is_refused_whole(tmp_path: Path) -> None:
    cell = opsession.cpu_reference_cell(_session(tmp_path), COMMIT)
    with pytest.raises(ConfigError, match="no finished CPU run of op/new"):
        opsession.cpu_reference(cell, [*TESTS, "op/new"])


def test_a_test_killed_among_others_and_never_run_alone_is_no_reference(tmp_path: Path) -> None:
    root = _session(tmp_path)
    _run(root / "3.6.1__cpu__-" / "op__killed", "op/killed", -9, by={}, timed_out=True)  # no slow/ run alone
    cell = opsession.cpu_reference_cell(root, COMMIT)
    with pytest.raises(ConfigError, match="no finished CPU run of op/killed"):
        opsession.cpu_reference(cell, [*TESTS, "op/killed"])


def test_a_timeout_killed_again_alone_reads_back_as_the_sweep_said_it(tmp_path: Path) -> None:
    root = tmp_path / "cell"
    _run(root / "op__hang", "op/hang", -9, by={}, timed_out=True)
    _run(root / "op__hang" / "slow", "op/hang", -9, by={}, timed_out=True)
    (hang,) = optest.load_cell(root, ["op/hang"], "cpu", {"op/hang": 120.0}).values()
    assert hang.status == "TIMEOUT" and hang.slow_after_s == 120.0
    assert hang.reason.startswith("killed at the 120 s limit, and again alone at")
