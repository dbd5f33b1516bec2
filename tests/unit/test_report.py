"""report: the verdict table and summary.json."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

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
            "signature": ["MNN::ConvolutionCommon::getConvParameters", "MNN::VulkanDeconvolution::VulkanDeconvolution"],
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


# --- write_all: junit.xml, summary.md, loss.png, the GitHub step summary ------------------------------------


@pytest.fixture(autouse=True)
def _no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """On GitHub the runner sets GITHUB_STEP_SUMMARY; unit tests must not write into the real one."""
    monkeypatch.delenv(report.STEP_SUMMARY_ENV, raising=False)


HEADER: dict[str, Any] = {
    "session": "vulkan",
    "ref": "3.3.0",
    "commit": "5047919a1ae594d090ee54c7ea3403a9dee8cad4",
    "toolchain": {"c++": "c++ (Debian 12.2.0-14+deb12u1) 12.2.0", "cmake": "cmake version 3.25.1"},
    "runner": "host",
    "icds": {"lavapipe": "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json"},
    "workload": {"steps": 2, "batch_size": 64, "seed": 1, "precision": "high"},
}


def four_rows(tmp_path: Path) -> list[tuple[CellRun, Verdict]]:
    """CPU PASS (trained), image REPRODUCED (crashed), buffer FAIL (trained, missed), buffer NOT-EXERCISED."""
    cpu = Verdict("PASS", True, "PASS", "trained 2 steps", evidence={"device": "MNN CPU backend", "duration_s": 1.5})
    not_exercised = Verdict(
        "NOT-EXERCISED",
        False,
        "FIXED",
        "Vulkan plugin not loaded: libvulkan.so not found",
        evidence={"device": None, "requested_backend": "vulkan", "active_backend": "cpu", "exit_code": 4},
    )
    return [
        row(tmp_path, Cell("3.3.0", "cpu", "-"), cpu, [2.29, 2.05]),
        *two_rows(tmp_path),
        row(tmp_path, Cell("3.3.0", "vulkan-buffer", "lavapipe"), not_exercised, []),
    ]


def written(tmp_path: Path, rows: list[tuple[CellRun, Verdict]], header: dict[str, Any] | None = None) -> list[Path]:
    return report.write_all(tmp_path / "results", report.summary(header or HEADER, rows))


def junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()
    cases = root.findall(".//testcase")
    assert len({c.get("name") for c in cases}) == len(cases), "testcase names must be unique"
    return {str(c.get("name")): c for c in cases}


def props(case: ET.Element) -> dict[str, str]:
    return {str(p.get("name")): str(p.get("value")) for p in case.iterfind("properties/property")}


def test_write_all_writes_every_report_and_returns_them(tmp_path: Path) -> None:
    files = written(tmp_path, four_rows(tmp_path))
    results = tmp_path / "results"
    names = {"summary.json", "junit.xml", "summary.md", "loss.png"}
    assert {p.name for p in files} == names
    assert all(p.parent == results and p.is_file() and p.stat().st_size > 0 for p in files)
    assert {p.name for p in results.iterdir()} == names  # nothing else, nothing left out of the list
    data = json.loads((results / "summary.json").read_text())
    assert data["format"] == report.SUMMARY_FORMAT and len(data["cells"]) == 4


def test_junit_has_one_testcase_per_cell_and_fails_only_mismatches(tmp_path: Path) -> None:
    written(tmp_path, four_rows(tmp_path))
    path = tmp_path / "results" / "junit.xml"
    cases = junit_cases(path)
    assert list(cases) == [
        "3.3.0/cpu/-",
        "3.3.0/vulkan-image/lavapipe",
        "3.3.0/vulkan-buffer/swiftshader",
        "3.3.0/vulkan-buffer/lavapipe",
    ]
    assert cases["3.3.0/vulkan-image/lavapipe"].get("classname") == "3.3.0/vulkan-image"
    failing = {name for name, case in cases.items() if case.find("failure") is not None}
    assert failing == {"3.3.0/vulkan-buffer/swiftshader", "3.3.0/vulkan-buffer/lavapipe"}
    root = ET.parse(path).getroot()
    assert root.find(".//skipped") is None and root.find(".//error") is None
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "0")
    fail = cases["3.3.0/vulkan-buffer/swiftshader"].find("failure")
    assert fail is not None and fail.get("type") == "FAIL"
    assert "expected FIXED" in str(fail.get("message")) and "tracks_cpu" in str(fail.get("message"))
    assert "check tracks_cpu failed: too far" in str(fail.text)  # the evidence travels with the failure


def test_junit_not_exercised_is_a_failure_never_a_skip(tmp_path: Path) -> None:
    rows = four_rows(tmp_path)
    # Even if an expectation ever accepted it, NOT-EXERCISED must not pass (or be skipped) in JUnit.
    rows[3][1].matched = True
    written(tmp_path, rows)
    case = junit_cases(tmp_path / "results" / "junit.xml")["3.3.0/vulkan-buffer/lavapipe"]
    fail = case.find("failure")
    assert fail is not None and fail.get("type") == "NOT-EXERCISED"
    assert "libvulkan.so not found" in str(fail.get("message"))
    assert case.find("skipped") is None


def test_junit_properties_carry_device_signal_stage_and_the_run_header(tmp_path: Path) -> None:
    written(tmp_path, four_rows(tmp_path))
    path = tmp_path / "results" / "junit.xml"
    image = props(junit_cases(path)["3.3.0/vulkan-image/lavapipe"])
    assert (image["device"], image["signal"], image["stage"]) == ("llvmpipe", "SIGSEGV", "sgd_step[step 0]")
    assert (
        image["signature"]
        == "MNN::ConvolutionCommon::getConvParameters <- MNN::VulkanDeconvolution::VulkanDeconvolution"
    )
    assert image["verdict"] == "REPRODUCED" and image["matched"] == "true"
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    header = props(suite)
    assert "5047919a1ae594d090ee54c7ea3403a9dee8cad4" in header["MNN"]
    assert "12.2.0" in header["toolchain"] and header["runner"] == "host"
    assert "lvp_icd" in header["ICD/device lavapipe"] and "llvmpipe" in header["ICD/device lavapipe"]


def test_junit_survives_characters_xml_cannot_carry(tmp_path: Path) -> None:
    rows = two_rows(tmp_path)
    rows[1][1].reason = "driver said \x1b[31mboom\x00 & <fell over>"
    written(tmp_path, rows)
    fail = junit_cases(tmp_path / "results" / "junit.xml")["3.3.0/vulkan-buffer/swiftshader"].find("failure")
    assert fail is not None and "boom" in str(fail.get("message")) and "& <fell over>" in str(fail.get("message"))


def md_table(text: str) -> dict[str, list[str]]:
    """The verdict table of summary.md: cell id -> its columns (escaped pipes kept inside their column)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("| 3.3.0/"):
            cols = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cols[0]] = cols
    return rows


def test_summary_md_has_header_table_rows_and_verdicts(tmp_path: Path) -> None:
    written(tmp_path, four_rows(tmp_path))
    text = (tmp_path / "results" / "summary.md").read_text()
    assert "2 of 4 cell(s) did NOT match" in text.splitlines()[0]
    assert "5047919a1ae594d090ee54c7ea3403a9dee8cad4" in text and "cmake version 3.25.1" in text
    assert "lvp_icd.x86_64.json" in text
    table = md_table(text)
    assert list(table) == [
        "3.3.0/cpu/-",
        "3.3.0/vulkan-image/lavapipe",
        "3.3.0/vulkan-buffer/swiftshader",
        "3.3.0/vulkan-buffer/lavapipe",
    ]
    assert all(len(cols) == 8 for cols in table.values())  # the pipes in "max |loss - cpu|" are escaped
    assert table["3.3.0/cpu/-"][1:4] == ["**PASS**", "PASS", "ok"]
    assert table["3.3.0/vulkan-image/lavapipe"][1:6] == [
        "**REPRODUCED**",
        "REPRODUCED",
        "ok",
        "SIGSEGV",
        "sgd_step[step 0]",
    ]
    assert table["3.3.0/vulkan-buffer/swiftshader"][1:4] == ["**FAIL**", "FIXED", "**MISMATCH**"]
    assert table["3.3.0/vulkan-buffer/lavapipe"][1:4] == ["**NOT-EXERCISED**", "FIXED", "**MISMATCH**"]
    assert "- 3.3.0/vulkan-image/lavapipe: `/results/cells/x/backtrace.txt`" in text
    assert "| tracks_cpu | **FAIL** | too far | 0.2 | 0.02 |" in text  # per-cell checks
    assert "- crash signature: MNN::ConvolutionCommon::getConvParameters <- MNN::VulkanDeconvolution" in text
    assert "![loss per step, every cell that trained](loss.png)" in text


def test_summary_md_backtrace_paths_are_relative_to_the_results_directory(tmp_path: Path) -> None:
    rows = two_rows(tmp_path)
    trace = tmp_path / "results" / "cells" / "3.3.0__vulkan-image__lavapipe" / "backtrace.txt"
    rows[0][1].evidence["backtrace"] = str(trace)
    written(tmp_path, rows)
    text = (tmp_path / "results" / "summary.md").read_text()
    assert "`cells/3.3.0__vulkan-image__lavapipe/backtrace.txt`" in text
    assert str(tmp_path) not in text.split("### Cells")[0]


def test_step_summary_is_appended_when_github_names_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    step = tmp_path / "step_summary.md"
    step.write_text("## an earlier step\n")
    monkeypatch.setenv(report.STEP_SUMMARY_ENV, str(step))
    files = written(tmp_path, four_rows(tmp_path))
    text = step.read_text()
    assert text.startswith("## an earlier step\n")  # appended, not replaced
    assert "| 3.3.0/vulkan-buffer/lavapipe | **NOT-EXERCISED** | FIXED | **MISMATCH** |" in text
    assert "](loss.png)" not in text  # the step summary cannot show the run's files; it names the artifact
    assert str(tmp_path / "results") in text
    assert step not in files
    written(tmp_path, four_rows(tmp_path))
    assert step.read_text().count("### Verdicts") == 2


def test_no_step_summary_without_github(tmp_path: Path) -> None:
    written(tmp_path, four_rows(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_loss_png_is_a_png_when_cells_trained(tmp_path: Path) -> None:
    files = written(tmp_path, four_rows(tmp_path))
    png = tmp_path / "results" / "loss.png"
    assert png in files
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000  # a drawn figure, not an empty file


def test_loss_png_skipped_when_no_cell_trained(tmp_path: Path) -> None:
    rows = [r for r in four_rows(tmp_path) if not r[0].record.losses]
    assert rows
    results = tmp_path / "results"
    results.mkdir()
    (results / "loss.png").write_bytes(PNG_MAGIC)  # a stale plot from an earlier run must not survive
    files = report.write_all(results, report.summary(HEADER, rows))
    assert not (results / "loss.png").exists()
    assert "loss.png" not in {p.name for p in files}
    text = (results / "summary.md").read_text()
    assert "loss.png not written: no cell trained" in text and "](loss.png)" not in text


def test_write_all_rebuilds_reports_from_a_saved_summary(tmp_path: Path) -> None:
    first = tmp_path / "first"
    report.write_all(first, report.summary({**HEADER, "source": tmp_path}, four_rows(tmp_path)))
    saved = json.loads((first / "summary.json").read_text())
    again = tmp_path / "again"
    files = report.write_all(again, saved)
    assert {p.name for p in files} == {"summary.json", "junit.xml", "summary.md", "loss.png"}
    assert (again / "summary.md").read_text() == (first / "summary.md").read_text()


def test_reports_name_every_ref_of_a_multi_ref_session_with_its_commit(tmp_path: Path) -> None:
    old = Cell("47027e10", "vulkan-image", "lavapipe")
    reproduced = two_rows(tmp_path)[0][1]
    rows = [*four_rows(tmp_path), row(tmp_path, old, reproduced, [])]
    header = {
        **HEADER,
        "refs": {
            "3.3.0": {"commit": HEADER["commit"], "toolchain": HEADER["toolchain"]},
            "47027e10": {
                "commit": "47027e10992473eb4da4c536542fbefd6e5fcc1c",
                "compat": "force-include <cstring>",
                "toolchain": HEADER["toolchain"],
            },
        },
    }
    written(tmp_path, rows, header)
    text = (tmp_path / "results" / "summary.md").read_text()
    assert "MNN 3.3.0 (5047919a1a), 47027e10 (47027e1099)" in text.splitlines()[0]
    assert "| compatibility measure 47027e10 | force-include <cstring> |" in text
    assert text.count("| toolchain |") == 1  # the same toolchain for both refs: one row
    suite = ET.parse(tmp_path / "results" / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert "47027e10992473eb4da4c536542fbefd6e5fcc1c" in props(suite)["MNN 47027e10"]
    assert "47027e10/vulkan-image/lavapipe" in junit_cases(tmp_path / "results" / "junit.xml")


def test_placement_table_names_the_ops_that_fell_back() -> None:
    data = {
        "cells": [
            {
                "cell": "r/vulkan-image/x",
                "placement": {
                    "forward": {
                        "ops": {"cpu": 5, "vulkan": 20},
                        "cpu_ops": {"Convolution": 2, "Cast": 2},
                        "backend_switches": 7,
                    }
                },
            },
            {"cell": "r/cpu/-", "placement": {}},
        ]
    }
    text = report.placement_table(data)
    assert "Convolution x2" in text and "r/vulkan-image/x" in text and " 7" in text
    assert "r/cpu/-" not in text
    assert report.placement_table({"cells": []}) == ""
