"""report: the verdict table and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

from mnnrepro import report
from mnnrepro.cells import Cell, CellRun
from mnnrepro.contract import RunRecord
from mnnrepro.judge import Check, Verdict
from mnnrepro.runner import Completed


def row(tmp_path: Path, cell: Cell, verdict: Verdict, losses: list[float]) -> tuple[CellRun, Verdict]:
    rec = RunRecord(steps=[{"loss": x} for x in losses], test={"accuracy": 0.7} if losses else None)
    run = CellRun(cell, tmp_path, Completed((), 0, 1.0), rec, None, ["mnist_driver"], gdb=True)
    return run, verdict


def two_rows(tmp_path: Path) -> list[tuple[CellRun, Verdict]]:
    reproduced = Verdict(
        "REPRODUCED",
        True,
        "REPRODUCED",
        "SIGSEGV at stage sgd_step[step 0]: the known bug alibaba/MNN#3129",
        evidence={
            "signal": "SIGSEGV",
            "stage": "sgd_step[step 0]",
            "device": "llvmpipe",
            "backtrace": "/results/cells/x/backtrace.txt",
        },
    )
    failed = Verdict(
        "FAIL",
        False,
        "FIXED",
        "tracks_cpu: max |loss - cpu| 0.2 at step 7",
        checks=[Check("tracks_cpu", False, "too far", 0.2, 0.02)],
        evidence={"device": "SwiftShader Device"},
    )
    return [
        row(tmp_path, Cell("3.3.0", "vulkan-image", "lavapipe"), reproduced, []),
        row(tmp_path, Cell("3.3.0", "vulkan-buffer", "swiftshader"), failed, [2.3, 2.1]),
    ]


def test_table_shows_verdicts_and_marks_mismatches(tmp_path: Path) -> None:
    text = report.table(two_rows(tmp_path))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["cell", "verdict", "expected"]
    image = next(line for line in lines if "vulkan-image" in line)
    buffer = next(line for line in lines if "vulkan-buffer" in line)
    assert "REPRODUCED" in image and "REPRODUCED ok" in image and "MISMATCH" not in image
    assert "FAIL" in buffer and "FIXED MISMATCH" in buffer
    assert "tracks_cpu" in buffer
    assert "    backtrace: /results/cells/x/backtrace.txt" in lines
    assert sum("backtrace:" in line for line in lines) == 1  # only the row that has one


def test_table_columns_line_up(tmp_path: Path) -> None:
    lines = [line for line in report.table(two_rows(tmp_path)).splitlines() if not line.startswith("    ")]
    starts = {line.index(word) for line, word in zip(lines, ["verdict", "REPRODUCED", "FAIL"], strict=True)}
    assert len(starts) == 1


def test_summary_records_every_cell_and_the_overall_match(tmp_path: Path) -> None:
    data = report.summary({"session": "vulkan"}, two_rows(tmp_path))
    assert data["format"] == report.SUMMARY_FORMAT
    assert data["header"] == {"session": "vulkan"}
    assert [c["verdict"] for c in data["cells"]] == ["REPRODUCED", "FAIL"]
    assert [c["matched"] for c in data["cells"]] == [True, False]
    assert data["all_matched"] is False
    second = data["cells"][1]
    assert (second["ref"], second["variant"], second["icd"]) == ("3.3.0", "vulkan-buffer", "swiftshader")
    assert second["losses"] == [2.3, 2.1] and second["accuracy"] == 0.7
    assert second["checks"][0]["name"] == "tracks_cpu" and second["checks"][0]["passed"] is False


def test_summary_all_matched_when_every_cell_matched(tmp_path: Path) -> None:
    rows = two_rows(tmp_path)[:1]
    assert report.summary({}, rows)["all_matched"] is True


def test_write_summary_is_json(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    report.write_summary(path, report.summary({"path": tmp_path}, two_rows(tmp_path)))
    data = json.loads(path.read_text())
    assert data["header"]["path"] == str(tmp_path)
    assert len(data["cells"]) == 2
