"""Validation rows that name the device they were learned on (issue 22's keys, issue 25's GPU machine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnnrepro import validation
from mnnrepro.contract import Device
from mnnrepro.errors import ConfigError

NVIDIA = Device("NVIDIA H100 80GB HBM3", "NVIDIA", "580.159.04")
NV_ROW = (
    '[[known]]\nrefs = ["3.6.1"]\nvariant = "vulkan-image"\nicd = "host"\n'
    'vendor = "NVIDIA"\nvuid = "{}"\nreason = "r"\n'
)
LAVAPIPE = Device("llvmpipe (LLVM 15.0.6, 256 bits)", "Mesa", "Mesa 22.3.6")


def rows(tmp_path: Path, text: str) -> list[validation.Known]:
    path = tmp_path / "validation.toml"
    path.write_text(text)
    return validation.load_known(path)


def test_a_row_for_the_host_icd_must_name_its_device(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="covers the host ICD"):
        rows(
            tmp_path, '[[known]]\nrefs = ["3.6.1"]\nvariant = "vulkan-image"\nicd = "host"\nvuid = "V"\nreason = "r"\n'
        )
    with pytest.raises(ConfigError, match="covers the host ICD"):
        rows(tmp_path, '[[known]]\nrefs = ["3.6.1"]\nvariant = "vulkan-image"\nvuid = "V"\nreason = "r"\n')  # icd "*"


def test_a_vendor_row_holds_on_that_vendor_only(tmp_path: Path) -> None:
    [row] = rows(
        tmp_path,
        NV_ROW.format("V"),
    )
    assert row.covers("3.6.1", None, "vulkan-image", "host", "on", NVIDIA)
    assert not row.covers("3.6.1", None, "vulkan-image", "host", "on", LAVAPIPE)
    assert not row.covers("3.6.1", None, "vulkan-image", "host", "on", None)  # an unknown device: never
    assert "vendor='NVIDIA'" in row.describe()


def test_assess_judges_against_the_cell_device(tmp_path: Path) -> None:
    [row] = rows(
        tmp_path,
        NV_ROW.format("VUID-X"),
    )
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "events.jsonl").write_text(json.dumps({"v": 1, "event": "vk_canary", "made": True, "count": 1}) + "\n")
    line = "{id}(ERROR / SPEC): msgNum: 1 - Validation Error: [ {id} ] | MessageID = 0x1 | text\n"
    (cell / validation.LOG).write_text(line.format(id=validation.CANARY_VUID) + line.format(id="VUID-X"))
    args = dict(ref="3.6.1", version=None, variant="vulkan-image", icd="host", mode="on", known=[row])
    on_nvidia = validation.assess(cell, **args, device=NVIDIA)  # type: ignore[arg-type]
    assert (
        on_nvidia["status"] == validation.EXERCISED and on_nvidia["findings"] == [] and on_nvidia["known"] == ["VUID-X"]
    )
    elsewhere = validation.assess(cell, **args, device=LAVAPIPE)  # type: ignore[arg-type]
    assert elsewhere["findings"] == ["VUID-X"]
