"""report --issue for a validation finding (issue 25): from a training session's validation records or from a
VUID reduction's summary, the VUID, the spec's words, the count, the MNN frames (or "not attributed"), the
environment and the commands to see it with MNN alone under the layer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import cli, issue
from mnnrepro.errors import ConfigError

VUID = "VUID-VkImageMemoryBarrier-oldLayout-parameter"
FIRST = (
    "vkCmdPipelineBarrier: value of pImageMemoryBarriers[0].oldLayout (144) does not fall within the begin..end "
    "range of the core VkImageLayout enumeration tokens and is not an extension added token. The Vulkan spec states: "
    "oldLayout must be a valid VkImageLayout value "
    "(https://www.khronos.org/registry/vulkan/specs/1.3-extensions/html/vkspec.html#VUID-VkImageMemoryBarrier-oldLayout-parameter)"
)


def _training(frames: list[str] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"count": 1473, "severity": "ERROR", "first": FIRST}
    if frames:
        info["frames"] = frames
    record = {
        "mode": "on",
        "status": "EXERCISED",
        "vuids": {"VUID-Listed-x": {"count": 3, "severity": "ERROR", "first": "x"}, VUID: info},
        "findings": [VUID],
        "known": ["VUID-Listed-x"],
    }
    cells = [
        {"cell": "3.6.1/vulkan-buffer/lavapipe", "ref": "3.6.1", "variant": "vulkan-buffer", "icd": "lavapipe",
         "evidence": {"validation": {"mode": "on", "status": "NOT-EXERCISED", "reason": "no canary"}}},
        {"cell": "3.6.1/vulkan-image/lavapipe", "ref": "3.6.1", "variant": "vulkan-image", "icd": "lavapipe",
         "evidence": {"validation": record, "device": "llvmpipe (LLVM 15.0.6, 256 bits)"}},
    ]  # fmt: skip
    header = {
        "session": "vulkan_validation",
        "suite": "0.1.0",
        "refs": {"3.6.1": {"commit": "d407447ed56c0000", "toolchain": {"c++": "c++ 12.2.0"}}},
        "workload": {"steps": 2, "batch_size": 64, "seed": 1},
    }
    return {"header": header, "cells": cells}


def test_the_spec_text_is_the_part_the_layer_quotes() -> None:
    said, url = issue.spec_text(FIRST)
    assert said == "oldLayout must be a valid VkImageLayout value"
    assert url.endswith("#VUID-VkImageMemoryBarrier-oldLayout-parameter")
    assert issue.spec_text("no spec here") == ("", "")


def test_a_training_finding_renders_vuid_spec_count_and_commands() -> None:
    found = issue.vuid_findings(_training())
    assert [f.cell for f in found] == ["3.6.1/vulkan-image/lavapipe"] * 2  # the NOT-EXERCISED cell has none
    f = issue.pick_vuid(found)
    assert f.vuid == VUID and f.listed == "NEW"  # findings before listed ones
    text = issue.render_vuid(f)
    assert "validation error VUID-VkImageMemoryBarrier-oldLayout-parameter" in text.splitlines()[0]
    assert "1473 time(s)" in text and "> The Vulkan spec states: oldLayout must be a valid VkImageLayout value" in text
    assert "Not attributed" in text
    assert "VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation" in text and "vk_layer_settings.txt" in text
    assert "nox -s vulkan_validation -- --ref 3.6.1 --icd lavapipe" in text
    assert f"--vuid '{VUID}'" in text and "d407447ed56c" in text


def test_attributed_frames_are_shown() -> None:
    frames = ["MNN::VulkanImage::insertMemoryBarrier (source/backend/vulkan/image/component/VulkanImage.cpp:120)"]
    text = issue.render_vuid(issue.pick_vuid(issue.vuid_findings(_training(frames)), vuid="*oldLayout*"))
    assert frames[0] in text and "Not attributed" not in text


def test_no_matching_vuid_is_an_error_naming_what_is_there() -> None:
    with pytest.raises(ConfigError, match="VUID-Listed-x"):
        issue.pick_vuid(issue.vuid_findings(_training()), vuid="VUID-None")


def _reduction(tmp_path: Path) -> Path:
    summary = {
        "session": "reduce", "ref": "3.6.1", "commit": "d407447ed56c0000", "variant": "vulkan-image",
        "icd": "lavapipe", "suite": "0.1.0", "device": "llvmpipe", "precision": "high", "original_ops": 67,
        "reduced_ops": 1, "candidate_runs": 14, "reduce_seconds": 10.1, "judged_by": "judged by the layer",
        "target": {"kind": "vuid", "vuid": "VUID-VkImageMemoryBarrier-oldLayout-*", "source": "--vuid"},
        "ops": [{"index": 3, "type": "BinaryOp MUL", "inputs": ["Cast2 (input: CPU value)"], "outputs": ["B4"]}],
        "checks": {"backend": "fails", "cpu": "passes", "standalone_build": "ok", "standalone": "fails",
                   "standalone_cpu": "passes"},
        "vuid": {"pattern": "VUID-VkImageMemoryBarrier-oldLayout-*", "mode": "on", "searched_from_ops": 62,
                 "searched_from": {VUID: 40}, "reduced": {VUID: {"count": 2, "severity": "ERROR", "first": FIRST}},
                 "reduced_other": {"VUID-Other": 1}},
        "results_dir": str(tmp_path),
    }  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    return tmp_path


def test_a_vuid_reduction_is_reported_by_report_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = _reduction(tmp_path)
    assert cli.main(["report", "--issue", str(results)]) == 0
    text = (results / "ISSUE.md").read_text()
    assert "(BinaryOp MUL: reduced from a training step, MNN 3.6.1)" in text.splitlines()[0]
    assert "2 time(s)" in text and "| 3 | BinaryOp MUL |" in text
    assert "longest prefix that does not crash (62 ops" in text
    assert "./build/repro vulkan" in text and "| grep -c" in text
    assert str(tmp_path) not in text


def test_report_issue_vuid_on_a_training_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(_training()))
    assert cli.main(["report", "--issue", str(tmp_path), "--vuid", VUID]) == 0
    assert VUID in (tmp_path / "ISSUE.md").read_text().splitlines()[0]


def test_ops_results_are_refused_with_what_to_do_instead() -> None:
    """An ops summary has no header of a training session: the report says it takes another kind of results."""
    from mnnrepro import issue
    from mnnrepro.errors import ConfigError

    with pytest.raises(ConfigError, match="not written up yet") as caught:
        issue.vuid_findings({"session": "ops", "cells": []})
    assert "reduce --vuid" in (caught.value.hint or "")
