"""Where MNN issued each VUID (issue 25, validation_frames.py): the rerun's settings (break action, the other ids
muted), its argv and directory, the MNN frames of its gdb capture, the record it fills, when it is skipped, the
setting that turns it off, and the frame column of the reports. One test runs gdb_capture.py for real."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import report, validation
from mnnrepro import validation_frames as vf
from mnnrepro.cells import GDB_SCRIPT
from mnnrepro.runner import Completed, HostRunner
from mnnrepro.settings import load

SSTYPE = "VUID-VkImageMemoryBarrier-sType-sType"
ACCESS = "VUID-vkCmdPipelineBarrier-srcAccessMask-02815"
PNEXT = "VUID-VkPhysicalDeviceProperties2-pNext-pNext"
# The calling thread's frames of a real break (3.3.0 vulkan-image on lavapipe, gdb_capture.py's crash.json), cut.
TRAP_FRAMES = [
    {"function": "raise", "file": None, "line": None, "library": "/lib/x86_64-linux-gnu/libc.so.6"},
    {
        "function": "MessengerBreakCallback",
        "file": None,
        "line": None,
        "library": "/usr/lib/libVkLayer_khronos_validation.so",
    },
    {"function": "vkCmdPipelineBarrier", "file": None, "line": None, "library": "/lib/x86_64-linux-gnu/libvulkan.so.1"},
    {
        "function": "MNN::VulkanImage::insertMemoryBarrier(VkCommandBuffer_T*, ...)",
        "file": "/root/.cache/mnnrepro/src/3.3.0/source/backend/vulkan/component/VulkanImage.cpp",
        "line": 115,
        "library": "/c/variants/k/plugins/vulkan-image/libMNN_Vulkan.so",
    },
    {
        "function": "std::_Construct<MNN::VulkanDevice>",
        "file": "/usr/include/c++/12/bits/stl_construct.h",
        "line": 119,
        "library": "/c/variants/k/plugins/vulkan-image/libMNN_Vulkan.so",
    },
    {
        "function": "MNN::Tensor::copyFromHostTensor",
        "file": "/root/.cache/mnnrepro/src/3.3.0/source/core/Tensor.cpp",
        "line": 182,
        "library": "/c/variants/k/lib/libMNN.so",
    },
    {"function": "main", "file": "/work/main/native/src/main.cpp", "line": 40, "library": "/c/mnist_driver"},
]
INSERT = (
    "MNN::VulkanImage::insertMemoryBarrier(VkCommandBuffer_T*, ...) "
    + "(source/backend/vulkan/component/VulkanImage.cpp:115)"
)


def _record(*vuids: str, status: str = validation.EXERCISED) -> dict[str, Any]:
    return {
        "status": status,
        "mode": "on",
        "vuids": {v: {"count": 10 - i, "severity": "ERROR", "first": f"{v} text"} for i, v in enumerate(vuids)},
    }


def _rerun(tmp_path: Path) -> vf.Rerun:
    argv = ["/d/mnist_driver", "--backend", "vulkan", "--out", str(tmp_path), "--save-init", str(tmp_path / "init")]
    return vf.Rerun(argv, {"VK_ICD_FILENAMES": "/l.json", "VK_LAYER_SETTINGS_PATH": "/cell/settings"}, "on", 60.0)


def test_the_reruns_settings_break_and_mute_every_other_id_a_judged_cells_do_not(tmp_path: Path) -> None:
    text = validation.settings_text(tmp_path / "f", "sync", action=vf.BREAK_ACTION, mute=[ACCESS, PNEXT])
    lines = dict(line.split(" = ", 1) for line in text.splitlines())
    assert lines["khronos_validation.debug_action"] == "VK_DBG_LAYER_ACTION_LOG_MSG,VK_DBG_LAYER_ACTION_BREAK"
    assert lines["khronos_validation.message_id_filter"] == f"{ACCESS},{PNEXT}"  # 1.3.239: one comma list
    assert "SYNCHRONIZATION" in lines["khronos_validation.enables"]  # the cell's mode stays
    judged = dict(line.split(" = ", 1) for line in validation.settings_text(tmp_path / "f", "on").splitlines())
    assert judged["khronos_validation.debug_action"] == "VK_DBG_LAYER_ACTION_LOG_MSG"
    assert "khronos_validation.message_id_filter" not in judged
    with pytest.raises(ValueError):
        validation.settings_text(tmp_path / "f", "on", mute=["a,b"])


def test_rerun_argv_writes_only_its_own_directory_and_drops_the_canary(tmp_path: Path) -> None:
    cell = tmp_path / "cell"
    argv = ["d", "--out", str(cell), "--save-init", str(cell / "init"), "--dump-dir", "/x/g", "--steps", "2"]
    out = tmp_path / "cell" / "attribution" / "V"
    assert vf.rerun_argv([*argv, validation.CANARY_ARG], out) == [
        "d",
        "--out",
        str(out),
        "--save-init",
        str(out / "save-init"),
        "--dump-dir",
        str(out / "dump-dir"),
        "--steps",
        "2",
    ]


def test_mnn_frames_keep_mnns_own_and_skip_libc_the_layer_the_loader_std_and_the_driver() -> None:
    assert vf.mnn_frames({"frames": TRAP_FRAMES}) == [
        INSERT,
        "MNN::Tensor::copyFromHostTensor (source/core/Tensor.cpp:182)",
    ]
    # A static link (gdb names no library): MNN's source tree decides.
    static = {"function": "MNN::X::y", "file": "/t/source/backend/vulkan/X.cpp", "line": 3, "library": ""}
    assert vf.mnn_frames({"frames": [static]}) == ["MNN::X::y (source/backend/vulkan/X.cpp:3)"]
    assert vf.mnn_frames({"frames": TRAP_FRAMES * 3})[: vf.MAX_FRAMES] == vf.mnn_frames({"frames": TRAP_FRAMES * 3})
    assert len(vf.mnn_frames({"frames": TRAP_FRAMES * 5})) == vf.MAX_FRAMES


def _log_line(vuid: str) -> str:
    return f"{vuid}(ERROR / SPEC): msgNum: 1 - Validation Error: [ {vuid} ] | MessageID = 0x1 | text\n"


@pytest.mark.parametrize(
    ("signal", "logged", "frames", "note"),
    [
        (None, SSTYPE, [], "no trap: the rerun ended with exit code 0"),
        ("SIGSEGV", SSTYPE, [], "no trap: the rerun died of SIGSEGV"),
        ("SIGTRAP", "VUID-other", [], "the layer broke on VUID-other (not raised in the cell)"),
        ("SIGTRAP", "", [], "the layer broke with an empty log"),
        ("SIGTRAP", SSTYPE, [INSERT, "MNN::Tensor::copyFromHostTensor (source/core/Tensor.cpp:182)"], ""),
    ],
)
def test_a_vuid_is_placed_only_by_a_trap_on_its_own_message(
    signal: str | None, logged: str, frames: list[str], note: str
) -> None:
    crash = {"signal": signal, "frames": TRAP_FRAMES} if signal else None
    got, why = vf.judge_rerun(
        SSTYPE, Completed((), 0 if signal is None else 133, 1.0), crash, _log_line(logged) if logged else ""
    )
    assert got == frames
    assert why.startswith(note) if note else why == ""


class FakeLayerUnderGdb:
    """Plays gdb + the driver + the layer: reads the rerun's settings file, "raises" the first VUID of the cell's
    order that is not muted (logging it to the FIFO, then a SIGTRAP capture in crash.json), as 1.3.239 does."""

    name = "host"

    def __init__(self, raises: Sequence[str]) -> None:
        self.raises = raises
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, **kwargs: Any) -> Completed:
        env = dict(env or {})
        self.calls.append((list(argv), env))
        lines = dict(x.split(" = ", 1) for x in Path(env["VK_LAYER_SETTINGS_PATH"]).read_text().splitlines())
        muted = lines.get("khronos_validation.message_id_filter", "").split(",")
        left = [v for v in self.raises if v not in muted]
        if not left or "BREAK" not in lines["khronos_validation.debug_action"]:
            return Completed(tuple(argv), 0, 0.5)
        with open(lines["khronos_validation.log_filename"], "w") as f:
            f.write(_log_line(left[0]))
        crash = {"signal": "SIGTRAP", "frames": TRAP_FRAMES}
        (Path(env["MNNREPRO_CRASH_DIR"]) / "crash.json").write_text(json.dumps(crash))
        return Completed(tuple(argv), 133, 0.5)


def test_attribute_reruns_each_vuid_alone_in_its_own_directory_under_gdb(tmp_path: Path) -> None:
    record = _record(ACCESS, SSTYPE, PNEXT)
    (tmp_path / "validation.log").write_text("judged\n")
    runner = FakeLayerUnderGdb([validation.CANARY_VUID, ACCESS, SSTYPE, PNEXT])
    vf.attribute(record, tmp_path, _rerun(tmp_path), runner=runner, gdb_path="/usr/bin/gdb", say=lambda _: None)
    assert [record["vuids"][v]["frames"][0] for v in (ACCESS, SSTYPE, PNEXT)] == [INSERT] * 3
    assert record["attribution"]["status"] == vf.DONE and record["attribution"]["runs"] == 3
    argv, env = runner.calls[1]
    out = tmp_path / "attribution" / SSTYPE
    assert argv[:7] == ["/usr/bin/gdb", "-q", "-nx", "-batch", "-x", str(GDB_SCRIPT), "--args"]
    assert argv[argv.index("--out") + 1] == str(out)
    assert env["VK_ICD_FILENAMES"] == "/l.json" and env["MNNREPRO_CRASH_DIR"] == str(out)
    assert env["VK_LAYER_SETTINGS_PATH"] == str(out / "vk_layer_settings.txt")  # never the cell's own settings
    muted = (out / "vk_layer_settings.txt").read_text().split("message_id_filter = ")[1].split()[0].split(",")
    assert sorted(muted) == sorted([ACCESS, PNEXT, validation.CANARY_VUID])
    assert json.loads((out / "attribution.json").read_text())["frames"][0] == INSERT
    assert (tmp_path / "validation.log").read_text() == "judged\n"  # the judged cell's files stay as judged


def test_over_the_cap_and_untrapped_vuids_are_said_partial(tmp_path: Path) -> None:
    record = _record(ACCESS, SSTYPE, PNEXT)
    runner = FakeLayerUnderGdb([SSTYPE])  # ACCESS never raised in the rerun: no trap
    vf.attribute(record, tmp_path, _rerun(tmp_path), runner=runner, gdb_path="gdb", limit=2, say=lambda _: None)
    att = record["attribution"]
    assert (att["status"], att["runs"], att["not_attributed"]) == (vf.PARTIAL, 2, [ACCESS, PNEXT])
    assert record["vuids"][ACCESS]["frames"] == [] and "no trap" in record["vuids"][ACCESS]["note"]
    assert record["vuids"][PNEXT]["frames"] == [] and "2 most frequent" in record["vuids"][PNEXT]["note"]
    assert not (tmp_path / "attribution" / PNEXT).exists()


@pytest.mark.parametrize(
    ("record", "kwargs", "why"),
    [
        (_record(SSTYPE), {"gdb_path": None, "why_no_gdb": "no usable gdb with Python"}, "no gdb: no usable gdb"),
        (_record(SSTYPE), {"gdb_path": "gdb", "enabled": False}, "turned off"),
        (_record(status=validation.NOT_EXERCISED), {"gdb_path": "gdb"}, "the cell is NOT-EXERCISED"),
        (_record(), {"gdb_path": "gdb"}, "no VUID to attribute"),
    ],
)
def test_attribution_is_skipped_with_why_never_an_error(
    record: dict[str, Any], kwargs: Any, why: str, tmp_path: Path
) -> None:
    runner = FakeLayerUnderGdb([SSTYPE])
    vf.attribute(record, tmp_path, _rerun(tmp_path), runner=runner, say=lambda _: None, **kwargs)
    assert record["attribution"]["status"] == vf.SKIPPED and record["attribution"]["reason"].startswith(why)
    assert runner.calls == [] and not (tmp_path / "attribution").exists()
    if record["status"] == validation.EXERCISED and record["vuids"]:
        assert f"frames skipped: {why}" in validation.one_line(record | {"findings": [], "stale": []})


def test_rerun_of_takes_the_cells_own_environment_and_a_short_limit(tmp_path: Path) -> None:
    (tmp_path / "cell.json").write_text(json.dumps({"cell_env": {"VK_ICD_FILENAMES": "/l.json"}, "env": {"HOME": "/"}}))
    rerun = vf.rerun_of(tmp_path, ["d"], "on", timeout_s=900, ran_s=10)
    assert rerun.env == {"VK_ICD_FILENAMES": "/l.json"} and rerun.timeout_s == 90
    assert vf.rerun_of(tmp_path, ["d"], "on", timeout_s=50, ran_s=10).timeout_s == 50


# A "driver" that plays the layer's break for gdb_capture.py: it logs the one unmuted VUID, then raise(SIGTRAP).
PLAYER = """
import os, signal, sys
lines = dict(x.split(" = ", 1) for x in open(os.environ["VK_LAYER_SETTINGS_PATH"]).read().splitlines())
muted = lines["khronos_validation.message_id_filter"].split(",")
if "BREAK" in lines["khronos_validation.debug_action"] and "VUID-a" not in muted:
    with open(lines["khronos_validation.log_filename"], "w") as f:
        f.write("VUID-a(ERROR / SPEC): msgNum: 1 - Validation Error: a\\n")
    os.kill(os.getpid(), signal.SIGTRAP)
"""


@pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb with Python (gdb_capture.py)")
def test_gdb_capture_stops_at_the_layers_sigtrap_and_records_it(tmp_path: Path) -> None:
    player = tmp_path / "player.py"
    player.write_text(PLAYER)
    rerun = vf.Rerun([os.path.realpath(sys.executable), str(player), "--out", str(tmp_path)], {}, "on", 120.0)
    record = _record("VUID-a", "VUID-b")
    gdb = shutil.which("gdb")
    vf.attribute(record, tmp_path, rerun, runner=HostRunner(), gdb_path=gdb, limit=1, say=lambda _: None)
    crash = json.loads((tmp_path / "attribution" / "VUID-a" / "crash.json").read_text())
    assert crash["signal"] == "SIGTRAP"
    # Python's own frames: the trap is caught and said, but no frame of MNN is invented.
    assert record["vuids"]["VUID-a"]["frames"] == []
    assert record["vuids"]["VUID-a"]["note"].startswith("trapped, but no frame inside MNN")


def test_the_switch_is_a_setting_on_by_default() -> None:
    assert load({}, environ={}).vk_attribution is True
    assert load({}, environ={"MNNREPRO_VK_ATTRIBUTION": "off"}).vk_attribution is False
    assert load({"vk_attribution": "off"}, environ={}).vk_attribution is False


def test_reports_show_the_first_mnn_frame_or_why_there_is_none() -> None:
    record = _record(SSTYPE, PNEXT, ACCESS)
    record |= {"findings": [], "stale": [], "reason": "r"}
    record["vuids"][SSTYPE]["frames"] = [INSERT, "b"]
    record["vuids"][PNEXT] |= {"frames": [], "note": "no trap: x"}
    record["attribution"] = {"status": "partial", "reason": "r", "runs": 2, "seconds": 3.0}
    data = {"cells": [{"cell": "3.3.0/vulkan-image/lavapipe", "evidence": {"validation": record}}]}
    rows = validation.vuid_rows(data["cells"])
    assert [r[4] for r in rows] == [INSERT, "no trap: x", "not attributed: r"]
    table = report.validation_table(data)
    assert "MNN frame" in table and "MNN::VulkanImage::insertMemoryBarrier" in table
    assert "frames partial (2 rerun(s), 3.0 s)" in validation.one_line(record)
    md = "\n".join(report._md_validation(data))
    assert "| MNN frame |" in md and "VulkanImage.cpp:115" in md


def test_no_rerun_starts_once_the_cells_budget_is_spent(tmp_path: Path) -> None:
    """A cell's reruns stop at its time budget (each can take a whole cell's run under gdb): the rest are listed."""
    record = _record(ACCESS, SSTYPE, PNEXT)
    runner = FakeLayerUnderGdb([ACCESS, SSTYPE, PNEXT])
    vf.attribute(record, tmp_path, _rerun(tmp_path), runner=runner, gdb_path="gdb", budget_s=-1.0, say=lambda _: None)
    att = record["attribution"]
    assert (att["status"], att["runs"], runner.calls) == (vf.PARTIAL, 0, [])
    assert att["not_attributed"] == [ACCESS, SSTYPE, PNEXT]
    assert all("s of reruns were spent" in record["vuids"][v]["note"] for v in (ACCESS, SSTYPE, PNEXT))
