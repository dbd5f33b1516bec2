"""The reduce session (issue 14) end to end: alibaba/MNN#3129 at 3.3.0, image mode, on lavapipe: the first SGD
step's gradient graph captured on the CPU, reduced under gdb to the op that crashes, the reduced graph and the
standalone reproducer checked on their own, and the issue report written from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import REFS, ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SIGNATURE = ["MNN::ConvolutionCommon::getConvParameters", "MNN::VulkanDeconvolution::VulkanDeconvolution"]


@pytest.fixture(scope="module")
def reduced(run_session: Any) -> dict[str, Any]:
    result: dict[str, Any] = run_session("reduce", REFS[0], "--variant", "vulkan-image", "--icd", "lavapipe")
    return result


def test_the_crash_reduces_to_the_deconvolution_and_checks_out_alone(reduced: dict[str, Any]) -> None:
    assert reduced["exit"] == 0, reduced["output"][-4000:]
    s = reduced["summary"]
    assert s["session"] == "reduce" and s["target"]["signal"] == "SIGSEGV"
    assert s["target"]["signature"][:2] == SIGNATURE  # the MNIST cell's signature, not just any crash
    assert s["original_ops"] > 50 and 1 <= s["reduced_ops"] <= 3
    assert "Deconvolution" in [row["type"] for row in s["ops"]]
    assert s["checks"]["backend"] == "fails" and s["checks"]["cpu"] == "passes"
    assert s["checks"]["standalone"] == "fails" and s["checks"]["standalone_cpu"] == "passes"
    assert "llvmpipe" in s["device"]


def test_the_issue_report_of_the_reduction(reduced: dict[str, Any], tmp_path: Path) -> None:
    results = Path(reduced["summary"]["results_dir"])
    out = tmp_path / "ISSUE.md"
    proc = subprocess.run(
        [sys.executable, "-m", "mnnrepro", "report", "--issue", str(results), "--out", str(out)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith("# [Vulkan image mode] SIGSEGV in MNN::ConvolutionCommon::getConvParameters")
    assert "| Deconvolution |" in text and "./build/repro vulkan" in text and str(results) not in text
    assert "./run_test.out repro/reduced_graph 7 1" in text and len(text.splitlines()) <= 150
