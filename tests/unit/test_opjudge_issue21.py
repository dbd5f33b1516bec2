"""Issue 21 in the ops workload: no PASS without GPU work (NO-GPU-WORK, partial FALLBACK), expectation rows held
to their failure (match, signature), FLAKE rows that must have passed, not-run tests counted apart, timeouts run
again alone before they count, stale rows, and the reports' tables."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mnnrepro.cells import Cell
from mnnrepro.errors import FixtureError
from mnnrepro.runner import Completed
from mnnrepro.workloads.ops import judge as opjudge
from mnnrepro.workloads.ops import optest
from mnnrepro.workloads.ops import report as opreport
from mnnrepro.workloads.ops.optest import Outcome, read_outcome

BACKEND_OK = {"v": 1, "event": "backend", "requested": "vulkan", "active": "vulkan", "exercised": True}


def _passed_dir(tmp_path: Path, by_backend: dict[str, dict[str, int]], name: str = "op/x") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    total = sum(sum(t.values()) for t in by_backend.values())
    events = [
        {"v": 1, "event": "start", "driver": "mnn_optest"},
        BACKEND_OK,
        {"v": 1, "event": "test", "name": name, "passed": True, "ops_total": total, "by_backend": by_backend},
    ]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (tmp_path / "result.json").write_text(json.dumps({"returncode": 0, "timed_out": False, "duration_s": 0.2}))
    return tmp_path


def _o(status: str, test: str = "op/x", *, by: dict[str, dict[str, int]] | None = None, **kw: Any) -> Outcome:
    return Outcome(test, status, kw.pop("reason", f"{status.lower()} reason"), 0.1, 0, by_backend=by or {}, **kw)


# -- item 1: a passing test that ran no op on the GPU backend ---------------------------------------------------
def test_a_pass_without_any_op_on_a_gpu_backend_is_no_gpu_work(tmp_path: Path) -> None:
    nothing = read_outcome(_passed_dir(tmp_path / "a", {}), "op/x", "vulkan")
    assert nothing is not None and nothing.status == "NO-GPU-WORK" and "no op at all" in nothing.reason
    # On the CPU cell the same run is the baseline: a pass.
    cpu = read_outcome(_passed_dir(tmp_path / "b", {}), "op/x", "cpu")
    assert cpu is not None and cpu.status == "PASS"
    # Judged without a row it is a mismatch, never a pass; a row can expect it; a later PASS makes the row stale.
    assert opjudge.judge(nothing, None, "vulkan", None).matched is False
    row = opjudge.Expect(("3.3.0",), "vulkan-image", "*", "op/x", "NO-GPU-WORK", "returns true at once on Vulkan")
    assert opjudge.judge(nothing, None, "vulkan", row).matched is True
    passing = opjudge.judge(_o("PASS", by={"vulkan": {"ReLU": 1}}), None, "vulkan", row)
    assert passing.status == "UNEXPECTED-PASS" and passing.matched is False
    assert (
        "NO-GPU-WORK" in opjudge.EXPECTABLE
        and opjudge.counts([opjudge.judge(nothing, None, "vulkan", row)])["NO-GPU-WORK"] == 1
    )
    assert opjudge.change_kind("PASS", "NO-GPU-WORK") == "newly without GPU work"


# -- item 2: partial fallback -----------------------------------------------------------------------------------
CPU_RUN = {"cpu": {"Deconvolution": 2, "Raster": 4, "Cast": 1}}


def test_an_op_under_test_on_the_cpu_is_a_partial_fallback() -> None:
    """39be21c56 (3.6.x) declines image mode's weight-as-input Deconvolution: it runs on the CPU while the Raster
    glue stays on Vulkan. That is not a pass (alibaba/MNN#3129)."""
    gpu = _o("PASS", "op/MultiDeconv", by={"vulkan": {"Raster": 4}, "cpu": {"Deconvolution": 2}})
    cpu = _o("PASS", "op/MultiDeconv", by=CPU_RUN)
    r = opjudge.judge(gpu, cpu, "vulkan", None)
    assert (r.status, r.matched) == ("FALLBACK", False)
    assert r.partial == {"Deconvolution": 2} and "Deconvolution x2" in r.reason and "partial" in r.reason
    # Some of that type on the GPU and some on the CPU: still partial, both counts said.
    split = _o("PASS", "op/MultiDeconv", by={"vulkan": {"Deconvolution": 1}, "cpu": {"Deconvolution": 1}})
    assert "Deconvolution x1 (1 on vulkan)" in opjudge.judge(split, cpu, "vulkan", None).reason


def test_glue_on_the_cpu_is_not_a_fallback_unless_the_test_is_about_it() -> None:
    glue = opjudge.Glue(("Raster", "Cast"), (opjudge.GlueKeep("op/PoolGrad", ("Cast",), "the mask is a Cast"),))
    cpu = _o("PASS", by={"cpu": {"Pooling": 1, "Raster": 2, "Cast": 1}})
    gpu = _o("PASS", by={"vulkan": {"Pooling": 1}, "cpu": {"Raster": 2, "Cast": 1}})
    assert opjudge.judge(gpu, cpu, "vulkan", None, glue=glue).status == "PASS"
    pool_cpu = _o("PASS", "op/PoolGrad", by={"cpu": {"PoolGrad": 1, "Cast": 1}})
    pool_gpu = _o("PASS", "op/PoolGrad", by={"vulkan": {"PoolGrad": 1}, "cpu": {"Cast": 1}})
    r = opjudge.judge(pool_gpu, pool_cpu, "vulkan", None, glue=glue)
    assert r.status == "FALLBACK" and r.partial == {"Cast": 1}
    # Without a CPU run that traced ops, the run's own op types are under test (the strict reading, said so).
    alone = opjudge.judge(_o("PASS", by={"vulkan": {"Pooling": 1}, "cpu": {"Pooling": 1}}), None, "vulkan", None)
    assert alone.status == "FALLBACK" and "no CPU run" in alone.reason


def test_the_committed_glue_table_keeps_poolgrads_cast() -> None:
    glue = opjudge.load_expectations().glue
    assert {"Raster", "ConvertTensor", "Cast"} <= set(glue.types)
    assert "Cast" not in glue.of("op/PoolGrad") and "Cast" in glue.of("op/relu")


def test_compare_says_crash_to_fallback_apart_from_a_fix() -> None:
    def summary(statuses: dict[str, tuple[str, str]], ref: str) -> dict[str, Any]:
        tests = [{"test": t, "status": s, "reason": why} for t, (s, why) in statuses.items()]
        return {"ref": ref, "cells": [{"variant": "vulkan-image", "icd": "lavapipe", "tests": tests}]}

    a = summary({"op/Conv2DBackPropTest": ("CRASH", "SIGSEGV"), "op/fixed": ("CRASH", "SIGSEGV")}, "3.3.0")
    why = "passed, but op type(s) under test ran on the CPU (partial fallback): Deconvolution x1"
    b = summary({"op/Conv2DBackPropTest": ("FALLBACK", why), "op/fixed": ("PASS", "")}, "3.6.1")
    rows = opjudge.compare(a, b)
    assert {r["test"]: r["kind"] for r in rows} == {
        "op/Conv2DBackPropTest": "crash -> fallback",
        "op/fixed": "newly passing",
    }
    text = opreport.comparison(a, b, rows)
    assert "## crash -> fallback (1)" in text and "Deconvolution x1" in text


# -- item 4: rows held to their failure; stale rows -------------------------------------------------------------
def _load(tmp_path: Path, body: str) -> opjudge.Expectations:
    path = tmp_path / "expectations.toml"
    path.write_text("format = 1\n" + textwrap.dedent(body))
    return opjudge.load_expectations(path)


ROWS = """
[[expect]]
refs = ["3.3.0"]
variant = "vulkan-image"
icd = "*"
test = "op/x"
status = "FAIL"
reason = "1: right: 0.52, compute: 0.02 | Deconvolution test failed!"
match = 'right: [-\\d.e+]+, compute: [-\\d.e+]+ \\| Deconvolution test failed!'

[[expect]]
refs = ["3.3.0"]
variant = "vulkan-image"
icd = "*"
test = "op/crash"
status = "CRASH"
reason = "SIGSEGV; top MNN frames: a > b"
match = "^SIGSEGV in "
signature = ["MNN::a", "MNN::b"]
"""


def test_a_failure_the_row_does_not_describe_is_unexpected(tmp_path: Path) -> None:
    exp = _load(tmp_path, ROWS)
    row = exp.of("3.3.0", None, "vulkan-image", "lavapipe", "op/x")
    assert row is not None and row.match
    same = _o("FAIL", reason="1: right: 0.61, compute: 0.01 | Deconvolution test failed!")
    assert opjudge.judge(same, _o("PASS"), "vulkan", row).matched is True
    other = opjudge.judge(_o("FAIL", reason="GridSample test failed"), _o("PASS"), "vulkan", row)
    assert other.matched is False and "GridSample test failed" in other.reason and "not the known" in other.reason


def _crash(frames: list[str]) -> dict[str, Any]:
    return {"frames": [{"function": f"{f}(int)", "library": "/x/libMNN.so"} for f in frames]}


def test_a_crash_row_is_held_to_its_signature(tmp_path: Path) -> None:
    row = _load(tmp_path, ROWS).of("3.3.0", None, "vulkan-image", "lavapipe", "op/crash")
    assert row is not None and row.signature == ("MNN::a", "MNN::b")
    text = "SIGSEGV in op/crash"
    known = _o("CRASH", "op/crash", reason=text, crash=_crash(["MNN::a", "MNN::b", "MNN::c"]))
    assert opjudge.judge(known, _o("PASS"), "vulkan", row, ("MNN::a", "MNN::b", "MNN::c")).matched is True
    other = _o("CRASH", "op/crash", reason=text, crash=_crash(["MNN::z"]))
    r = opjudge.judge(other, _o("PASS"), "vulkan", row, ("MNN::z",))
    assert r.matched is False and "MNN::z" in r.reason and "another crash" in r.reason
    abort = opjudge.judge(_o("CRASH", "op/crash", reason="SIGABRT in op/crash"), _o("PASS"), "vulkan", row)
    assert abort.matched is False
    # No backtrace (no gdb): matched on the signal, and said unverified.
    unverified = opjudge.judge(_o("CRASH", "op/crash", reason=text), _o("PASS"), "vulkan", row)
    assert unverified.matched is True and "not verified" in unverified.reason


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('status = "SKIP"\nmatch = "x"', "match is for a failure"),
        ('status = "FAIL"\nmatch = "("', "not a regular expression"),
        ('status = "FAIL"\nsignature = ["MNN::a"]', "CRASH rows only"),
        ('status = "FAIL"\nreruns = 2', "FLAKE rows only"),
        ('status = "FLAKE"\nreruns = 0', "must be an integer"),
    ],
)
def test_new_row_keys_are_checked(tmp_path: Path, row: str, message: str) -> None:
    body = f'[[expect]]\nrefs = ["3.3.0"]\nvariant = "cpu"\ntest = "op/x"\nreason = "r"\n{row}\n'
    with pytest.raises(FixtureError, match=message):
        _load(tmp_path, body)


def test_glue_and_slow_tables_are_checked(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="unknown key"):
        _load(tmp_path, '[glue]\ntypes = ["Raster"]\nextra = 1\n')
    with pytest.raises(FixtureError, match="not in \\[glue\\] types"):
        _load(tmp_path, '[glue]\ntypes = ["Raster"]\n[[glue.keep]]\ntest = "op/x"\ntypes = ["Cast"]\nreason = "r"\n')
    with pytest.raises(FixtureError, match="measured"):
        _load(tmp_path, '[[slow]]\nrefs = ["3.3.0"]\nvariant = "cpu"\ntest = "op/x"\ntimeout_s = 300\n')


def test_committed_crash_rows_carry_3129s_signature() -> None:
    rows = [r for r in opjudge.load_expectations().rows if r.status == "CRASH" and "Deconv" in r.test]
    assert rows and all(
        r.signature[:2]
        == ("MNN::ConvolutionCommon::getConvParameters", "MNN::VulkanDeconvolution::VulkanDeconvolution")
        for r in rows
    )


def test_rows_that_matched_nothing_in_the_run_are_stale(tmp_path: Path) -> None:
    exp = _load(
        tmp_path,
        ROWS
        + """
[[expect]]
refs = ["3.3.0"]
variant = "vulkan-image"
icd = "*"
test = "op/gone"
status = "FAIL"
reason = "a test this build does not have"

[[expect]]
refs = ["3.6.1"]
variant = "vulkan-image"
icd = "*"
test = "op/other_ref"
status = "FAIL"
reason = "not a cell of this run"

[[expect]]
refs = ["3.3.0"]
variant = "vulkan-image"
icd = "*"
test = "speed/y"
status = "FAIL"
reason = "not in the selection"
""",
    )
    key = ("3.3.0", "3.3.0", "vulkan-image", "lavapipe")
    results = [
        opjudge.judge(_o("PASS"), _o("PASS"), "vulkan", exp.of(*key, "op/x")),  # UNEXPECTED-PASS
        opjudge.judge(
            _o("CRASH", "op/crash", reason="SIGSEGV in op/crash"), _o("PASS"), "vulkan", exp.of(*key, "op/crash")
        ),
    ]
    stale = opjudge.stale_rows(exp, [(key, results)], ("op/",))
    assert {s["test"]: s["why"] for s in stale} == {
        "op/x": "no result matched it (3.3.0/vulkan-image/lavapipe op/x: UNEXPECTED-PASS)",
        "op/gone": "it is the expectation of no test of the run",
    }


# -- item 5: FLAKE rows ------------------------------------------------------------------------------------------
def _flake_row() -> opjudge.Expect:
    return opjudge.Expect(("3.3.0",), "cpu", "-", "grad/scale", "FLAKE", "crashes now and then", line=1)


def test_a_flake_must_have_passed_in_one_of_its_runs() -> None:
    flake_row = _flake_row()
    always = _o("CRASH", "grad/scale", rerun=_o("CRASH", rerun=_o("CRASH", rerun=_o("CRASH"))))
    r = opjudge.judge(always, None, "cpu", flake_row)
    assert (r.status, r.matched, r.runs) == ("CRASH", False, 4) and "all 4 run(s)" in r.reason
    late = _o("CRASH", "grad/scale", rerun=_o("CRASH", rerun=_o("PASS")))
    flake = opjudge.judge(late, None, "cpu", flake_row)
    assert (flake.status, flake.matched) == ("FLAKE", True) and "run 3 of 3" in flake.reason
    assert opjudge.judge(_o("PASS", "grad/scale"), None, "cpu", flake_row).matched is True
    exp = opjudge.Expectations((flake_row,), flake_reruns=3)
    assert exp.reruns(flake_row) == 3 and exp.reruns(None) == 1
    # The committed file says how many reruns a FLAKE row gets.
    assert opjudge.load_expectations().flake_reruns >= 2


# -- the sweep's reruns (items 5 and 11), through a fake runner that plays scripted outcomes ---------------------
class Scripted:
    """A runner that 'runs' optest_batch.py's plan: each test's next scripted status becomes its files."""

    name = "host"

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.plans: list[dict[str, Any]] = []

    def run(self, argv: Sequence[str], **kwargs: Any) -> Completed:
        plan = json.loads(Path(argv[2]).read_text())
        self.plans.append(plan)
        for t in plan["tests"]:
            status = self.script[t["name"]].pop(0)
            d = Path(t["dir"])
            d.mkdir(parents=True, exist_ok=True)
            code = {"PASS": 0, "FAIL": 1, "CRASH": -11, "TIMEOUT": -9}[status]
            events = [BACKEND_OK]
            if status in ("PASS", "FAIL"):
                by = {"vulkan": {"ReLU": 1}}
                events.append(
                    {"event": "test", "name": t["name"], "passed": status == "PASS", "ops_total": 1, "by_backend": by}
                )
            (d / "events.jsonl").write_text("".join(json.dumps({"v": 1, **e}) + "\n" for e in events))
            duration = t["timeout_s"] if status == "TIMEOUT" else 7.0
            result = {"returncode": code, "timed_out": status == "TIMEOUT", "duration_s": duration}
            (d / "result.json").write_text(json.dumps(result))
        return Completed(argv=tuple(argv), returncode=0, duration_s=0.1)


def _quiet(_: str) -> None:
    pass


def _spec(tmp_path: Path, runner: Scripted, tests: list[str], **kw: Any) -> optest.SweepSpec:
    return optest.SweepSpec(
        cell=Cell("3.3.0", "vulkan-buffer", "lavapipe"),
        binary=optest.Binary(tmp_path / "mnn_optest", tuple(tests)),
        tests=tests,
        runner=runner,
        plugin=None,
        icd=None,
        precision="high",
        timeout_s=120.0,
        jobs=2,
        result_dir=tmp_path / "cell",
        **kw,
    )


def test_a_flake_row_gets_its_reruns_and_a_plain_failure_one(tmp_path: Path) -> None:
    runner = Scripted({"op/flaky": ["CRASH", "CRASH", "FAIL", "PASS"], "op/bad": ["FAIL", "FAIL"], "op/ok": ["PASS"]})
    out = optest.sweep(_spec(tmp_path, runner, ["op/flaky", "op/bad", "op/ok"], reruns={"op/flaky": 3}), say=_quiet)
    assert [o.status for o in out["op/flaky"].runs()] == ["CRASH", "CRASH", "FAIL", "PASS"]
    assert [o.status for o in out["op/bad"].runs()] == ["FAIL", "FAIL"]
    assert all(not v for v in runner.script.values())  # each scripted run was used, no more
    assert opjudge.judge(out["op/flaky"], None, "vulkan", _flake_row()).status == "FLAKE"


def test_a_timeout_runs_again_alone_with_a_longer_limit_and_passing_is_slow(tmp_path: Path) -> None:
    runner = Scripted({"op/slow": ["TIMEOUT", "PASS"], "op/hang": ["TIMEOUT", "TIMEOUT"], "op/ok": ["PASS"]})
    spec = _spec(tmp_path, runner, ["op/slow", "op/hang", "op/ok"], limits={"op/hang": 200.0}, rerun_factor=4.0)
    out = optest.sweep(spec, say=_quiet)
    first, again = runner.plans
    assert {t["name"]: t["timeout_s"] for t in first["tests"]} == {"op/slow": 120.0, "op/hang": 200.0, "op/ok": 120.0}
    assert again["jobs"] == 1 and {t["name"]: t["timeout_s"] for t in again["tests"]} == {
        "op/slow": 480.0,
        "op/hang": 800.0,
    }
    slow = opjudge.judge(out["op/slow"], None, "vulkan", None)
    assert (slow.status, slow.matched, slow.slow, slow.limit_s) == ("PASS", True, True, 480.0)
    assert "killed at the 120 s limit" in slow.reason and slow.duration_s == 7.0
    hang = opjudge.judge(out["op/hang"], None, "vulkan", None)
    assert hang.status == "TIMEOUT" and "again alone at 800 s" in hang.reason


def test_slow_rows_give_limits_from_data(tmp_path: Path) -> None:
    exp = _load(
        tmp_path,
        'timeout_rerun_factor = 3\n[[slow]]\nrefs = ["3.3.0"]\nvariant = "vulkan-*"\nicd = "lavapipe"\n'
        'test = "op/matmul"\ntimeout_s = 300\nmeasured = "passed alone in 140 s"\n',
    )
    assert exp.rerun_factor == 3.0
    assert exp.limit("3.3.0", None, "vulkan-buffer", "lavapipe", "op/matmul", 120.0) == 300.0
    assert exp.limit("3.3.0", None, "vulkan-buffer", "swiftshader", "op/matmul", 120.0) == 120.0
    assert exp.limit("3.3.0", None, "vulkan-buffer", "lavapipe", "op/matmul", 600.0) == 600.0  # never below


# -- item 6: not run is not a result; the reports ----------------------------------------------------------------
def _data(results: list[opjudge.TestResult]) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell": "3.3.0/vulkan-image/lavapipe", "variant": "vulkan-image", "icd": "lavapipe"}
    cell["tests"] = [r.as_dict() for r in results]
    cell.update(opjudge.summarize(results))
    return {"session": "ops", "ref": "3.3.0", "status": "MATCHED", "cells": [cell], "timeout_s": 120.0, "stale": []}


def test_skip_rows_and_unbuilt_sources_are_not_run_and_counted_apart(tmp_path: Path) -> None:
    skip_row = opjudge.Expect(("3.3.0",), "vulkan-image", "*", "op/slow", "SKIP", "over 120 s", line=3)
    results = [
        opjudge.judge(_o("PASS", "op/a", by={"vulkan": {"ReLU": 1}}), None, "vulkan", None),
        opjudge.not_run("op/slow", "over 120 s", opjudge.SKIPPED_BY_ROW, skip_row),
        opjudge.not_run("op/prompt_cache", "not built: test/op/PromptCacheTest.cpp", opjudge.NOT_BUILT),
    ]
    s = opjudge.summarize(results)
    assert s["results"] == 1 and s["matched"] == 1 and s["mismatched"] == 0
    assert s["not_run"] == {"count": 2, "why": {"SKIP row": 1, "not built": 1}}
    assert sum(s["counts"].values()) == 1 and s["counts"]["TIMEOUT"] == 0
    assert all(r.matched is None for r in results[1:])
    assert opjudge.not_built_kind("compiled out: needs MNN_LOW_MEMORY") == "compiled out"
    data = _data(results)
    assert "2 (SKIP row: 1, not built: 1)" in opreport.table(data)
    opreport.write_all(tmp_path, data)
    md = (tmp_path / "summary.md").read_text()
    assert "| not run |" in md and "## Not run" in md and "op/prompt_cache" in md
    assert "| op/slow | NOT-RUN" not in md  # not among the results that did not pass
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count("<skipped") == 2 and "<failure" not in junit
    # A SKIP row that skipped a test is used, not stale.
    assert (
        opjudge.stale_rows(
            opjudge.Expectations((skip_row,)), [(("3.3.0", None, "vulkan-image", "lavapipe"), results)], ("op/",)
        )
        == []
    )


def test_summary_md_tables_have_one_separator_cell_per_column(tmp_path: Path) -> None:
    results = [opjudge.judge(_o("FAIL", "op/b"), _o("PASS"), "vulkan", None)]
    md = opreport.markdown(_data(results))
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and set(line.replace("|", "").split()) == {"---"}:
            assert line.count("---") == lines[i - 1].count("|") - 1, (lines[i - 1], line)
    assert "| --- || --- |" not in md
    head = lines.index("## Not passing") + 2
    assert lines[head + 1] == "|" + " --- |" * 6


# -- item 7: coverage in every report ------------------------------------------------------------------------------
def test_reports_give_the_selection_against_the_registrations_and_name_each_left_out() -> None:
    results = [opjudge.judge(_o("PASS", "op/a", by={"vulkan": {"ReLU": 1}}), None, "vulkan", None)]
    data = _data(results)
    assert "Coverage: not recorded" in opreport.markdown(data)
    data["coverage"] = {
        "built": 242,
        "registered": 246,
        "left_out": {"op/int4Ptq": "compiled out: needs MNN_LOW_MEMORY", "op/stft": "compiled out: needs X"},
    }
    md = opreport.markdown(data)
    assert "Coverage: 242 tests built of 246 registered for the selection; 2 left out" in md
    assert "## Registered but not built" in md and "| op/int4Ptq | compiled out: needs MNN_LOW_MEMORY |" in md
    assert "242 tests built of 246" in opreport.table(data)


def test_a_slow_test_starts_first(tmp_path: Path) -> None:
    """Longest first: a [[slow]] row's test is at the head of the plan, so it overlaps the short ones instead of
    running alone at the end of the sweep (op/lowMemory/mixedKernel: 196 s where the rest take 2 minutes)."""
    tests = ["grad/a", "op/b", "op/lowMemory/mixedKernel", "op/c", "op/d"]
    runner = Scripted({t: ["PASS"] for t in tests})
    limits = {"op/lowMemory/mixedKernel": 420.0, "op/c": 240.0}
    optest.sweep(_spec(tmp_path, runner, tests, limits=limits), say=_quiet)
    (plan,) = runner.plans
    assert [t["name"] for t in plan["tests"]] == ["op/lowMemory/mixedKernel", "op/c", "grad/a", "op/b", "op/d"]
