"""nox -s bench (issue 6): statistics, the prep/exec split, JSON round trip, --compare, NOT-EXERCISED rows.

Synthetic driver events only; no MNN.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import bench, cli
from mnnrepro.cells import Cell, CellRun
from mnnrepro.contract import RunRecord
from mnnrepro.runner import Completed
from mnnrepro.settings import Settings


def timing(step: int, phase: str, ms: float, first: float, ops: int = 10) -> dict[str, Any]:
    event: dict[str, Any] = {"v": 1, "event": "timing", "phase": phase, "step": step, "ms": ms, "ops": ops}
    if ops:
        event.update(first_op_ms=first, last_op_ms=ms - 1.0, in_ops_ms=ms - first - 2.0)
    return event


def step(n: int, forward_ms: float, step_ms: float) -> dict[str, Any]:
    return {"v": 1, "event": "step", "step": n, "loss": 2.0, "forward_ms": forward_ms, "step_ms": step_ms}


def test_stats_median_quartiles_and_extremes() -> None:
    s = bench.Stats.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median, s.q1, s.q3, s.lo, s.hi, s.n) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    assert bench.Stats.of([7.0]).q1 == 7.0 == bench.Stats.of([7.0]).q3


def test_stats_ignores_non_finite_and_refuses_empty() -> None:
    assert bench.Stats.of([1.0, float("nan"), 3.0]).median == 2.0
    with pytest.raises(ValueError):
        bench.Stats.of([float("nan")])


def test_split_prep_is_time_before_first_op_of_each_phase() -> None:
    events = [timing(0, "forward", 30.0, 4.0), timing(0, "sgd_step", 70.0, 6.0)]
    (split,) = bench.split_steps(events, [step(0, 30.0, 70.0)])
    assert split.prep_ms == 10.0
    assert split.exec_ms == 90.0
    assert split.total_ms == 100.0
    # in_ops_ms = ms - first - 2 per phase: outside = first + 2 per phase
    assert split.outside_ms == 14.0


def test_split_skips_steps_without_ops_or_a_phase() -> None:
    events = [
        timing(0, "forward", 30.0, 4.0),  # step 0 has no sgd_step timing
        timing(1, "forward", 30.0, 4.0, ops=0),
        timing(1, "sgd_step", 70.0, 6.0),
    ]
    assert bench.split_steps(events, [step(0, 30, 70), step(1, 30, 70)]) == []


def test_samples_leave_out_the_warmup_step() -> None:
    s = bench.Samples()
    events = [timing(n, p, 1000.0 if n == 0 else 10.0, 1.0) for n in range(3) for p in ("forward", "sgd_step")]
    s.add_traced(events, [step(n, 0, 0) for n in range(3)])
    s.add_untraced([step(0, 900.0, 900.0), step(1, 5.0, 5.0), step(2, 6.0, 6.0)])
    assert s.total == [20.0, 20.0]
    assert s.prep == [2.0, 2.0]
    assert s.untraced == [10.0, 12.0]


def test_ratio_to_cpu_uses_untraced_medians_of_the_same_run() -> None:
    def measured(name: str, traced: float, untraced: float) -> bench.Row:
        return bench.Row(name, bench.MEASURED, total=bench.Stats.of([traced]), untraced=bench.Stats.of([untraced]))

    rows = [measured("cpu", 12.0, 10.0), measured("vulkan-buffer/lavapipe", 300.0, 250.0)]
    rows.append(bench.Row("opencl", bench.NOT_EXERCISED, "no GPU-type OpenCL device"))
    bench.add_ratios(rows)
    assert rows[0].ratio == 1.0
    assert rows[1].ratio == 25.0
    assert rows[2].ratio is None
    assert rows[1].trace_overhead == pytest.approx(0.2)


def test_not_exercised_rows_never_carry_numbers() -> None:
    with pytest.raises(ValueError, match="carries no numbers"):
        bench.Row("opencl", bench.NOT_EXERCISED, "none", prep=bench.Stats.of([1.0]))
    with pytest.raises(ValueError):
        bench.Row("vulkan-image", bench.NOT_MEASURED, "crash", ratio=1.0)
    row = bench.Row("opencl", bench.NOT_EXERCISED, "no GPU-type OpenCL device")
    line = bench.table([row]).splitlines()[1]
    assert not any(ch.isdigit() for ch in line.replace("OpenCL", "")), line
    assert all(v is None for k, v in row.as_dict().items() if k.endswith("_ms") or k == "ratio_to_cpu")


def test_samples_without_any_step_give_a_failed_row() -> None:
    row = bench.Samples().row("vulkan-buffer/lavapipe", "llvmpipe")
    assert row.status == bench.FAILED and row.per_step is None


def test_cpu_fallback_ops_counts_cpu_ops_of_forward_and_sgd_step() -> None:
    record = RunRecord()
    record.ops = [
        {"phase": "forward", "step": 1, "by_backend": {"vulkan": {"Conv": 20}, "cpu": {"Cast": 2}}},
        {"phase": "sgd_step", "step": 1, "by_backend": {"vulkan": {"Conv": 100}, "cpu": {"Cast": 2, "OneHot": 1}}},
        {"phase": "forward", "step": 2, "by_backend": {"cpu": {"Cast": 9}}},
    ]
    assert bench.cpu_fallback_ops(record) == 5
    assert bench.cpu_fallback_ops(RunRecord()) is None


def _rows() -> list[bench.Row]:
    cpu = bench.Samples(prep=[1.0, 2.0], exec=[9.0, 10.0], total=[10.0, 12.0], untraced=[9.0, 11.0], repeats=2)
    gpu = bench.Samples(prep=[5.0, 6.0], exec=[95.0, 100.0], total=[100.0, 106.0], untraced=[98.0, 102.0])
    gpu.cpu_ops, gpu.repeats = 4, 2
    rows = [cpu.row("cpu", "MNN CPU backend"), gpu.row("vulkan-buffer/lavapipe", "llvmpipe")]
    rows.append(bench.Row("opencl", bench.NOT_EXERCISED, "no GPU-type OpenCL device"))
    bench.add_ratios(rows)
    return rows


def test_json_round_trip(tmp_path: Path) -> None:
    rows = _rows()
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench.to_json(rows, {"ref": "3.3.0"})))
    back = bench.rows_from_json(json.loads(path.read_text()))
    assert back == rows
    with pytest.raises(ValueError, match="schema"):
        bench.rows_from_json({"schema": "other", "rows": []})


def test_compare_prints_change_per_backend() -> None:
    old = bench.to_json(_rows(), {"ref": "3.3.0", "created": "then"})
    new_rows = _rows()
    new_rows[1] = bench.Samples(prep=[5.0], exec=[45.0], total=[50.0], untraced=[50.0]).row(
        "vulkan-buffer/lavapipe", ""
    )
    bench.add_ratios(new_rows)
    text = bench.compare(bench.to_json(new_rows, {"ref": "3.3.0"}), old)
    lines = {line.split(":")[0].strip(): line for line in text.splitlines()[1:]}
    assert "total 10.0 -> 10.0 ms (+0%)" in lines["cpu"]
    assert "total 100.0 -> 50.0 ms (-50%)" in lines["vulkan-buffer/lavapipe"]
    assert "n/a (NOT-EXERCISED -> NOT-EXERCISED)" in lines["opencl"]
    assert not any(ch.isdigit() for ch in lines["opencl"])


def bench_args(*argv: str) -> argparse.Namespace:
    return cli.parser().parse_args(["bench", *argv])


def test_main_from_json_with_compare(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(bench.to_json(_rows(), {"ref": "3.3.0"})))
    said: list[str] = []
    args = bench_args("--from-json", str(path), "--compare", str(path))
    assert bench.main(args, Settings(), say=said.append) == 0
    out = "\n".join(said)
    assert "vulkan-buffer/lavapipe" in out and "(+0%)" in out and "NOT-EXERCISED" in out


def test_bench_is_a_subcommand_of_the_one_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(bench.to_json(_rows(), {"ref": "3.3.0"})))
    assert cli.main(["bench", "--from-json", str(path)]) == 0
    assert "vulkan-buffer/lavapipe" in capsys.readouterr().out
    args = bench_args("--icd", "lavapipe", "--timeout", "60", "--steps", "5", "--repeat", "2")
    assert (args.icds, args.timeout_s, args.steps, args.repeat, args.runner) == ("lavapipe", 60, 5, 2, "host")


def test_too_few_steps_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(bench.to_json(_rows(), {"ref": "3.3.0"})))
    assert cli.main(["bench", "--from-json", str(path), "--steps", "1"]) == 2
    assert "--steps must be > 1" in capsys.readouterr().err


def test_plan_lists_dynamic_then_static_rows() -> None:
    names = [t.backend for t in bench.plan("3.3.0", ("lavapipe", "host"), True)]
    dynamic = ["cpu", "vulkan-buffer/lavapipe", "vulkan-buffer/host", "opencl"]
    assert names == dynamic + [n + " static" for n in dynamic]
    assert [t.backend for t in bench.plan("3.3.0", ("lavapipe",), False)] == ["cpu", "vulkan-buffer/lavapipe", "opencl"]


def _run(icd: str, backend: dict[str, Any], returncode: int = 0, done: bool = True) -> CellRun:
    record = RunRecord(backend=backend, done=done)
    completed = Completed(argv=("driver",), returncode=returncode, duration_s=1.0)
    return CellRun(Cell("3.3.0", "vulkan-buffer", icd), Path("/nowhere"), completed, record, None, [], False)


def test_stop_row_says_why_a_backend_is_not_measured() -> None:
    gpu = {"exercised": True, "device": {"type": "DISCRETE_GPU", "name": "gpu"}}
    assert bench.stop_row("vulkan-buffer/host", _run("host", gpu), "gpu") is None
    off = bench.stop_row("opencl", _run("-", {"exercised": False, "reason": "no GPU"}), "")
    assert off is not None and (off.status, off.reason) == (bench.NOT_EXERCISED, "no GPU")
    cpu_type = {"exercised": True, "device": {"type": "CPU"}}
    host = bench.stop_row("vulkan-buffer/host", _run("host", cpu_type), "llvmpipe")
    assert host is not None and host.status == bench.NOT_EXERCISED and "CPU-type device (llvmpipe)" in host.reason
    assert bench.stop_row("vulkan-buffer/lavapipe", _run("lavapipe", cpu_type), "llvmpipe") is None
    crashed = bench.stop_row("vulkan-buffer/lavapipe", _run("lavapipe", gpu, returncode=-11, done=False), "gpu")
    assert crashed is not None and crashed.status == bench.FAILED and "driver exit -11" in crashed.reason


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = bench.plot(_rows(), tmp_path / "b.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_timing_keeps_timing_events_of_this_version(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [timing(0, "forward", 3.0, 1.0), {**timing(0, "sgd_step", 3.0, 1.0), "v": 99}, step(0, 1, 2)]
    path.write_text("\n".join(json.dumps(e) for e in lines) + "\n{torn")
    assert bench.read_timing(path) == [lines[0]]
    assert bench.read_timing(tmp_path / "missing.jsonl") == []


def test_split_of_a_static_step_uses_its_single_phase() -> None:
    events = [timing(1, "static_step", 25.0, 0.5), timing(1, "forward", 999.0, 500.0)]
    (split,) = bench.split_steps(events, [step(1, 25.0, 0.5)])
    assert (split.prep_ms, split.exec_ms, split.total_ms) == (0.5, 24.5, 25.0)


def test_static_rows_compare_with_the_static_cpu_and_give_the_rebuild_cost() -> None:
    def measured(name: str, untraced: float) -> bench.Row:
        return bench.Row(name, bench.MEASURED, total=bench.Stats.of([untraced]), untraced=bench.Stats.of([untraced]))

    rows = [measured("cpu", 80.0), measured("cpu static", 20.0), measured("vulkan-buffer/lavapipe", 1600.0)]
    rows.append(measured("vulkan-buffer/lavapipe static", 400.0))
    bench.add_ratios(rows)
    assert [r.ratio for r in rows] == [1.0, 1.0, 20.0, 20.0]
    lines = bench.rebuild_cost(rows)
    assert len(lines) == 2
    assert "cpu: 60.0 ms" in lines[0] and "75% of the step" in lines[0]
    assert "lavapipe: 1200.0 ms" in lines[1]


def test_loss_diff_of_static_and_dynamic_curves() -> None:
    assert bench.loss_diff([2.0, 1.5, 1.0], [2.0, 1.25, 1.0]) == 0.25
    assert bench.loss_diff([], [1.0]) is None
    with pytest.raises(ValueError):
        bench.Row("opencl static", bench.NOT_EXERCISED, "none", loss_diff=0.0)
    row = bench.Row("cpu static", bench.MEASURED, total=bench.Stats.of([1.0]), loss_diff=0.5)
    assert bench.Row.from_dict(json.loads(json.dumps(row.as_dict()))).loss_diff == 0.5
