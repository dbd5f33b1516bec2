"""The reduce session (issue 14) end to end: alibaba/MNN#3129 at 3.3.0, image mode, on lavapipe: the first SGD
step's gradient graph captured on the CPU, reduced under gdb to the op that crashes, the reduced graph and the
standalone reproducer checked on their own, and the issue report written from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import fixtures, prepare, variants
from mnnrepro.settings import load
from mnnrepro.workloads.reduce import search as reduce
from mnnrepro.workloads.reduce import session as redsession

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


def test_a_reduced_graph_with_a_padded_nc4hw4_output_passes_alone_on_the_cpu(reduced: dict[str, Any]) -> None:
    """Issue 22: the one-PoolGrad graph (the reduction of 3.6.1's image mode on NVIDIA) failed its standalone
    reproducer on the CPU too: its output, 64x50x8x8 NC4HW4, has its 50 channels padded to 52, and repro.cpp
    counted the padded tensor (212992 values for the CPU's 204800), "differs" on every backend. Cut from the
    captured graph here (the same MNIST graph), it must pass on the CPU, numbers included."""
    results = Path(reduced["summary"]["results_dir"])
    ref, variant = reduced["summary"]["ref"], "vulkan-image"
    manifest = [x.split("\t") for x in (results / "values" / "manifest.tsv").read_text().splitlines()]
    dims = {f[0]: [int(d) for d in f[3].split(",")] for f in manifest if f[2] == "NC4HW4"}
    ops = reduce.parse_info((results / "info.log").read_text())
    pool = next(o for o in ops if o.kind == "PoolGrad" and o.outputs[0] in dims and dims[o.outputs[0]][1] % 4)
    settings = load({"results_dir": str(results.parent), "clone": False, "icds": "lavapipe", "gdb": False})
    settings, _ = prepare.preflight_for(settings, (variants.BASELINE, variant), lambda _: None)
    prepared = prepare.prepare(ref, (variants.BASELINE, variant), settings, fixtures.load_matrix(), lambda _: None)
    work = results.parent / f"{results.name}-padded-poolgrad"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(results / "values", work / "values")
    spec = redsession.spec_for(prepared, variant, "lavapipe", settings, results / "graph", work)
    cdir = work / "candidates" / reduce.key_of((pool.index,))
    cdir.mkdir(parents=True)
    (cdir / "keep.txt").write_text(f"{pool.index}\n")
    cut = [str(spec.tool), "cut", "--graph", str(results / "graph" / "graph.mnn"), "--inputs"]
    cut += [str(results / "graph" / "inputs"), "--values", str(work / "values"), "--keep", str(cdir / "keep.txt")]
    assert spec.runner.run([*cut, "--out", str(cdir)], timeout_s=120, writable=[work]).returncode == 0
    repro = redsession.emit(work, (pool.index,), reduce.ops_table(ops, (pool.index,)))
    said: list[str] = []
    checks = redsession.verify_standalone(prepared, spec, reduce.Target("differs"), repro, work, said.append)
    assert checks["standalone_cpu"] == "passes", said
    assert checks["standalone_cpu_numbers"].startswith(f"{pool.outputs[0]}: max_rel 0, cosine 1.000000000"), said
