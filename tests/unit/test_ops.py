"""The ops workload (issue 13) without MNN: mnn_optest's files -> outcomes, statuses, expectations, reports, the
batch runner's kills, the build's handling of test sources that do not build."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from mnnrepro.errors import FixtureError
from mnnrepro.workloads.ops import judge as opjudge
from mnnrepro.workloads.ops import optest
from mnnrepro.workloads.ops import report as opreport
from mnnrepro.workloads.ops.optest import Outcome, read_outcome

BACKEND_OK = {"v": 1, "event": "backend", "requested": "vulkan", "active": "vulkan", "exercised": True}


def _test_dir(
    tmp_path: Path,
    *,
    code: int,
    passed: bool | None = None,
    by_backend: dict[str, dict[str, int]] | None = None,
    backend: dict[str, Any] | None = None,
    stderr: str = "",
    timed_out: bool = False,
    name: str = "op/relu",
) -> Path:
    d = tmp_path / optest.dirname(name)
    d.mkdir(parents=True)
    events = [{"v": 1, "event": "start", "driver": "mnn_optest"}, backend or BACKEND_OK]
    if passed is not None:
        by = by_backend if by_backend is not None else {"vulkan": {"ReLU": 1}}
        events.append(
            {
                "v": 1,
                "event": "test",
                "name": name,
                "passed": passed,
                "ops_total": sum(sum(t.values()) for t in by.values()),
                "by_backend": by,
            }
        )
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (d / "stderr.txt").write_text("[mnn_optest] running op/relu on vulkan\n" + stderr)
    (d / "result.json").write_text(json.dumps({"returncode": code, "timed_out": timed_out, "duration_s": 0.5}))
    return d


def test_outcome_statuses(tmp_path: Path) -> None:
    ok = read_outcome(_test_dir(tmp_path / "a", code=0, passed=True), "op/relu", "vulkan")
    assert ok is not None and ok.status == "PASS" and ok.placement() == {"vulkan": 1}
    fb = read_outcome(
        _test_dir(tmp_path / "b", code=0, passed=True, by_backend={"cpu": {"ReLU": 2}}), "op/relu", "vulkan"
    )
    assert fb is not None and fb.status == "FALLBACK" and "2 op(s) ran on cpu" in fb.reason
    # The same placement on the CPU cell is simply a pass.
    cpu = read_outcome(
        _test_dir(tmp_path / "c", code=0, passed=True, by_backend={"cpu": {"ReLU": 2}}), "op/relu", "cpu"
    )
    assert cpu is not None and cpu.status == "PASS"
    fail = read_outcome(
        _test_dir(tmp_path / "d", code=1, passed=False, stderr="No.0 error, right: 1, compute: 0\n"),
        "op/relu",
        "vulkan",
    )
    assert fail is not None and fail.status == "FAIL" and fail.reason.startswith("No.0 error")
    crash = read_outcome(_test_dir(tmp_path / "e", code=-11), "op/relu", "vulkan")
    assert crash is not None and crash.status == "CRASH" and crash.signal == "SIGSEGV"
    gdb_crash = read_outcome(_test_dir(tmp_path / "f", code=128 + 6), "op/relu", "vulkan")
    assert gdb_crash is not None and gdb_crash.status == "CRASH" and gdb_crash.signal == "SIGABRT"
    hang = read_outcome(_test_dir(tmp_path / "g", code=-9, timed_out=True), "op/relu", "vulkan")
    assert hang is not None and hang.status == "TIMEOUT"
    fallback_backend = {**BACKEND_OK, "active": "cpu", "exercised": False, "reason": "no Vulkan instance"}
    nx = read_outcome(_test_dir(tmp_path / "h", code=4, backend=fallback_backend), "op/relu", "vulkan")
    assert nx is not None and nx.status == "NOT-EXERCISED" and nx.reason == "no Vulkan instance"
    # Exit 0 without the test's own event is not a pass.
    odd = read_outcome(_test_dir(tmp_path / "i", code=0), "op/relu", "vulkan")
    assert odd is not None and odd.status == "FAIL" and "without a test event" in odd.reason
    unfinished = tmp_path / "j"
    unfinished.mkdir()
    assert read_outcome(unfinished, "op/relu", "vulkan") is None


def _o(status: str, test: str = "op/x", rerun: Outcome | None = None) -> Outcome:
    return Outcome(test, status, f"{status.lower()} reason", 0.1, 0, rerun=rerun)


ROW_FAIL = opjudge.Expect(("3.3.0",), "vulkan-image", "*", "op/x", "FAIL", "known", "alibaba/MNN#1")


def test_judge_rules() -> None:
    assert opjudge.judge(_o("PASS"), _o("PASS"), "vulkan", None).matched
    flake = opjudge.judge(_o("FAIL", rerun=_o("PASS")), _o("PASS"), "vulkan", None)
    assert (flake.status, flake.first, flake.matched) == ("FLAKE", "FAIL", False)
    cpu_fail = opjudge.judge(_o("FAIL"), _o("FAIL", rerun=_o("FAIL")), "vulkan", None)
    assert cpu_fail.status == "CPU-FAIL" and not cpu_fail.matched
    # A crash is the GPU's own even when the CPU computes wrong values; a CPU that crashed once and then passed
    # (MNN 3.3.0's grad/scale frees an invalid pointer now and then on the CPU) explains no GPU failure.
    assert opjudge.judge(_o("CRASH"), _o("FAIL"), "vulkan", None).status == "CRASH"
    flaky_cpu = opjudge.judge(_o("FAIL"), _o("CRASH", rerun=_o("PASS")), "vulkan", ROW_FAIL)
    assert (flaky_cpu.status, flaky_cpu.matched) == ("FAIL", True)
    known = opjudge.judge(_o("FAIL"), _o("PASS"), "vulkan", ROW_FAIL)
    assert known.matched and known.upstream == "alibaba/MNN#1"
    stale = opjudge.judge(_o("PASS"), _o("PASS"), "vulkan", ROW_FAIL)
    assert (stale.status, stale.matched) == ("UNEXPECTED-PASS", False)
    other = opjudge.judge(_o("CRASH"), _o("PASS"), "vulkan", ROW_FAIL)
    assert other.status == "CRASH" and not other.matched
    # NOT-EXERCISED never matches, whatever the row says.
    row_any = opjudge.Expect(("*",), "*", "*", "*", "FLAKE", "flaky")
    assert not opjudge.judge(_o("NOT-EXERCISED"), _o("PASS"), "vulkan", row_any).matched
    # A FLAKE row matches a test that passed in one of its runs, never one that failed in all (issue 21).
    assert opjudge.judge(_o("FAIL", rerun=_o("PASS")), _o("PASS"), "vulkan", row_any).matched
    assert not opjudge.judge(_o("FAIL"), _o("PASS"), "vulkan", row_any).matched
    # On the CPU cell a CPU failure is its own failure.
    assert opjudge.judge(_o("FAIL"), None, "cpu", None).status == "FAIL"


def test_driver_suspect_only_when_another_icd_passes() -> None:
    lav = [
        opjudge.judge(_o("FAIL", "op/a"), None, "vulkan", None),
        opjudge.judge(_o("FAIL", "op/b"), None, "vulkan", None),
    ]
    ss = [
        opjudge.judge(_o("PASS", "op/a"), None, "vulkan", None),
        opjudge.judge(_o("FAIL", "op/b"), None, "vulkan", None),
    ]
    opjudge.mark_driver_suspects({"lavapipe": lav, "swiftshader": ss})
    assert [r.driver_suspect for r in lav] == [True, False]
    assert not any(r.driver_suspect for r in ss)


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "expectations.toml"
    path.write_text(textwrap.dedent(body))
    return path


def test_expectations_load_and_match(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        format = 1
        timeout_s = 60
        [[expect]]
        refs = [">=3.3.0"]
        variant = "vulkan-*"
        icd = "lavapipe"
        test = "op/convolution/*"
        status = "SKIP"
        reason = "slow"
        """,
    )
    exp = opjudge.load_expectations(path)
    assert exp.timeout_s == 60 and exp.selection == ("op/", "grad/")
    assert exp.of("3.3.0", None, "vulkan-image", "lavapipe", "op/convolution/conv2d") is not None
    assert exp.of("3.3.0", None, "vulkan-image", "swiftshader", "op/convolution/conv2d") is None
    assert exp.of("3.2.0", None, "vulkan-image", "lavapipe", "op/convolution/conv2d") is None
    assert exp.of("47027e10", "3.3.1", "vulkan-buffer", "lavapipe", "op/convolution/x") is not None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('status = "NOT-EXERCISED"', "can never be expected"),
        ('status = "PASS"', "must be one of"),
        ('status = "FAIL"\nbogus = 1', "unknown key"),
        ('status = "FAIL"\nreason = ""', "reason"),
    ],
)
def test_expectations_reject_bad_rows(tmp_path: Path, row: str, message: str) -> None:
    base = 'format = 1\n[[expect]]\nrefs = ["3.3.0"]\nvariant = "cpu"\ntest = "op/x"\n'
    if "reason" not in row:
        row += '\nreason = "r"'
    with pytest.raises(FixtureError, match=message):
        opjudge.load_expectations(_write(tmp_path, base + row + "\n"))


def test_committed_expectations_load() -> None:
    exp = opjudge.load_expectations()
    assert all(r.reason.strip() for r in exp.rows)


def test_failed_sources_from_a_build_log() -> None:
    log = textwrap.dedent(
        """\
        [3/9] Building CXX object CMakeFiles/mnn_tests.dir/src/MNN/test/op/FooTest.cpp.o
        FAILED: CMakeFiles/mnn_tests.dir/src/MNN/test/op/FooTest.cpp.o
        /src/MNN/test/op/FooTest.cpp:10:5: error: 'Bar' was not declared in this scope
        /usr/bin/ld: CMakeFiles/mnn_tests.dir/src/MNN/test/grad/BazGradTest.cpp.o: in function `BazGradTest::run(int)':
        BazGradTest.cpp:(.text+0x1): undefined reference to `MNN::Hidden::thing()'
        """
    )
    failed = optest.failed_sources(log)
    assert set(failed) == {"op/FooTest.cpp", "grad/BazGradTest.cpp"}
    assert "not declared" in failed["op/FooTest.cpp"] and "undefined reference" in failed["grad/BazGradTest.cpp"]


def test_binary_lists_and_excluded_tests(tmp_path: Path) -> None:
    src = tmp_path / "mnn"
    (src / "test" / "op").mkdir(parents=True)
    (src / "test" / "op" / "FooTest.cpp").write_text('MNNTestSuiteRegister(FooTest, "op/foo");\n')
    binary = optest.Binary.write(tmp_path, "op/a\nThe device supports: x\nop/b/c\n", {"op/FooTest.cpp": "x"}, src)
    assert binary.tests == ("op/a", "op/b/c") and "op/foo" in binary.excluded_tests
    assert optest.Binary.load(tmp_path) == binary
    assert optest.select(binary.tests, ("op/b/",)) == ["op/b/c"]
    assert optest.declared_names(src) == ("op/foo",)


def test_a_selection_names_exact_tests_prefixes_ending_in_slash_or_globs() -> None:
    names = ("op/relu", "op/relu6", "op/Deconvolution", "op/DeconvolutionInt8", "grad/relu", "grad/relu6")
    # Upstream's prefix match would run op/relu6 for op/relu and op/DeconvolutionInt8 for op/Deconvolution.
    assert optest.select(names, ("op/relu", "op/Deconvolution")) == ["op/relu", "op/Deconvolution"]
    assert optest.select(names, ("grad/",)) == ["grad/relu", "grad/relu6"]
    assert optest.select(names, ("op/relu*",)) == ["op/relu", "op/relu6"]
    assert optest.select(names, ("op/b",)) == []
    assert optest.unmatched(names, ("op/", "op/relux", "grad/relu6", "speed/")) == ["op/relux", "speed/"]


def _summary(statuses: dict[str, str], ref: str) -> dict[str, Any]:
    tests = [{"test": t, "status": s} for t, s in statuses.items()]
    return {"session": "ops", "ref": ref, "cells": [{"variant": "vulkan-image", "icd": "lavapipe", "tests": tests}]}


def test_compare_names_each_kind() -> None:
    a = _summary(
        {"op/a": "PASS", "op/b": "FAIL", "op/c": "PASS", "op/d": "PASS", "op/e": "PASS", "op/f": "PASS"}, "3.3.0"
    )
    b = _summary(
        {"op/a": "FAIL", "op/b": "PASS", "op/c": "CRASH", "op/d": "FALLBACK", "op/e": "PASS", "op/g": "FAIL"}, "3.6.1"
    )
    # A cell only one run has is not compared (nothing to say about its tests).
    b["cells"].append({"variant": "vulkan-buffer", "icd": "lavapipe", "tests": [{"test": "op/a", "status": "FAIL"}]})
    kinds = {r["test"]: r["kind"] for r in opjudge.compare(a, b)}
    assert kinds == {
        "op/a": "newly failing",
        "op/b": "newly passing",
        "op/c": "newly crashing",
        "op/d": "newly falling back",
        "op/f": "test gone",
        "op/g": "new test",
    }
    text = opreport.comparison(a, b, opjudge.compare(a, b))
    assert "newly crashing (1)" in text and "| vulkan-image | lavapipe | op/g | - | FAIL |" in text
    assert "| --- | --- | --- | --- | --- |" in text


def test_reports_render_counts_and_mismatches(tmp_path: Path) -> None:
    results = [
        opjudge.judge(_o("PASS", "op/a"), None, "vulkan", None),
        opjudge.judge(_o("CRASH", "op/b"), _o("PASS"), "vulkan", None),
        opjudge.not_run("op/c", "slow", opjudge.SKIPPED_BY_ROW),
    ]
    cell: dict[str, Any] = {"cell": "3.3.0/vulkan-image/lavapipe", "variant": "vulkan-image", "icd": "lavapipe"}
    cell["seconds"] = 3
    cell["tests"] = [r.as_dict() for r in results]
    cell.update(opjudge.summarize(results))
    assert cell["mismatched"] == 1
    data = {"session": "ops", "ref": "3.3.0", "status": "MISMATCHED", "cells": [cell], "timeout_s": 120.0}
    written = opreport.write_all(tmp_path, data)
    assert [p.name for p in written] == ["summary.json", "junit.xml", "summary.md"]
    text = opreport.table(data)
    assert "CRASH" in text and "op/b: CRASH (expected PASS)" in text
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<testcase") == 3 and junit.count("<failure") == 1 and junit.count("<skipped") == 1


def test_batch_kills_a_hang_and_goes_on(tmp_path: Path) -> None:
    """optest_batch.py: a test that hangs is killed at its limit (with its children), the others still run."""
    hang = [
        sys.executable,
        "-c",
        "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); "
        "time.sleep(60)",
    ]
    ok = [sys.executable, "-c", "print('hi')"]
    tests = [
        {"name": "t/hang", "dir": str(tmp_path / "hang"), "argv": hang, "env": {}, "timeout_s": 1},
        {"name": "t/ok", "dir": str(tmp_path / "ok"), "argv": ok, "env": {"X": "1"}, "timeout_s": 30},
    ]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"jobs": 2, "tests": tests}))
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(optest.BATCH_SCRIPT), str(plan)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and time.monotonic() - start < 20
    assert "[2/2]" in out.stdout
    assert json.loads((tmp_path / "hang" / "result.json").read_text())["timed_out"] is True
    assert json.loads((tmp_path / "ok" / "result.json").read_text())["returncode"] == 0
    assert (tmp_path / "ok" / "stdout.txt").read_text() == "hi\n"
