"""The ops session (issue 13) end to end on a small selection: MNN's own tests built from the ref's tree, run one
per process on cpu, vulkan-image and vulkan-buffer, judged against fixtures/ops/expectations.toml; and the faults
that must never read as green: no libvulkan.so, a bogus ICD, a planted hang."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import REFS, cell

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# A few tests of each kind: a plain op, a gradient, a backward op that crashes in image mode (alibaba/MNN#3129's
# family), a gradient that fails in image mode and that MNN 3.3.0 itself crashes now and then on the CPU (a FLAKE
# row), and one that falls back or fails on Vulkan.
SELECT = "op/relu,grad/relu,op/Conv2DBackPropTest,grad/scale,op/cumsum"
# Both software ICDs (fixtures/ops/expectations.toml has 3.3.0 rows for each); the fault cases need only one.
ICDS = "lavapipe,swiftshader"


# The first ref of the ci tier (3.3.0): the one fixtures/ops/expectations.toml has rows for (issue 13 in progress).
@pytest.fixture(scope="module", params=REFS[:1])
def ops(request: pytest.FixtureRequest, run_session: Any) -> dict[str, Any]:
    result: dict[str, Any] = run_session("ops", request.param, "--select", SELECT, "--icd", ICDS)
    return result


def test_every_result_matches_its_expectation(ops: dict[str, Any]) -> None:
    assert ops["exit"] == 0, ops["output"][-4000:]
    summary = ops["summary"]
    assert summary["status"] == "MATCHED"
    assert summary["cells"][0]["variant"] == "cpu"  # the baseline runs first


def test_each_cell_ran_every_selected_test_on_its_backend(ops: dict[str, Any]) -> None:
    summary = ops["summary"]
    ref = summary["ref"]
    for variant in ("vulkan-image", "vulkan-buffer"):
        for icd in ICDS.split(","):
            c = cell(summary, f"{ref}/{variant}/{icd}")
            assert {t["test"] for t in c["tests"]} == set(SELECT.split(","))
            assert c["counts"]["NOT-EXERCISED"] == 0
            passed = [t for t in c["tests"] if t["status"] == "PASS"]
            assert passed, c
            # A PASS ran its ops on the GPU (else it would be FALLBACK).
            assert all(t["placement"].get("vulkan", 0) > 0 for t in passed if sum(t["placement"].values()))


@pytest.mark.parametrize(("icd", "fault"), [("bogus", ""), ("lavapipe", "hide-libvulkan")])
def test_no_vulkan_makes_the_whole_sweep_not_exercised(run_session: Any, icd: str, fault: str) -> None:
    extra = ["--fault", fault] if fault else []
    result = run_session("ops", REFS[0], "--select", SELECT, "--icd", icd, "--variants", "vulkan-buffer", *extra)
    assert result["exit"] != 0
    gpu = cell(result["summary"], f"{REFS[0]}/vulkan-buffer/{icd}")
    assert gpu["counts"]["NOT-EXERCISED"] == len(SELECT.split(","))
    assert gpu["counts"]["PASS"] == 0
    assert result["summary"]["status"] == "MISMATCHED"


def test_a_planted_hang_is_timeout_and_the_sweep_goes_on(run_session: Any) -> None:
    result = run_session(
        "ops",
        REFS[0],
        "--select",
        SELECT,
        "--icd",
        "lavapipe",
        "--variants",
        "vulkan-buffer",
        "--fault",
        "plant-hang",
        "--timeout",
        "20",
    )
    assert result["exit"] != 0
    gpu = cell(result["summary"], f"{REFS[0]}/vulkan-buffer/lavapipe")
    by_test = {t["test"]: t for t in gpu["tests"]}
    hung = [t for t in by_test.values() if t["status"] == "TIMEOUT"]
    assert len(hung) == 1 and not hung[0]["matched"]
    assert sum(t["status"] == "PASS" for t in by_test.values()) >= 1  # the others ran
