"""The Khronos validation layer on Vulkan cells (issue 25): the settings file, the cell's environment and canary
argument, the FIFO relay, log parsing (a log captured at 3.3.0 vulkan-image on lavapipe), the canary rule
(NOT-EXERCISED, never "0 errors"), findings and stale rows, the setting and the session."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from mnnrepro import validation
from mnnrepro.cells import Cell, run_cell
from mnnrepro.errors import ConfigError
from mnnrepro.icd import Icd
from mnnrepro.runner import HostRunner
from mnnrepro.settings import load
from mnnrepro.workloads.train.session import SESSIONS

SAMPLE = Path(__file__).with_name("data") / "validation_3.3.0_image_lavapipe.log"
CANARY = {"v": 1, "event": "vk_canary", "t": 0.1, "vuid": validation.CANARY_VUID, "made": True, "count": 1}
ROW = validation.Known(("3.3.0",), "vulkan-image", "*", "VUID-VkImageMemoryBarrier-sType-sType", "seen", "#4015")
ROOT = Path(__file__).resolve().parents[2]


def test_settings_file_logs_errors_and_warnings_to_the_cells_fifo_without_a_limit(tmp_path: Path) -> None:
    env = validation.prepare_cell(tmp_path, "on")
    text = (tmp_path / "vk_layer_settings.txt").read_text()
    lines = dict(line.split(" = ", 1) for line in text.splitlines())
    assert lines["khronos_validation.debug_action"] == "VK_DBG_LAYER_ACTION_LOG_MSG"
    assert lines["khronos_validation.log_filename"] == str(tmp_path / "validation.fifo")
    assert lines["khronos_validation.report_flags"] == "error,warn"
    assert lines["khronos_validation.enable_message_limit"] == "false"
    assert "khronos_validation.enables" not in lines
    assert env == {
        "VK_INSTANCE_LAYERS": "VK_LAYER_KHRONOS_validation",
        "VK_LAYER_SETTINGS_PATH": str(tmp_path / "vk_layer_settings.txt"),
    }


def test_sync_mode_enables_synchronization_validation(tmp_path: Path) -> None:
    text = validation.settings_text(tmp_path / "v.fifo", "sync")
    assert "khronos_validation.enables = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT" in text
    with pytest.raises(ValueError):
        validation.settings_text(tmp_path / "v.fifo", "off")


def test_relay_keeps_every_instances_messages(tmp_path: Path) -> None:
    """The layer reopens log_filename with "w" per VkInstance; through the FIFO nothing is truncated."""
    with validation.relay(tmp_path) as log:
        fifo = tmp_path / "validation.fifo"
        for n in range(3):  # three instances, each opening the file anew
            with open(fifo, "w") as f:
                f.write(f"message {n}\n")
    assert log.read_text() == "message 0\nmessage 1\nmessage 2\n"
    assert not fifo.exists()
    assert not any(t.name.startswith("validation-relay") for t in threading.enumerate())


def test_a_log_the_relay_cannot_keep_is_not_exercised_and_the_pipe_still_drains(tmp_path: Path) -> None:
    """A log that cannot be written (here: a directory in its place) loses messages: the relay keeps draining the
    FIFO, so the layer's writes never stall the driver, and the cell's counts are NOT-EXERCISED, never short."""
    (tmp_path / "validation.log").mkdir()
    with validation.relay(tmp_path):
        with open(tmp_path / "validation.fifo", "w") as f:
            f.write("x" * (1 << 18))  # four times a pipe's buffer: would block if nobody drained it
    assert (tmp_path / validation.RELAY_FAILED).is_file()
    (tmp_path / "validation.log").rmdir()
    (tmp_path / "validation.log").write_text(SAMPLE.read_text())  # even a whole-looking log does not count
    record = _assess(_cell_dir(tmp_path, None, CANARY), [ROW])
    assert record["status"] == validation.NOT_EXERCISED and record["vuids"] == {}
    assert "could not be kept whole" in str(record["reason"])


def test_a_writer_that_outlives_the_driver_does_not_hold_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process the driver left behind keeps writing to the FIFO: the relay gives up after its grace time, says
    the log is not whole (NOT-EXERCISED), and returns instead of reading forever."""
    monkeypatch.setattr(validation, "RELAY_GRACE_S", 0.5)
    stop = threading.Event()

    def writer() -> None:
        with open(tmp_path / "validation.fifo", "w") as f:
            while not stop.is_set():
                f.write("x\n")
                f.flush()
                time.sleep(0.01)

    started = time.monotonic()
    with validation.relay(tmp_path):
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        time.sleep(0.2)
    took = time.monotonic() - started
    stop.set()
    assert took < 5
    assert "still written" in (tmp_path / validation.RELAY_FAILED).read_text()


def test_parse_log_counts_per_vuid_with_the_first_message() -> None:
    parsed = validation.parse_log(SAMPLE.read_text())
    assert parsed.counts == {
        validation.CANARY_VUID: 1,
        "VUID-VkImageMemoryBarrier-sType-sType": 2,
        "UNASSIGNED-CoreValidation-DrawState-InvalidImageLayout": 1,
    }
    first = parsed.first["VUID-VkImageMemoryBarrier-sType-sType"]
    assert first.startswith("vkCmdPipelineBarrier") and "VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER" in first
    assert parsed.severity["VUID-VkImageMemoryBarrier-sType-sType"] == "ERROR"


def _cell_dir(tmp_path: Path, log: str | None, canary: dict[str, object] | None) -> Path:
    if log is not None:
        (tmp_path / "validation.log").write_text(log)
    events = [{"v": 1, "event": "start", "t": 0.0}] + ([canary] if canary else [])
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return tmp_path


def _assess(result_dir: Path, known: list[validation.Known], icd: str = "lavapipe") -> dict[str, object]:
    return validation.assess(
        result_dir, ref="3.3.0", version="3.3.0", variant="vulkan-image", icd=icd, mode="on", known=known
    )


def test_counts_leave_the_canary_out_and_name_unlisted_vuids(tmp_path: Path) -> None:
    record = _assess(_cell_dir(tmp_path, SAMPLE.read_text(), CANARY), [ROW])
    assert record["status"] == validation.EXERCISED
    vuids = record["vuids"]
    assert isinstance(vuids, dict)
    assert {v: i["count"] for v, i in vuids.items()} == {
        "VUID-VkImageMemoryBarrier-sType-sType": 2,
        "UNASSIGNED-CoreValidation-DrawState-InvalidImageLayout": 1,
    }
    assert record["findings"] == ["UNASSIGNED-CoreValidation-DrawState-InvalidImageLayout"]
    assert record["known"] == ["VUID-VkImageMemoryBarrier-sType-sType"]
    assert record["stale"] == []


def test_a_listed_vuid_that_did_not_appear_is_stale(tmp_path: Path) -> None:
    gone = validation.Known(("3.3.0",), "vulkan-image", "*", "VUID-gone-00001", "seen once")
    other_ref = validation.Known((">=3.4.0",), "vulkan-image", "*", "VUID-later-00002", "not this ref")
    sometimes = validation.Known(("3.3.0",), "vulkan-image", "*", "VUID-rare-00003", "some runs", sometimes=True)
    record = _assess(_cell_dir(tmp_path, SAMPLE.read_text(), CANARY), [ROW, gone, other_ref, sometimes])
    stale = record["stale"]
    assert isinstance(stale, list) and len(stale) == 1 and stale[0].startswith("VUID-gone-00001")


@pytest.mark.parametrize(
    ("log", "canary"),
    [
        (None, CANARY),  # the layer wrote nothing: not loaded
        ("", CANARY),
        (SAMPLE.read_text().replace(validation.CANARY_VUID, "VUID-other"), CANARY),  # the canary not reported
        (SAMPLE.read_text(), None),  # the driver made no canary call
        (SAMPLE.read_text(), {**CANARY, "made": False, "count": 0}),
    ],
)
def test_no_canary_is_not_exercised_never_zero_errors(
    tmp_path: Path, log: str | None, canary: dict[str, object] | None
) -> None:
    record = _assess(_cell_dir(tmp_path, log, canary), [ROW])
    assert record["status"] == validation.NOT_EXERCISED
    assert record["vuids"] == {} and record["findings"] == [] and record["stale"] == []
    assert validation.NOT_EXERCISED in validation.one_line(record)


def test_known_rows_are_data_and_checked(tmp_path: Path) -> None:
    rows = validation.load_known()
    assert any(r.vuid == "VUID-VkImageMemoryBarrier-sType-sType" and r.upstream == "alibaba/MNN#4015" for r in rows)
    assert all(r.reason for r in rows)
    bad = tmp_path / "v.toml"
    bad.write_text('[[known]]\nrefs = ["3.3.0"]\nvuid = "VUID-x"\nreason = "r"\nbogus = 1\n')
    with pytest.raises(ConfigError):
        validation.load_known(bad)


def test_a_row_with_a_list_of_icds_is_one_row_per_icd(tmp_path: Path) -> None:
    rows_file = tmp_path / "v.toml"
    rows_file.write_text(
        '[[known]]\nrefs = ["3.3.0"]\nicd = ["lavapipe", "swiftshader"]\nvuid = "VUID-x"\nreason = "r"\n'
    )
    rows = validation.load_known(rows_file)
    assert [r.icd for r in rows] == ["lavapipe", "swiftshader"]
    assert rows[1].covers("3.3.0", "3.3.0", "vulkan-image", "swiftshader")
    assert not any(r.covers("3.3.0", "3.3.0", "vulkan-image", "host") for r in rows)


def test_a_family_row_lists_every_member_and_is_stale_only_when_none_appears(tmp_path: Path) -> None:
    family = validation.Known(
        ("3.3.0",), "vulkan-image", "*", "VUID-VkImageMemoryBarrier-oldLayout-012[0-9][0-9]", "unset memory"
    )
    member = "VUID-VkImageMemoryBarrier-oldLayout-01213"
    log = SAMPLE.read_text() + (
        f"{member}(ERROR / SPEC): msgNum: 1 - Validation Error: [ {member} ] Object 0: handle = 0x1, "
        "type = VK_OBJECT_TYPE_IMAGE; | MessageID = 0x1 | vkCmdPipelineBarrier(): oldLayout\n"
    )
    record = _assess(_cell_dir(tmp_path, log, CANARY), [ROW, family])
    assert member in cast(list[str], record["known"])
    assert member not in cast(list[str], record["findings"])
    strict = validation.Known(("3.3.0",), "vulkan-image", "*", "VUID-VkImageMemoryBarrier-oldLayout-0199[0-9]", "r")
    record = _assess(_cell_dir(tmp_path, log, CANARY), [ROW, family, strict])
    assert record["stale"] == [strict.describe()]


def test_a_sync_only_row_covers_sync_runs_only(tmp_path: Path) -> None:
    hazard = validation.Known(("3.3.0",), "vulkan-image", "*", "SYNC-HAZARD-WRITE-AFTER-WRITE", "seen", mode="sync")
    cell = _cell_dir(tmp_path, SAMPLE.read_text(), CANARY)
    on = validation.assess(
        cell, ref="3.3.0", version="3.3.0", variant="vulkan-image", icd="lavapipe", mode="on", known=[ROW, hazard]
    )
    assert on["stale"] == []  # an "on" run cannot see a hazard: not stale there
    sync = validation.assess(
        cell, ref="3.3.0", version="3.3.0", variant="vulkan-image", icd="lavapipe", mode="sync", known=[ROW, hazard]
    )
    assert sync["stale"] == [hazard.describe()]  # a sync run that did not see it: stale
    bad = tmp_path / "v.toml"
    bad.write_text('[[known]]\nrefs = ["3.3.0"]\nvuid = "VUID-x"\nreason = "r"\nmode = "fast"\n')
    with pytest.raises(ConfigError):
        validation.load_known(bad)


def test_the_setting_is_checked() -> None:
    assert load({}, environ={}).vk_validation == "off"
    assert load({"vk_validation": "sync"}, environ={}).vk_validation == "sync"
    assert load({}, environ={"MNNREPRO_VK_VALIDATION": "on"}).vk_validation == "on"
    with pytest.raises(ConfigError):
        load({"vk_validation": "yes"}, environ={})


def test_the_session_is_named_and_in_nox() -> None:
    assert SESSIONS["vulkan_validation"] == ("vulkan-image", "vulkan-buffer")
    assert "def vulkan_validation(" in (ROOT / "noxfile.py").read_text()


FAKE = """#!/bin/sh
out=""; prev=""
for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; prev="$a"; done
printf '%s\\n' "$@" > "$out/args.txt"
echo "$VK_INSTANCE_LAYERS|$VK_LAYER_SETTINGS_PATH" > "$out/env.txt"
log="$(sed -n 's/^khronos_validation.log_filename = //p' "$VK_LAYER_SETTINGS_PATH")"
echo 'VUID-x(ERROR / SPEC): msgNum: 1 - one' > "$log"
echo 'VUID-y(ERROR / SPEC): msgNum: 2 - two' > "$log"
"""


class _Args:
    def driver_args(self) -> list[str]:
        return ["--steps", "1"]


@pytest.mark.parametrize(("variant", "mode", "on"), [("vulkan-image", "on", True), ("cpu", "on", False)])
def test_run_cell_gives_a_vulkan_cell_the_layer_and_the_canary(
    tmp_path: Path, variant: str, mode: str, on: bool
) -> None:
    driver = tmp_path / "mnist_driver"
    driver.write_text(FAKE)
    driver.chmod(0o755)
    result = tmp_path / "r"
    run_cell(
        Cell("3.3.0", variant, "lavapipe" if on else "-"),
        driver=driver,
        plugin=None,
        icd=Icd("lavapipe", tmp_path / "l.json", {}) if on else None,
        workload=_Args(),
        timeout_s=30,
        runner=HostRunner(),
        result_dir=result,
        use_gdb=False,
        vk_validation=mode,
    )
    args = (result / "args.txt").read_text().split()
    assert ("--vk-canary" in args) is on
    if on:
        settings = result / "vk_layer_settings.txt"
        assert (result / "env.txt").read_text().strip() == f"VK_LAYER_KHRONOS_validation|{settings}"
        # Both "instances" of the fake driver reopened log_filename; the relay kept both messages.
        assert [line.split("(")[0] for line in (result / "validation.log").read_text().splitlines()] == [
            "VUID-x",
            "VUID-y",
        ]
    else:
        assert (result / "env.txt").read_text().strip() == "|"
        assert not (result / "vk_layer_settings.txt").exists()
