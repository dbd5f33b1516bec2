"""judge.judge: verdicts from synthetic cell runs (no driver is run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mnnrepro import judge as J
from mnnrepro import report
from mnnrepro.cells import Cell, CellRun
from mnnrepro.contract import RunRecord, Stage
from mnnrepro.fixtures import Expectation
from mnnrepro.judge import Verdict, judge
from mnnrepro.runner import Completed

STEPS = 12
CHECKS: dict[str, float] = {
    "min_accuracy": 0.5,
    "loss_fall_window": 5,
    "loss_abs_tolerance": 0.02,
    "loss_rel_tolerance": 0.01,
    "max_accuracy_gap": 0.03,
}
BUG = "alibaba/MNN#3129"
REPRODUCE = Expectation(("3.3.0",), "vulkan-image", "*", "reproduce", BUG, "SIGSEGV", "sgd_step", 0)
FIXED_ROW = Expectation(("3.3.0",), "vulkan-buffer", "*", "fixed", BUG)
PASS_ROW = Expectation(("*",), "cpu", "*", "pass")

IMAGE = Cell("3.3.0", "vulkan-image", "lavapipe")
BUFFER = Cell("3.3.0", "vulkan-buffer", "lavapipe")
CPU = Cell("3.3.0", "cpu", "-")

SIGSEGV_VIA_GDB = 128 + 11
SIGABRT_VIA_GDB = 128 + 6


def falling(offset: float = 0.0) -> list[float]:
    return [2.3 - 0.08 * i + offset for i in range(STEPS)]


def trained(losses: list[float] | None = None, *, accuracy: float = 0.75, exercised: bool = True) -> RunRecord:
    losses = falling() if losses is None else losses
    rec = RunRecord(
        backend={
            "requested": "vulkan",
            "active": "vulkan",
            "exercised": exercised,
            "device": {"name": "llvmpipe (LLVM 15)", "driver_info": "Mesa 22"},
        }
    )
    for i, loss in enumerate(losses):
        rec.stages += [Stage("forward", i, 0.0), Stage("sgd_step", i, 0.0)]
        rec.steps.append({"step": i, "loss": loss})
    rec.stages += [Stage("test", None, 0.0), Stage("done", None, 0.0)]
    rec.test = {"accuracy": accuracy}
    rec.done = True
    return rec


def crashed_at(name: str, step: int | None, *, exercised: bool | None = True) -> RunRecord:
    backend = {} if exercised is None else {"requested": "vulkan", "active": "vulkan", "exercised": exercised}
    stages = [Stage("load_plugin", None, 0.0), Stage("forward", 0, 0.1)]
    if (name, step) != ("forward", 0):
        stages.append(Stage(name, step, 0.2))
    return RunRecord(backend=backend, stages=stages)


def cell_run(
    tmp_path: Path,
    cell: Cell,
    record: RunRecord,
    returncode: int = 0,
    *,
    timed_out: bool = False,
    crash: dict[str, Any] | None = None,
) -> CellRun:
    completed = Completed(argv=(), returncode=returncode, duration_s=1.0, timed_out=timed_out)
    return CellRun(cell, tmp_path, completed, record, crash, ["mnist_driver"], gdb=True)


def run_judge(
    run: CellRun,
    expectation: Expectation | None,
    *,
    baseline: RunRecord | None = None,
    known: tuple[Expectation, ...] = (REPRODUCE,),
) -> Verdict:
    return judge(run, expectation, steps=STEPS, checks=CHECKS, baseline=baseline, known_bugs=known)


def failed_checks(v: Verdict) -> set[str]:
    return {c.name for c in v.checks if not c.passed}


# -- crashes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("returncode", [SIGSEGV_VIA_GDB, -11])
def test_sigsegv_at_first_sgd_step_reproduces_the_bug(tmp_path: Path, returncode: int) -> None:
    crash = {"signal": "SIGSEGV", "frames": [{"function": "MNN::VulkanBackend::onExecute"}]}
    v = run_judge(cell_run(tmp_path, IMAGE, crashed_at("sgd_step", 0), returncode, crash=crash), REPRODUCE)
    assert v.verdict == J.REPRODUCED
    assert v.matched is True
    assert v.expected == J.REPRODUCED
    assert BUG in v.reason
    assert v.evidence["signal"] == "SIGSEGV"
    assert v.evidence["stage"] == "sgd_step[step 0]"
    assert v.evidence["top_frames"] == ["MNN::VulkanBackend::onExecute"]


def test_backtrace_file_is_cited_as_evidence(tmp_path: Path) -> None:
    (tmp_path / "backtrace.txt").write_text("#0 crash\n")
    v = run_judge(cell_run(tmp_path, IMAGE, crashed_at("sgd_step", 0), SIGSEGV_VIA_GDB), REPRODUCE)
    assert v.evidence["backtrace"] == str(tmp_path / "backtrace.txt")


def test_sigsegv_in_another_stage_is_an_unexpected_crash(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, IMAGE, crashed_at("forward", 0), SIGSEGV_VIA_GDB), REPRODUCE)
    assert v.verdict == J.UNEXPECTED_CRASH
    assert v.matched is False
    assert "forward[step 0]" in v.reason


def test_sigsegv_at_a_later_step_is_an_unexpected_crash(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, IMAGE, crashed_at("sgd_step", 3), SIGSEGV_VIA_GDB), REPRODUCE)
    assert v.verdict == J.UNEXPECTED_CRASH
    assert v.matched is False


def test_another_signal_is_an_unexpected_crash(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, IMAGE, crashed_at("sgd_step", 0), SIGABRT_VIA_GDB), REPRODUCE)
    assert v.verdict == J.UNEXPECTED_CRASH
    assert v.evidence["signal"] == "SIGABRT"
    assert v.matched is False


def test_a_crash_before_the_backend_proof_is_an_unexpected_crash(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, IMAGE, crashed_at("load_plugin", None, exercised=None), -11), REPRODUCE)
    assert v.verdict == J.UNEXPECTED_CRASH


def test_a_fixed_cell_crashing_like_its_bug_is_reproduced_not_matched(tmp_path: Path) -> None:
    v = run_judge(
        cell_run(tmp_path, BUFFER, crashed_at("sgd_step", 0), SIGSEGV_VIA_GDB), FIXED_ROW, known=(PASS_ROW, REPRODUCE)
    )
    assert v.verdict == J.REPRODUCED
    assert v.expected == J.FIXED
    assert v.matched is False
    assert BUG in v.reason


def test_a_fixed_cell_crash_without_known_bugs_is_unexpected(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, BUFFER, crashed_at("sgd_step", 0), SIGSEGV_VIA_GDB), FIXED_ROW, known=())
    assert v.verdict == J.UNEXPECTED_CRASH
    assert v.matched is False


def test_a_fixed_cell_crashing_at_another_step_is_not_the_known_bug(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, BUFFER, crashed_at("sgd_step", 5), SIGSEGV_VIA_GDB), FIXED_ROW)
    assert v.verdict == J.UNEXPECTED_CRASH


# -- NOT-EXERCISED and HANG ----------------------------------------------------------------------


@pytest.mark.parametrize("expectation", [REPRODUCE, FIXED_ROW, PASS_ROW, None])
def test_exit_4_is_not_exercised_and_never_matched(tmp_path: Path, expectation: Expectation | None) -> None:
    rec = RunRecord(backend={"requested": "vulkan", "active": "cpu", "exercised": False, "reason": "no Vulkan device"})
    v = run_judge(cell_run(tmp_path, IMAGE, rec, 4), expectation)
    assert v.verdict == J.NOT_EXERCISED
    assert v.matched is False
    assert "no Vulkan device" in v.reason


def test_exit_4_without_any_events_is_not_exercised(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, IMAGE, RunRecord(), 4), REPRODUCE)
    assert v.verdict == J.NOT_EXERCISED


def test_a_perfect_run_on_the_wrong_backend_is_not_exercised(tmp_path: Path) -> None:
    rec = trained(exercised=False)
    v = run_judge(cell_run(tmp_path, CPU, rec, 0), PASS_ROW)
    assert v.verdict == J.NOT_EXERCISED
    assert v.expected == J.PASS
    assert v.matched is False


def test_proof_comes_before_a_crash(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, IMAGE, crashed_at("sgd_step", 0, exercised=False), -11), REPRODUCE)
    assert v.verdict == J.NOT_EXERCISED
    assert v.matched is False


def test_exit_0_without_backend_proof_is_not_exercised(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, CPU, RunRecord(done=True), 0), PASS_ROW)
    assert v.verdict == J.NOT_EXERCISED
    assert "no backend proof" in v.reason


def test_a_failure_exit_without_backend_proof_is_fail(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, CPU, RunRecord(), 3), PASS_ROW)
    assert v.verdict == J.FAIL


@pytest.mark.parametrize("expectation", [REPRODUCE, FIXED_ROW, PASS_ROW])
def test_timeout_is_hang(tmp_path: Path, expectation: Expectation) -> None:
    v = run_judge(cell_run(tmp_path, IMAGE, crashed_at("sgd_step", 0), -9, timed_out=True), expectation)
    assert v.verdict == J.HANG
    assert v.matched is False
    assert "sgd_step[step 0]" in v.reason


# -- training checks -----------------------------------------------------------------------------


def test_buffer_mode_tracking_the_cpu_is_fixed(tmp_path: Path) -> None:
    baseline = trained(falling(), accuracy=0.74)
    run = cell_run(tmp_path, BUFFER, trained(falling(0.001), accuracy=0.75))
    v = run_judge(run, FIXED_ROW, baseline=baseline)
    assert v.verdict == J.FIXED
    assert v.matched is True
    assert failed_checks(v) == set()
    assert {"completed", "finite_loss", "loss_fell", "accuracy", "tracks_cpu", "accuracy_vs_cpu"} == {
        c.name for c in v.checks
    }
    assert v.evidence["device"] == "llvmpipe (LLVM 15)"
    assert v.evidence["driver"] == "Mesa 22"


def test_losses_within_tolerance_track_the_cpu(tmp_path: Path) -> None:
    # per step: |loss - cpu| <= 0.02 + 0.01 * |cpu|; cpu losses are >= 1.4 here, so 0.03 is inside
    v = run_judge(cell_run(tmp_path, BUFFER, trained(falling(0.03))), FIXED_ROW, baseline=trained())
    assert "tracks_cpu" not in failed_checks(v)


def test_losses_beyond_tolerance_fail_tracks_cpu(tmp_path: Path) -> None:
    losses = falling()
    losses[7] += 0.2
    v = run_judge(cell_run(tmp_path, BUFFER, trained(losses)), FIXED_ROW, baseline=trained())
    assert v.verdict == J.FAIL
    assert v.matched is False
    assert failed_checks(v) == {"tracks_cpu"}
    assert "at step 7" in v.reason


def test_no_baseline_fails_tracks_cpu(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, BUFFER, trained()), FIXED_ROW, baseline=None)
    assert v.verdict == J.FAIL
    assert failed_checks(v) == {"tracks_cpu"}


def test_accuracy_below_minimum_fails(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, CPU, trained(accuracy=0.3)), PASS_ROW)
    assert v.verdict == J.FAIL
    assert failed_checks(v) == {"accuracy"}


def test_accuracy_far_from_the_cpu_fails(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, BUFFER, trained(accuracy=0.6)), FIXED_ROW, baseline=trained(accuracy=0.75))
    assert failed_checks(v) == {"accuracy_vs_cpu"}


def test_loss_that_does_not_fall_fails(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, CPU, trained([2.3] * STEPS)), PASS_ROW)
    assert failed_checks(v) == {"loss_fell"}


def test_too_few_steps_fail(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, CPU, trained(falling()[:-1])), PASS_ROW)
    assert v.verdict == J.FAIL
    assert "completed" in failed_checks(v)


def test_non_finite_loss_fails(tmp_path: Path) -> None:
    losses = falling()
    losses[3] = float("nan")
    v = run_judge(cell_run(tmp_path, CPU, trained(losses)), PASS_ROW)
    assert {"finite_loss", "loss_fell"} <= failed_checks(v)


def test_driver_error_exit_is_fail_with_its_meaning(tmp_path: Path) -> None:
    rec = crashed_at("sgd_step", 0)
    rec.error = {"message": "SGD step failed at step 0"}
    v = run_judge(cell_run(tmp_path, BUFFER, rec, 7), FIXED_ROW)
    assert v.verdict == J.FAIL
    assert "an MNN call reported failure" in v.reason
    assert "SGD step failed at step 0" in v.reason


def test_cpu_training_passes(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, CPU, trained()), PASS_ROW)
    assert v.verdict == J.PASS
    assert v.matched is True
    assert "tracks_cpu" not in {c.name for c in v.checks}  # the CPU is not compared with itself


def test_no_expectation_is_never_matched(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, CPU, trained()), None)
    assert v.verdict == J.PASS
    assert v.expected == ""
    assert v.matched is False
    assert "no expectation" in v.reason


def test_a_reproduce_cell_that_trains_is_a_mismatch(tmp_path: Path) -> None:
    v = run_judge(cell_run(tmp_path, IMAGE, trained()), REPRODUCE, baseline=trained())
    assert v.verdict == J.FIXED  # it has a bug and passed every check
    assert v.matched is False


# -- workloads of any length (absolute checks fit the workload they were measured on) -------------------------

MEASURED_AT_30 = {**CHECKS, "absolute_min_steps": 30}


def test_a_short_cpu_run_with_low_accuracy_passes_its_absolute_checks_do_not_apply(tmp_path: Path) -> None:
    v = judge(
        cell_run(tmp_path, CPU, trained(accuracy=0.36)), PASS_ROW, steps=STEPS, checks=MEASURED_AT_30, baseline=None
    )
    assert v.verdict == J.PASS and v.matched
    status = {c.name: c.status for c in v.checks}
    assert status["accuracy"] == "n/a" and status["loss_fell"] == "n/a"
    assert "measured at 30 steps" in next(c.detail for c in v.checks if c.name == "accuracy")


def test_a_short_run_still_fails_what_does_apply(tmp_path: Path) -> None:
    losses = falling()
    losses[2] = float("inf")
    v = judge(cell_run(tmp_path, CPU, trained(losses)), PASS_ROW, steps=STEPS, checks=MEASURED_AT_30, baseline=None)
    assert v.verdict == J.FAIL and "finite_loss" in failed_checks(v)


def test_a_short_gpu_run_is_held_to_the_cpu_run_of_the_same_workload(tmp_path: Path) -> None:
    cpu = trained(accuracy=0.36)
    ok = judge(
        cell_run(tmp_path, BUFFER, trained(accuracy=0.37)), FIXED_ROW, steps=STEPS, checks=MEASURED_AT_30, baseline=cpu
    )
    assert ok.verdict == J.FIXED and ok.matched
    off = judge(
        cell_run(tmp_path, BUFFER, trained(falling(0.5), accuracy=0.37)),
        FIXED_ROW,
        steps=STEPS,
        checks=MEASURED_AT_30,
        baseline=cpu,
    )
    assert off.verdict == J.FAIL and failed_checks(off) == {"tracks_cpu"}


def test_too_few_steps_for_the_loss_window_is_not_applicable(tmp_path: Path) -> None:
    v = judge(cell_run(tmp_path, CPU, trained(falling()[:3])), PASS_ROW, steps=3, checks=CHECKS, baseline=None)
    assert {c.name: c.status for c in v.checks}["loss_fell"] == "n/a"
    assert v.verdict == J.PASS  # 3 steps completed, finite, accuracy 0.75 >= 0.5 (no absolute_min_steps set)


def test_the_default_workload_keeps_every_absolute_check(tmp_path: Path) -> None:
    v = judge(
        cell_run(tmp_path, CPU, trained(accuracy=0.3)),
        PASS_ROW,
        steps=STEPS,
        checks={**CHECKS, "absolute_min_steps": STEPS},
        baseline=None,
    )
    assert v.verdict == J.FAIL and failed_checks(v) == {"accuracy"}


def test_an_absolute_check_the_cpu_misses_too_is_excused_for_a_gpu_cell(tmp_path: Path) -> None:
    flat = [2.3] * STEPS
    cpu_v = run_judge(cell_run(tmp_path, CPU, trained(flat)), PASS_ROW)
    assert failed_checks(cpu_v) == {"loss_fell"}
    v = judge(
        cell_run(tmp_path, BUFFER, trained(flat)),
        FIXED_ROW,
        steps=STEPS,
        checks=CHECKS,
        baseline=trained(flat),
        known_bugs=(REPRODUCE,),
        baseline_checks=cpu_v.checks,
    )
    assert v.verdict == J.FIXED
    assert {c.name: c.status for c in v.checks}["loss_fell"] == "excused"
    # Not excused when the CPU met it: the same flat loss then fails the GPU cell.
    passing_cpu = run_judge(cell_run(tmp_path, CPU, trained()), PASS_ROW)
    v2 = judge(
        cell_run(tmp_path, BUFFER, trained(flat)),
        FIXED_ROW,
        steps=STEPS,
        checks=CHECKS,
        baseline=trained(flat),
        baseline_checks=passing_cpu.checks,
    )
    assert v2.verdict == J.FAIL and "loss_fell" in failed_checks(v2)


def test_a_relative_check_is_never_excused(tmp_path: Path) -> None:
    cpu_v = run_judge(cell_run(tmp_path, CPU, trained([2.3] * STEPS)), PASS_ROW)
    v = judge(
        cell_run(tmp_path, BUFFER, trained(falling(0.5))),
        FIXED_ROW,
        steps=STEPS,
        checks=CHECKS,
        baseline=trained(),
        baseline_checks=cpu_v.checks,
    )
    assert "tracks_cpu" in failed_checks(v)


def test_a_row_covering_by_version_range_is_named_in_the_reason(tmp_path: Path) -> None:
    row = Expectation((">=3.6.0",), "vulkan-image", "*", "fixed", BUG)
    run = cell_run(tmp_path, Cell("3.6.1", "vulkan-image", "lavapipe"), trained())
    v = judge(run, row, steps=STEPS, checks=CHECKS, baseline=trained(), covered_by=">=3.6.0")
    assert v.verdict == J.FIXED and v.matched
    assert "the row for refs >=3.6.0" in v.reason
    assert v.evidence["expectation_covers"] == ">=3.6.0"


# -- the bug's op: fixed kernel or CPU fallback (issue 21, item 3) -------------------------------------------------

FALLBACK_ROW = Expectation(
    (">=3.6.0",), "vulkan-image", "*", "fixed-by-fallback", BUG, op="Deconvolution", phase="sgd_step"
)
FIXED_OP_ROW = Expectation((">=3.6.0",), "vulkan-image", "*", "fixed", BUG, op="Deconvolution", phase="sgd_step")
REPRODUCE_OP = Expectation(
    ("3.3.0",), "vulkan-image", "*", "reproduce", BUG, "SIGSEGV", "sgd_step", 0, op="Deconvolution", phase="sgd_step"
)
IMAGE_361 = Cell("3.6.1", "vulkan-image", "lavapipe")


def placed(deconv_on: list[str], phase: str = "sgd_step") -> RunRecord:
    """A run that trained, with the driver's `ops` events: per step, where its one Deconvolution of ``phase`` ran
    (the other ops on Vulkan, a Cast on the CPU, as buffer mode at 3.3.0)."""
    rec = trained()
    for step, backend in enumerate(deconv_on):
        by: dict[str, dict[str, int]] = {"vulkan": {"BinaryOp": 60}, "cpu": {"Cast": 2}}
        by[backend]["Deconvolution"] = 1
        rec.ops.append({"phase": "forward", "step": step, "by_backend": {"vulkan": {"Convolution": 2}}})
        rec.ops.append({"phase": phase, "step": step, "by_backend": by})
    return rec


def judged(tmp_path: Path, record: RunRecord, row: Expectation, known: tuple[Expectation, ...] = ()) -> Verdict:
    run = cell_run(tmp_path, IMAGE_361, record)
    return judge(run, row, steps=STEPS, checks=CHECKS, baseline=trained(), known_bugs=known)


def test_the_bug_op_on_the_cpu_is_fixed_by_fallback_as_the_row_says(tmp_path: Path) -> None:
    v = judged(tmp_path, placed(["cpu"] * STEPS), FALLBACK_ROW)
    assert (v.verdict, v.matched, v.expected) == (J.FIXED_BY_FALLBACK, True, J.FIXED_BY_FALLBACK)
    assert f"Deconvolution ran on the CPU in sgd_step ({STEPS} of {STEPS} instances" in v.reason
    assert "not fixed" in v.reason
    check = next(c for c in v.checks if c.name == "op_placement")
    assert check.passed and f"cpu {STEPS}" in check.detail
    assert v.evidence["bug_op"]["cpu"] == STEPS and v.evidence["bug_op"]["gpu"] == 0


def test_any_instance_on_the_cpu_is_a_fallback(tmp_path: Path) -> None:
    v = judged(tmp_path, placed(["vulkan"] * (STEPS - 1) + ["cpu"]), FALLBACK_ROW)
    assert v.verdict == J.FIXED_BY_FALLBACK and v.matched
    assert f"(1 of {STEPS} instances" in v.reason


@pytest.mark.parametrize("row", [FIXED_OP_ROW, Expectation((">=3.6.0",), "vulkan-image", "*", "fixed", BUG)])
def test_a_fixed_row_whose_op_fell_back_is_a_mismatch(tmp_path: Path, row: Expectation) -> None:
    """A 'fixed' row without an op of its own takes the op of its bug's 'reproduce' row."""
    v = judged(tmp_path, placed(["cpu"] * STEPS), row, known=(REPRODUCE_OP,))
    assert (v.verdict, v.matched, v.expected) == (J.FIXED_BY_FALLBACK, False, J.FIXED)
    assert "the row expects FIXED (the op on the GPU)" in v.reason


def test_the_op_on_the_gpu_is_fixed_and_a_fallback_row_is_then_stale(tmp_path: Path) -> None:
    on_gpu = placed(["vulkan"] * STEPS)
    fixed = judged(tmp_path, on_gpu, FIXED_OP_ROW)
    assert (fixed.verdict, fixed.matched) == (J.FIXED, True)
    assert f"Deconvolution ran on the GPU in sgd_step ({STEPS} of {STEPS} instances)" in fixed.reason
    stale = judged(tmp_path, on_gpu, FALLBACK_ROW)
    assert (stale.verdict, stale.matched, stale.expected) == (J.FIXED, False, J.FIXED_BY_FALLBACK)
    assert "the kernel now runs on the GPU, the row is stale" in stale.reason


@pytest.mark.parametrize("row", [FALLBACK_ROW, FIXED_OP_ROW])
@pytest.mark.parametrize(
    ("record", "detail"),
    [
        (trained(), "no op placement recorded for sgd_step"),  # --no-trace-ops: no `ops` events at all
        (placed(["cpu"] * STEPS, phase="grad_dump"), "no op placement recorded for sgd_step"),  # other phases only
    ],
)
def test_unknown_placement_is_never_a_silent_fixed(
    tmp_path: Path, row: Expectation, record: RunRecord, detail: str
) -> None:
    v = judged(tmp_path, record, row)
    assert (v.verdict, v.matched) == (J.FAIL, False)
    assert "op_placement" in failed_checks(v)
    assert detail in v.reason and "cannot tell a fixed kernel from a CPU fallback" in v.reason


def test_a_row_naming_an_op_that_never_ran_there_fails(tmp_path: Path) -> None:
    rec = placed(["cpu"] * STEPS)
    for event in rec.ops:
        for types in event["by_backend"].values():
            types.pop("Deconvolution", None)
    v = judged(tmp_path, rec, FALLBACK_ROW)
    assert v.verdict == J.FAIL and "op_placement" in failed_checks(v)
    assert "the op did not run" in v.reason


def test_the_reproduce_row_of_a_bisect_names_a_trained_fallback(tmp_path: Path) -> None:
    """bisect judges every commit against the 'reproduce' row: at 39be21c56 the cell trains with the op on the CPU."""
    v = judged(tmp_path, placed(["cpu"] * STEPS), REPRODUCE_OP)
    assert (v.verdict, v.matched, v.expected) == (J.FIXED_BY_FALLBACK, False, J.REPRODUCED)


def test_a_fallback_row_that_crashes_the_known_way_is_reproduced(tmp_path: Path) -> None:
    crash = {"signal": "SIGSEGV", "frames": [{"function": "MNN::VulkanBackend::onExecute"}]}
    run = cell_run(tmp_path, IMAGE_361, crashed_at("sgd_step", 0), -11, crash=crash)
    v = judge(run, FALLBACK_ROW, steps=STEPS, checks=CHECKS, baseline=None, known_bugs=(REPRODUCE_OP,))
    assert v.verdict == J.REPRODUCED and not v.matched


def test_a_cpu_cell_is_not_held_to_the_bug_op(tmp_path: Path) -> None:
    v = judge(
        cell_run(tmp_path, CPU, trained()),
        PASS_ROW,
        steps=STEPS,
        checks=CHECKS,
        baseline=None,
        known_bugs=(REPRODUCE_OP,),
    )
    assert v.verdict == J.PASS and "op_placement" not in {c.name for c in v.checks}


def test_the_reports_name_the_fallback_and_where_the_op_ran(tmp_path: Path) -> None:
    run = cell_run(tmp_path, IMAGE_361, placed(["cpu"] * STEPS))
    v = judge(run, FIXED_OP_ROW, steps=STEPS, checks=CHECKS, baseline=trained())
    data = report.summary({"ref": "3.6.1"}, [(run, v)])
    lines = report.evidence_lines(data["cells"][0])
    assert lines[0] == "verdict: FIXED-BY-FALLBACK (expected FIXED)"
    assert f"known bug's op: Deconvolution in sgd_step: cpu {STEPS}" in lines
    assert "FIXED-BY-FALLBACK" in report.table([(run, v)]) and not data["all_matched"]


# -- no gdb: judged by signal only (issue 22) ------------------------------------------------------------


SIGNED = Expectation(
    ("3.3.0",), "vulkan-image", "lavapipe", "reproduce", BUG, "SIGSEGV", "sgd_step", 0, signature=("MNN::A::a",)
)


@pytest.mark.parametrize("row", [REPRODUCE, SIGNED])
def test_a_crash_without_gdb_is_reproduced_by_signal_only_and_says_so(tmp_path: Path, row: Expectation) -> None:
    run = cell_run(tmp_path, IMAGE, crashed_at("sgd_step", 0), -11, crash=None)
    run = CellRun(run.cell, run.result_dir, run.completed, run.record, None, run.argv, gdb=False)
    why = "no usable gdb with Python for the host runner: gdb: not installed"
    v = judge(run, row, steps=STEPS, checks=CHECKS, baseline=None, known_bugs=(row,), gdb_absent=why)
    assert v.verdict == J.REPRODUCED and v.matched  # the bug's crash cannot be told apart further
    assert f"judged by signal only (no gdb: {why})" in v.reason
    assert v.evidence["judged_by"] == f"judged by signal only (no gdb: {why})"
    assert ("signature not verified" in v.reason) == bool(row.signature)
    data = report.summary({"session": "vulkan", "ref": "3.3.0"}, [(run, v)])
    assert "(signal only)" in report.markdown(data)
    assert f"judged by signal only (no gdb: {why})" in report.table([(run, v)])
    assert any("judged by signal only" in line for line in report.evidence_lines(data["cells"][0]))


def test_a_crash_with_a_backtrace_is_judged_by_its_signature(tmp_path: Path) -> None:
    crash = {"signal": "SIGSEGV", "frames": [{"function": "MNN::A::a", "library": "/x/libMNN.so"}]}
    v = run_judge(cell_run(tmp_path, IMAGE, crashed_at("sgd_step", 0), -11, crash=crash), SIGNED, known=(SIGNED,))
    assert v.verdict == J.REPRODUCED and v.matched
    assert "signal only" not in v.reason and v.evidence["judged_by"] == "signal, stage and crash signature"
    data = report.summary({"session": "vulkan", "ref": "3.3.0"}, [(cell_run(tmp_path, IMAGE, RunRecord()), v)])
    assert "(signal only)" not in report.markdown(data)


def test_an_unexpected_crash_without_gdb_says_signal_only(tmp_path: Path) -> None:
    run = cell_run(tmp_path, IMAGE, crashed_at("forward", 0), -11)
    v = judge(run, REPRODUCE, steps=STEPS, checks=CHECKS, baseline=None, known_bugs=(REPRODUCE,), gdb_absent="--no-gdb")
    assert v.verdict == J.UNEXPECTED_CRASH and "judged by signal only (no gdb: --no-gdb)" in v.reason


def test_the_session_header_names_why_there_was_no_gdb() -> None:
    data = {"header": {"session": "vulkan", "refs": {"3.3.0": {"gdb_absent": "--no-gdb"}}}, "cells": []}
    assert ("gdb", "none (--no-gdb): crashes judged by signal only") in report.fingerprint(data)


# -- known wrong values (issue 22) ------------------------------------------------------------------------

KNOWN_WRONG_ROW = Expectation(
    (">=3.6.0",),
    "vulkan-image",
    "host",
    "known-wrong",
    vendor="NVIDIA",
    match=r"^(gradients: .*gradient check FAILED for \d+/\d+ tensors|tracks_cpu: |accuracy_vs_cpu: |accuracy: )",
    reason="trains wrong on NVIDIA",
)
HOST = Cell("3.6.1", "vulkan-image", "host")
GRAD_FAIL = J.Check("gradients", False, "gradient check FAILED for 22/32 tensors; worst conv2.bias step 0 grad")
GRAD_OK = J.Check("gradients", True, "gradients match (32 tensors)")


def nvidia(losses: list[float] | None = None, *, accuracy: float = 0.75) -> RunRecord:
    rec = trained(losses, accuracy=accuracy)
    rec.backend["device"] = {"name": "NVIDIA H100 80GB HBM3", "vendor_id": 0x10DE, "driver_info": "580.159.04"}
    return rec


def judge_host(tmp_path: Path, rec: RunRecord, extra: J.Check, row: Expectation | None = KNOWN_WRONG_ROW) -> Verdict:
    run = cell_run(tmp_path, HOST, rec)
    return judge(run, row, steps=STEPS, checks=CHECKS, baseline=trained(), extra_checks=(extra,))


def test_known_wrong_values_are_known_wrong(tmp_path: Path) -> None:
    v = judge_host(tmp_path, nvidia(falling(0.5), accuracy=0.384), GRAD_FAIL)
    assert v.verdict == J.KNOWN_WRONG and v.matched and v.expected == J.KNOWN_WRONG
    assert "trains wrong on NVIDIA" in v.reason and "gradient check FAILED for 22/32" in v.reason
    assert v.evidence["device_facts"] == {"name": "NVIDIA H100 80GB HBM3", "vendor": "NVIDIA", "driver": "580.159.04"}


def test_a_known_wrong_cell_that_trains_right_is_a_stale_row(tmp_path: Path) -> None:
    v = judge_host(tmp_path, nvidia(), GRAD_OK)
    assert v.verdict == J.PASS and not v.matched and v.expected == J.KNOWN_WRONG
    assert "now trains right" in v.reason


def test_a_failure_the_pattern_does_not_match_is_fail(tmp_path: Path) -> None:
    losses = falling(0.5)
    losses[3] = float("nan")
    v = judge_host(tmp_path, nvidia(losses), GRAD_FAIL)
    assert v.verdict == J.FAIL and not v.matched
    assert "finite_loss" in v.reason and "not the known wrong values" in v.reason


def test_a_gradient_problem_that_is_not_the_known_failure_is_fail(tmp_path: Path) -> None:
    missing = J.Check("gradients", False, "gradient check: step0/grad/conv2.bias.npy is missing")
    v = judge_host(tmp_path, nvidia(), missing)
    assert v.verdict == J.FAIL and not v.matched


def test_a_host_cell_no_row_names_says_which_device_needs_one(tmp_path: Path) -> None:
    v = judge_host(tmp_path, nvidia(), GRAD_OK, row=None)
    assert not v.matched and "no row names its device 'NVIDIA H100 80GB HBM3'" in v.reason and "'NVIDIA'" in v.reason


def test_a_bug_op_the_trace_could_not_place_is_never_fixed(tmp_path: Path) -> None:
    """The driver's trace names an op's backend "unknown" when its output has none: such an instance is not on
    the GPU, so FIXED (every instance on the GPU) cannot be said; the placement check fails (FAIL, a mismatch)."""
    rec = trained()
    for step in range(STEPS):
        by = {"vulkan": {"BinaryOp": 60}, "unknown": {"Deconvolution": 1}}
        rec.ops.append({"phase": "sgd_step", "step": step, "by_backend": by})
    v = judged(tmp_path, rec, FIXED_OP_ROW)
    assert v.verdict == J.FAIL and not v.matched
    check = next(c for c in v.checks if c.name == "op_placement")
    assert not check.passed and f"{STEPS} instance(s) on neither the CPU nor vulkan" in check.detail
