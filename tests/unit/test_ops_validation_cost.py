"""ops run --vk-validation, its cost (issue 25): each test's layer log kept gzipped once its relay closed and read back
through the same chunked parse, and the time limits under the layer fitted by a factor per mode (data:
fixtures/ops/expectations.toml [validation_timeout_factor])."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnnrepro import validation
from mnnrepro.cells import Cell
from mnnrepro.errors import FixtureError
from mnnrepro.settings import Settings
from mnnrepro.workloads.ops import judge as opjudge
from mnnrepro.workloads.ops import optest, optest_batch, opvalidation
from mnnrepro.workloads.ops import session as opsession

STATUS = opvalidation.STATUS_ID
CANARY_OK = {"status": validation.EXERCISED, "reason": "the layer reported the canary"}


def _status(settings: Path) -> str:
    """The layer's status message as 1.3.239 writes it at vkCreateInstance (as test_ops_validation.py's)."""
    return (
        f"{STATUS}(INFO / SPEC): msgNum: -671457468 - Validation Information: [ {STATUS} ] | MessageID = 0xd7fa5f44 | "
        "Khronos Validation Layer Active:\n"
        f"    Settings File: Found at {settings} specified by environment variable (VK_LAYER_SETTINGS_PATH).\n"
        "    Current Enables: None.\n"
    )


def _error(vuid: str, n: int) -> str:
    return f"{vuid}(ERROR / SPEC): msgNum: 1 - Validation Error: [ {vuid} ] | MessageID = 0x1 | message {n}\n"


def _log(directory: Path, instances: int = 3, errors: int = 5) -> str:
    settings = directory / validation.SETTINGS_FILE
    parts = []
    for i in range(instances):
        parts.append(_status(settings))
        parts += [_error("VUID-VkImageMemoryBarrier-sType-sType", i * errors + k) for k in range(errors)]
    return "".join(parts)


def _batch(tmp_path: Path, tests: list[dict[str, object]]) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"jobs": 2, "tests": tests}))
    out = subprocess.run([sys.executable, str(optest.BATCH_SCRIPT), str(plan)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# -- the log kept gzipped ---------------------------------------------------------------------------------------------
def test_batch_gzips_a_tests_log_once_its_relay_closed_and_the_canary_stays_plain(tmp_path: Path) -> None:
    """The layer's text goes through the FIFO into the log, then the whole log is gzipped beside it and the plain one
    removed; the canary's relay spec asks for no compression (validation.assess reads its plain log)."""
    writer = (
        "import os\nfor i in range(2):\n    with open(os.environ['FIFO'], 'w') as f:\n        f.write(f'line {i}\\n')\n"
    )
    tests = []
    for name, compress in (("test", True), ("canary", False)):
        _, relay = opvalidation.prepare_run(tmp_path / name, "on", compress=compress)
        tests.append({"name": name, "dir": str(tmp_path / name), "argv": [sys.executable, "-c", writer],
                      "env": {"FIFO": relay["fifo"]}, "timeout_s": 30, "validation": relay})  # fmt: skip
    _batch(tmp_path, tests)
    packed = tmp_path / "test" / opvalidation.LOG_GZ
    assert gzip.decompress(packed.read_bytes()) == b"line 0\nline 1\n"
    assert not (tmp_path / "test" / validation.LOG).exists() and not Path(f"{packed}.tmp").exists()
    assert (tmp_path / "canary" / validation.LOG).read_text() == "line 0\nline 1\n"
    assert not (tmp_path / "canary" / opvalidation.LOG_GZ).exists()


def test_batch_leaves_a_log_the_relay_could_not_keep_whole_plain_and_the_test_not_exercised(tmp_path: Path) -> None:
    """A relay failure is never hidden behind a tidy .gz: the plain log stays, and the harness calls the test
    NOT-EXERCISED for validation (never "0 errors")."""
    _, relay = opvalidation.prepare_run(tmp_path / "t", "on")
    Path(relay["log"]).mkdir()  # the log cannot be opened: the relay drains the FIFO and writes `failed`
    writer = "import os\nwith open(os.environ['FIFO'], 'w') as f:\n    f.write('x\\n')\n"
    _batch(tmp_path, [{"name": "t", "dir": str(tmp_path / "t"), "argv": [sys.executable, "-c", writer],
                       "env": {"FIFO": relay["fifo"]}, "timeout_s": 30, "validation": relay}])  # fmt: skip
    assert (tmp_path / "t" / validation.RELAY_FAILED).is_file()
    assert not (tmp_path / "t" / opvalidation.LOG_GZ).exists()
    record = opvalidation.assess_test(tmp_path / "t", "on", CANARY_OK)
    assert record["status"] == validation.NOT_EXERCISED and "kept whole" in record["reason"]


def test_compress_keeps_the_plain_log_when_the_gz_cannot_be_written(tmp_path: Path) -> None:
    log = tmp_path / validation.LOG
    log.write_text("kept\n")
    optest_batch.compress(str(log), str(tmp_path / "no-such-dir" / opvalidation.LOG_GZ))
    assert log.read_text() == "kept\n" and list(tmp_path.iterdir()) == [log]
    optest_batch.compress(str(log), str(tmp_path / opvalidation.LOG_GZ))
    assert not log.exists() and gzip.decompress((tmp_path / opvalidation.LOG_GZ).read_bytes()) == b"kept\n"


@pytest.mark.parametrize("chunk", [1, 7, opvalidation.CHUNK_LINES])
def test_a_gzipped_log_reads_as_its_plain_text_in_any_chunking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """The record of a .gz log is the record of the same text left plain: counts, first message, instances; its size
    before and after is recorded (the cell's table sums them)."""
    monkeypatch.setattr(opvalidation, "CHUNK_LINES", chunk)
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    for d in (plain, packed):
        opvalidation.prepare_run(d, "on")
    (plain / validation.LOG).write_text(_log(plain))
    (packed / opvalidation.LOG_GZ).write_bytes(gzip.compress(_log(packed).encode()))
    a = opvalidation.assess_test(plain, "on", CANARY_OK)
    b = opvalidation.assess_test(packed, "on", CANARY_OK)
    assert b["status"] == validation.EXERCISED and b["instances"] == 3
    assert b["vuids"] == a["vuids"] and b["vuids"]["VUID-VkImageMemoryBarrier-sType-sType"]["count"] == 15
    assert b["vuids"]["VUID-VkImageMemoryBarrier-sType-sType"]["first"].endswith("message 0")
    assert b["log"] == str(packed / opvalidation.LOG_GZ)
    assert (
        b["log_bytes"] == len(_log(packed).encode())
        and b["stored_bytes"] == (packed / opvalidation.LOG_GZ).stat().st_size
    )
    table = opvalidation.cell_table({"t": b}, CANARY_OK, [], ("3.3.0", "3.3.0", "vulkan-image", "lavapipe"), "on")
    assert (table["log_bytes"], table["stored_bytes"]) == (b["log_bytes"], b["stored_bytes"])
    assert "kept 0.0 MB" in opvalidation.one_line(table)


# -- limits under the layer -------------------------------------------------------------------------------------------
_TOML = """format = 1
timeout_s = 120
{extra}
[[slow]]
refs = ["3.3.0"]
variant = "vulkan-buffer"
icd = "lavapipe"
test = "op/matmul"
timeout_s = 240
measured = "a measurement"
"""


def _expectations(tmp_path: Path, extra: str) -> opjudge.Expectations:
    path = tmp_path / "expectations.toml"
    path.write_text(_TOML.format(extra=extra))
    return opjudge.load_expectations(path)


def test_limits_under_the_layer_are_the_limits_times_the_modes_factor(tmp_path: Path) -> None:
    e = _expectations(tmp_path, "[validation_timeout_factor]\non = 4\nsync = 5\n")
    cell = ("3.3.0", "3.3.0", "vulkan-buffer", "lavapipe")
    assert e.limit(*cell, "op/add", 120) == 120 and e.limit(*cell, "op/matmul", 120) == 240
    assert e.limit(*cell, "op/add", 120, "on") == 480 and e.limit(*cell, "op/matmul", 120, "on") == 960
    assert e.limit(*cell, "op/matmul", 120, "sync") == 1200
    # Without the table, the layer changes no limit.
    assert _expectations(tmp_path, "").limit(*cell, "op/matmul", 120, "on") == 240


@pytest.mark.parametrize(
    "table",
    [
        "[validation_timeout_factor]\non = 0.5\n",
        "[validation_timeout_factor]\noff = 2\n",
        "validation_timeout_factor = 3\n",
    ],
)
def test_a_factor_that_would_shorten_a_limit_or_name_no_layer_mode_is_refused(tmp_path: Path, table: str) -> None:
    with pytest.raises(FixtureError, match="validation_timeout_factor"):
        _expectations(tmp_path, table)


def test_the_committed_expectations_give_both_layer_modes_a_factor() -> None:
    e = opjudge.load_expectations()
    assert e.layer_factor("on") > 1 and e.layer_factor("sync") >= e.layer_factor("on") and e.layer_factor("off") == 1


def test_only_a_vulkan_cell_under_the_layer_gets_the_factor(tmp_path: Path) -> None:
    e = _expectations(tmp_path, "[validation_timeout_factor]\non = 4\n")
    settings = Settings(vk_validation="on")
    gpu, cpu = Cell("3.3.0", "vulkan-buffer", "lavapipe"), Cell("3.3.0", "cpu", "-")
    assert opsession.layer_mode(settings, gpu) == "on" and opsession.layer_mode(settings, cpu) == "off"
    tests = ["op/add", "op/matmul"]
    assert opsession._limits(e, gpu, "3.3.0", tests, 120, opsession.layer_mode(settings, gpu)) == {
        "op/add": 480,
        "op/matmul": 960,
    }
    assert opsession._limits(e, cpu, "3.3.0", tests, 120, opsession.layer_mode(settings, cpu)) == {
        "op/add": 120,
        "op/matmul": 120,
    }
    off = Settings(vk_validation="off")
    assert opsession._limits(e, gpu, "3.3.0", tests, 120, opsession.layer_mode(off, gpu))["op/matmul"] == 240


# -- sync mode's evidence ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("enables", "exercised"),
    [
        # As 1.3.239 writes it (seen 2026-12-06, 3.3.0, lavapipe): the enable named without _EXT.
        ("VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION", True),
        ("VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT", True),
        ("None", False),
        ("VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_OTHER", False),
    ],
)
def test_sync_mode_counts_a_test_whose_status_message_lists_the_enable_as_the_layer_names_it(
    tmp_path: Path, enables: str, exercised: bool
) -> None:
    """Before, every test of a sync cell was NOT-EXERCISED on the real layer: its status message says
    "Current Enables: VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION." and the check wanted the _EXT name."""
    d = tmp_path / "t"
    opvalidation.prepare_run(d, "sync")
    status = _status(d / validation.SETTINGS_FILE).replace("Current Enables: None.", f"Current Enables: {enables}.")
    (d / validation.LOG).write_text(status + _error("SYNC-HAZARD-WRITE-AFTER-WRITE", 0))
    record = opvalidation.assess_test(d, "sync", CANARY_OK)
    assert (record["status"] == validation.EXERCISED) is exercised, record["reason"]
    if not exercised:
        assert "ran without sync validation" in record["reason"]
