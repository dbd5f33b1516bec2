"""ops run --vk-validation (issue 25): the batch script's FIFO relay per test, the per-test evidence that the layer
was loaded (its status message naming the test's own settings file) and the cell's canary, VUIDs per test and the
cell's VUID -> tests table against fixtures/validation.toml rows with a `tests` pattern, the reports, the CLI."""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mnnrepro import validation
from mnnrepro.cells import Cell
from mnnrepro.errors import EXIT_MISMATCH, ConfigError
from mnnrepro.runner import Completed
from mnnrepro.settings import Settings
from mnnrepro.workloads.ops import judge as opjudge
from mnnrepro.workloads.ops import optest, opvalidation
from mnnrepro.workloads.ops import report as opreport
from mnnrepro.workloads.ops import session as opsession

STATUS = opvalidation.STATUS_ID
SYNC = validation.SYNC_ENABLE


def _status(settings: Path, enables: str = "None") -> str:
    """The layer's status message as 1.3.239 writes it at vkCreateInstance (seen on lavapipe, 2026-12-06)."""
    return (
        f"{STATUS}(INFO / SPEC): msgNum: -671457468 - Validation Information: [ {STATUS} ] Object 0: handle = "
        "0x55, type = VK_OBJECT_TYPE_INSTANCE; | MessageID = 0xd7fa5f44 | Khronos Validation Layer Active:\n"
        f"    Settings File: Found at {settings} specified by environment variable (VK_LAYER_SETTINGS_PATH).\n"
        f"    Current Enables: {enables}.\n"
        "    Current Disables: None.\n\n"
        "    Objects: 1\n        [0] 0x55, type: 1, name: NULL\n"
    )


def _error(vuid: str, text: str = "the spec's words") -> str:
    return f"{vuid}(ERROR / SPEC): msgNum: 1 - Validation Error: [ {vuid} ] | MessageID = 0x1 | {text}\n"


CANARY_OK = {"status": validation.EXERCISED, "reason": "the layer reported the canary"}


def _run_dir(tmp_path: Path, name: str, log: str | None, mode: str = "on") -> Path:
    d = tmp_path / name
    opvalidation.prepare_run(d, mode)
    if log is not None:
        (d / validation.LOG).write_text(log.replace("SETTINGS", str(d / validation.SETTINGS_FILE)))
    return d


# -- the settings and the relay ---------------------------------------------------------------------------------------
def test_settings_add_info_for_the_status_message_and_keep_the_rest(tmp_path: Path) -> None:
    text = opvalidation.settings_text(tmp_path / "fifo", "sync")
    assert "khronos_validation.report_flags = error,warn,info\n" in text
    assert f"khronos_validation.log_filename = {tmp_path / 'fifo'}\n" in text
    assert "khronos_validation.enable_message_limit = false" in text and SYNC in text
    env, relay = opvalidation.prepare_run(tmp_path / "t", "on")
    assert env == {
        "VK_INSTANCE_LAYERS": validation.LAYER,
        "VK_LAYER_SETTINGS_PATH": str(tmp_path / "t" / "vk_layer_settings.txt"),
    }
    assert relay["fifo"] == str(tmp_path / "t" / validation.FIFO) and relay["grace_s"] == validation.RELAY_GRACE_S
    assert "error,warn,info" in (tmp_path / "t" / validation.SETTINGS_FILE).read_text()


def _batch(tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"jobs": 2, "tests": tests}))
    return subprocess.run(
        [sys.executable, str(optest.BATCH_SCRIPT), str(plan)], capture_output=True, text=True, timeout=60
    )


def test_batch_relays_each_tests_fifo_into_its_log_across_reopens(tmp_path: Path) -> None:
    """The layer reopens log_filename (truncating a plain file) at every vkCreateInstance: each test's FIFO keeps
    every instance's messages, in its own log; a test without "validation" gets no FIFO."""
    writer = (
        "import os\nfor i in range(3):\n    with open(os.environ['FIFO'], 'w') as f:\n"
        "        f.write(f'instance {i}\\n')\n"
    )
    tests = []
    for name in ("a", "b"):
        _, relay = opvalidation.prepare_run(tmp_path / name, "on")
        argv = [sys.executable, "-c", writer]
        tests.append({"name": name, "dir": str(tmp_path / name), "argv": argv, "env": {"FIFO": relay["fifo"]},
                      "timeout_s": 30, "validation": relay})  # fmt: skip
    tests.append({"name": "plain", "dir": str(tmp_path / "plain"), "argv": [sys.executable, "-c", ""], "timeout_s": 30})
    out = _batch(tmp_path, tests)
    assert out.returncode == 0, out.stderr
    for name in ("a", "b"):  # kept gzipped once the relay closed (the plain log removed)
        assert (
            gzip.decompress((tmp_path / name / opvalidation.LOG_GZ).read_bytes())
            == b"instance 0\ninstance 1\ninstance 2\n"
        )
        assert not (tmp_path / name / validation.LOG).exists()
        assert (
            not (tmp_path / name / validation.FIFO).exists()
            and not (tmp_path / name / validation.RELAY_FAILED).exists()
        )
        assert json.loads((tmp_path / name / "result.json").read_text())["returncode"] == 0
    assert not (tmp_path / "plain" / validation.LOG).exists()


def test_batch_gives_up_on_a_writer_the_test_left_behind_and_says_so(tmp_path: Path) -> None:
    """A process the test left holds the FIFO open and writes on: after the grace time the relay stops and writes
    `failed` (the harness then calls the test NOT-EXERCISED), and the batch ends."""
    # The child writes before the test ends (the parent waits for its first write): a writer that only starts after
    # the relay saw the test end and the pipe empty is not this case.
    child = (
        "import os,time\nf=open(os.environ['FIFO'],'w')\nf.write('x\\n'); f.flush(); open(os.environ['MARK'],'w')\n"
        "while True:\n    f.write('x\\n'); f.flush(); time.sleep(0.05)\n"
    )
    leaver = (
        "import os,subprocess,sys,time\n"
        f"subprocess.Popen([sys.executable,'-c',{child!r}], start_new_session=True)\n"
        "while not os.path.exists(os.environ['MARK']): time.sleep(0.02)\n"
    )
    _, relay = opvalidation.prepare_run(tmp_path / "t", "on")
    relay["grace_s"] = 0.5
    env = {"FIFO": relay["fifo"], "MARK": str(tmp_path / "mark")}
    test = {"name": "t", "dir": str(tmp_path / "t"), "argv": [sys.executable, "-c", leaver],
            "env": env, "timeout_s": 30, "validation": relay}  # fmt: skip
    out = _batch(tmp_path, [test])
    assert out.returncode == 0, out.stderr
    assert "still written 0.5 s after the test ended" in (tmp_path / "t" / validation.RELAY_FAILED).read_text()
    record = opvalidation.assess_test(tmp_path / "t", "on", CANARY_OK)
    assert record["status"] == validation.NOT_EXERCISED and "could not be kept whole" in record["reason"]


# -- per test: the evidence and the counts ----------------------------------------------------------------------------
def test_a_test_counts_only_with_the_layers_status_message_naming_its_own_settings(tmp_path: Path) -> None:
    log = _status(Path("SETTINGS")) + _error("VUID-A") + _error("VUID-A") + _status(Path("SETTINGS")) + _error("VUID-B")
    ok = opvalidation.assess_test(_run_dir(tmp_path, "ok", log), "on", CANARY_OK)
    assert ok["status"] == validation.EXERCISED and ok["instances"] == 2
    assert {v: e["count"] for v, e in ok["vuids"].items()} == {"VUID-A": 2, "VUID-B": 1}  # the INFO kept apart
    assert ok["info"] == {STATUS: 2} and ok["vuids"]["VUID-A"]["first"] == "the spec's words"

    no_layer = opvalidation.assess_test(_run_dir(tmp_path, "none", ""), "on", CANARY_OK)  # an empty log: never 0 errors
    assert no_layer["status"] == validation.NOT_EXERCISED and "not loaded in this process" in no_layer["reason"]
    no_log = opvalidation.assess_test(_run_dir(tmp_path, "nolog", None), "on", CANARY_OK)
    assert no_log["status"] == validation.NOT_EXERCISED and no_log["vuids"] == {}

    other = _status(tmp_path / "elsewhere.txt") + _error("VUID-A")
    foreign = opvalidation.assess_test(_run_dir(tmp_path, "foreign", other), "on", CANARY_OK)
    assert foreign["status"] == validation.NOT_EXERCISED and "elsewhere.txt" in foreign["reason"]


def test_sync_needs_the_sync_enable_in_every_status_message(tmp_path: Path) -> None:
    without = opvalidation.assess_test(_run_dir(tmp_path, "a", _status(Path("SETTINGS")), "sync"), "sync", CANARY_OK)
    assert without["status"] == validation.NOT_EXERCISED and "without sync validation" in without["reason"]
    log = _status(Path("SETTINGS"), SYNC) + _error("SYNC-HAZARD-WRITE-AFTER-WRITE")
    with_sync = opvalidation.assess_test(_run_dir(tmp_path, "b", log, "sync"), "sync", CANARY_OK)
    assert with_sync["status"] == validation.EXERCISED and "SYNC-HAZARD-WRITE-AFTER-WRITE" in with_sync["vuids"]


def test_no_test_counts_when_the_cells_canary_was_not_reported(tmp_path: Path) -> None:
    d = _run_dir(tmp_path, "t", _status(Path("SETTINGS")) + _error("VUID-A"))
    canary = {"status": validation.NOT_EXERCISED, "reason": "the layer did not report the canary"}
    record = opvalidation.assess_test(d, "on", canary)
    assert record["status"] == validation.NOT_EXERCISED and "canary was not reported" in record["reason"]
    assert opvalidation.assess_test(None, "on", CANARY_OK)["status"] == validation.NOT_EXERCISED


def test_the_canary_is_the_drivers_probe_stopped_at_loading_data_and_judged_as_a_training_cells(
    tmp_path: Path,
) -> None:
    entry = opvalidation.canary_entry(tmp_path, Path("/b/mnist_driver"), Path("/b/libMNN_Vulkan.so"), "on", 60)
    d = tmp_path / opvalidation.CANARY_DIR
    assert entry["argv"][-1] == validation.CANARY_ARG and entry["argv"][:3] == [
        "/b/mnist_driver",
        "--backend",
        "vulkan",
    ]
    assert entry["argv"][entry["argv"].index("--data") + 1] == str(d / "no-data") and not (d / "no-data").exists()
    assert entry["validation"]["fifo"] == str(d / validation.FIFO)
    assert entry["env"]["VK_LAYER_SETTINGS_PATH"] == str(d / validation.SETTINGS_FILE)
    assert opvalidation.canary_record(tmp_path, "on")["status"] == validation.NOT_EXERCISED  # nothing ran yet
    event = {"v": 1, "event": "vk_canary", "made": True, "count": 1}
    (d / "events.jsonl").write_text(json.dumps(event) + "\n")
    (d / validation.LOG).write_text(_error(validation.CANARY_VUID))
    assert opvalidation.canary_record(tmp_path, "on")["status"] == validation.EXERCISED


# -- per cell: VUID -> tests, rows with tests -------------------------------------------------------------------------
ROWS = """
[[known]]
refs = ["3.3.0"]
variant = "vulkan-image"
icd = "lavapipe"
vuid = "VUID-VkImageMemoryBarrier-sType-sType"
reason = "training"

[[known]]
refs = ["3.3.0"]
variant = "vulkan-image"
icd = "lavapipe"
tests = "op/convolution/*"
vuid = "VUID-VkImageMemoryBarrier-sType-sType"
upstream = "alibaba/MNN#4015"
reason = "seen"

[[known]]
refs = ["3.3.0"]
variant = "vulkan-*"
icd = ["lavapipe", "swiftshader"]
tests = "op/binary/add"
vuid = "VUID-gone"
reason = "seen once"
"""


def test_rows_with_tests_cover_those_tests_only_and_training_rows_no_test(tmp_path: Path) -> None:
    (tmp_path / "v.toml").write_text(ROWS)
    training, conv, add, _ = validation.load_known(tmp_path / "v.toml")  # the last row: one per ICD
    cell = ("3.3.0", "3.3.0", "vulkan-image", "lavapipe")
    assert training.covers(*cell) and not conv.covers(*cell)  # a tests row is no training cell's
    assert conv.covers_test(*cell, "op/convolution/conv2d") and not conv.covers_test(*cell, "op/binary/add")
    assert not training.covers_test(*cell, "op/convolution/conv2d")
    assert "tests op/binary/add" in add.describe()


def test_cell_table_pins_each_vuid_to_the_tests_that_raised_it(tmp_path: Path) -> None:
    (tmp_path / "v.toml").write_text(ROWS)
    known = validation.load_known(tmp_path / "v.toml")
    sty = "VUID-VkImageMemoryBarrier-sType-sType"
    dirs = {
        "op/convolution/conv2d": _run_dir(tmp_path, "conv", _status(Path("SETTINGS")) + _error(sty) * 3),
        "op/binary/add": _run_dir(tmp_path, "add", _status(Path("SETTINGS")) + _error(sty) + _error("VUID-X")),
        "op/softmax": _run_dir(tmp_path, "softmax", ""),
    }
    records = {t: opvalidation.assess_test(d, "on", CANARY_OK) for t, d in dirs.items()}
    table = opvalidation.cell_table(records, CANARY_OK, known, ("3.3.0", "3.3.0", "vulkan-image", "lavapipe"), "on")
    assert table["vuids"][sty]["tests"] == {"op/binary/add": 1, "op/convolution/conv2d": 3}
    assert table["vuids"][sty]["count"] == 4 and table["vuids"][sty]["new_in"] == ["op/binary/add"]
    assert table["findings"] == sorted([sty, "VUID-X"])
    assert records["op/convolution/conv2d"]["known"] == [sty] and records["op/convolution/conv2d"]["findings"] == []
    assert records["op/binary/add"]["findings"] == sorted([sty, "VUID-X"])
    assert table["stale"] == [next(k for k in known if k.vuid == "VUID-gone").describe()]
    assert table["exercised"] == 2 and list(table["not_exercised"]) == ["op/softmax"]
    line = opvalidation.one_line(table)
    assert "2 test(s) exercised, 1 NOT-EXERCISED" in line and "NEW:" in line and "STALE:" in line


def test_a_cell_without_its_canary_says_not_exercised_not_zero_errors(tmp_path: Path) -> None:
    canary = {"status": validation.NOT_EXERCISED, "reason": "no vk_canary event"}
    records = {"op/a": opvalidation.assess_test(_run_dir(tmp_path, "a", ""), "on", canary)}
    table = opvalidation.cell_table(records, canary, [], ("3.3.0", None, "vulkan-buffer", "lavapipe"), "on")
    assert table["exercised"] == 0 and table["vuids"] == {}
    assert opvalidation.one_line(table).startswith("validation on: NOT-EXERCISED (canary not reported")


# -- the sweep's plan -------------------------------------------------------------------------------------------------
class _PlanRunner:
    """Records each batch's plan instead of running it."""

    name = "host"

    def __init__(self) -> None:
        self.plans: list[dict[str, Any]] = []

    def run(self, argv: list[str], **_: Any) -> Completed:
        self.plans.append(json.loads(Path(argv[-1]).read_text()))
        return Completed(argv=tuple(argv), returncode=0, duration_s=0.0)


def _spec(tmp_path: Path, variant: str, mode: str) -> tuple[optest.SweepSpec, _PlanRunner]:
    runner = _PlanRunner()
    binary = optest.Binary(tmp_path / "mnn_optest", ("op/a", "op/b"))
    spec = optest.SweepSpec(
        cell=Cell("3.3.0", variant, "lavapipe" if variant != "cpu" else "-"),
        binary=binary,
        tests=["op/a", "op/b"],
        runner=runner,  # type: ignore[arg-type]
        plugin=tmp_path / "libMNN_Vulkan.so",
        icd=None,
        precision="high",
        timeout_s=60,
        jobs=2,
        result_dir=tmp_path / "cell",
        vk_validation=mode,
        canary_driver=tmp_path / "mnist_driver",
    )
    return spec, runner


def test_a_validated_vulkan_sweep_gives_every_test_its_settings_and_relay_and_runs_the_canary(tmp_path: Path) -> None:
    spec, runner = _spec(tmp_path, "vulkan-image", "sync")
    optest.sweep(spec, say=lambda _: None)
    entries = {e["name"]: e for e in runner.plans[0]["tests"]}
    assert set(entries) == {"op/a", "op/b", opvalidation.CANARY_NAME}
    for name in ("op/a", "op/b"):
        d = spec.result_dir / optest.dirname(name)
        assert entries[name]["env"]["VK_LAYER_SETTINGS_PATH"] == str(d / validation.SETTINGS_FILE)
        assert entries[name]["env"]["VK_INSTANCE_LAYERS"] == validation.LAYER
        assert entries[name]["validation"]["log"] == str(d / validation.LOG)
        assert SYNC in (d / validation.SETTINGS_FILE).read_text()
    assert entries[opvalidation.CANARY_NAME]["argv"][0] == str(tmp_path / "mnist_driver")


@pytest.mark.parametrize(("variant", "mode"), [("cpu", "on"), ("vulkan-image", "off")])
def test_no_layer_where_validation_is_off_or_the_cell_is_not_vulkan(tmp_path: Path, variant: str, mode: str) -> None:
    spec, runner = _spec(tmp_path, variant, mode)
    optest.sweep(spec, say=lambda _: None)
    entries = runner.plans[0]["tests"]
    assert [e["name"] for e in entries] == ["op/a", "op/b"]
    assert all("validation" not in e and set(e["env"]) == {"MNNREPRO_CRASH_DIR"} for e in entries)


# -- reports and the command line -------------------------------------------------------------------------------------
def test_reports_show_the_vuid_table_beside_the_op_verdicts(tmp_path: Path) -> None:
    sty = "VUID-VkImageMemoryBarrier-sType-sType"
    records = {
        "op/a": opvalidation.assess_test(
            _run_dir(tmp_path, "a", _status(Path("SETTINGS")) + _error(sty)), "on", CANARY_OK
        )
    }
    table = opvalidation.cell_table(records, CANARY_OK, [], ("3.3.0", None, "vulkan-image", "lavapipe"), "on")
    test = {"test": "op/a", "status": "PASS", "expected": "PASS", "matched": True, "reason": "", "expectation": "",
            "duration_s": 1.0, "validation": records["op/a"]}  # fmt: skip
    cell = {"cell": "3.3.0/vulkan-image/lavapipe", "variant": "vulkan-image", "icd": "lavapipe", "tests": [test],
            "counts": {"PASS": 1}, "mismatched": 0, "not_run": {"count": 0, "why": {}}}  # fmt: skip
    cell["validation"] = table
    data = {"ref": "3.3.0", "vk_validation": "on", "cells": [cell], "selection": ["op/a"], "timeout_s": 60.0}
    md = opreport.markdown(data)
    assert "## Validation layer (on): VUIDs per test" in md
    assert f"| {sty} | 1 | op/a (1) | NEW in op/a | the spec's words |" in md
    assert "3.3.0/vulkan-image/lavapipe: validation on: 1 test(s) exercised" in opreport.table(data)


def test_ops_run_keeps_the_validation_mode_and_ops_list_drops_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mnnrepro import cli

    seen: list[tuple[str, str]] = []

    def dispatch(args: argparse.Namespace, settings: Settings) -> int:
        seen.append((str(args.action), settings.vk_validation))
        return 0

    monkeypatch.setattr(cli, "_dispatch", dispatch)
    assert cli.main(["ops", "run", "--vk-validation", "sync"]) == 0
    monkeypatch.setenv("MNNREPRO_VK_VALIDATION", "on")
    assert cli.main(["ops", "list"]) == 0
    assert seen == [("run", "sync"), ("list", "off")]
    assert "`ops run`" in capsys.readouterr().err


def test_a_large_log_is_read_in_chunks_with_the_same_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """conv2d's log reaches hundreds of MB: read a few lines at a time, the counts, first messages and the status
    evidence are those of the whole text."""
    log = (_status(Path("SETTINGS")) + _error("VUID-A", "first A") + _error("VUID-A", "second A")) * 5
    d = _run_dir(tmp_path, "t", log + _error("VUID-B"))
    whole = opvalidation.assess_test(d, "on", CANARY_OK)
    monkeypatch.setattr(opvalidation, "CHUNK_LINES", 3)
    chunked = opvalidation.assess_test(d, "on", CANARY_OK)
    assert chunked == whole and chunked["instances"] == 5
    assert {v: e["count"] for v, e in chunked["vuids"].items()} == {"VUID-A": 10, "VUID-B": 1}
    assert chunked["vuids"]["VUID-A"]["first"] == "first A"


def test_a_settings_path_through_a_link_is_the_same_file(tmp_path: Path) -> None:
    """The layer names the path it was given; the results may be read through results/latest, a link."""
    d = _run_dir(tmp_path, "real", _status(Path("SETTINGS")) + _error("VUID-A"))
    (tmp_path / "latest").symlink_to(tmp_path)
    record = opvalidation.assess_test(tmp_path / "latest" / "real", "on", CANARY_OK)
    assert d.resolve() == (tmp_path / "latest" / "real").resolve() and record["status"] == validation.EXERCISED


# -- review findings: the exit code sees validation; no op on Vulkan is NOT-EXERCISED; the canary first ----------------
CELL = Cell("3.3.0", "vulkan-image", "lavapipe")
STYPE = "VUID-VkImageMemoryBarrier-sType-sType"
TESTS_ROW = (
    '[[known]]\nrefs = ["3.3.0"]\nvariant = "vulkan-image"\nicd = "lavapipe"\n'
    'vuid = "{vuid}"\nreason = "r"\ntests = "{tests}"\n'
)


def _session(tmp_path: Path, mode: str, known: list[validation.Known] | None = None) -> tuple[Any, list[str]]:
    """An OpsSession with only what exit_code and _validated read."""
    said: list[str] = []
    session: Any = opsession.OpsSession.__new__(opsession.OpsSession)
    session.settings = Settings(vk_validation=mode)
    session.say = said.append
    session.results = tmp_path
    session.prepared = SimpleNamespace(built=SimpleNamespace(tree=SimpleNamespace(version="3.3.0")))
    session.known_vuids = known or []
    return session, said


def _table(**changes: Any) -> dict[str, Any]:
    clean = {"mode": "on", "canary": CANARY_OK, "exercised": 2, "not_exercised": {}, "vuids": {}, "findings": []}
    return {**clean, "stale": [], **changes}


def _cells(table: dict[str, Any]) -> list[dict[str, Any]]:
    cpu = {"cell": "3.3.0/cpu/-", "mismatched": 0, "not_run": {"count": 0}}
    return [cpu, {"cell": CELL.id, "mismatched": 0, "not_run": {"count": 0}, "validation": table}]


@pytest.mark.parametrize(
    ("table", "why"),
    [
        (
            _table(canary={"status": validation.NOT_EXERCISED, "reason": "no vk_canary event"}),
            "canary was not reported",
        ),
        (_table(findings=[STYPE]), f"new VUID(s) {STYPE}"),
        (_table(stale=["VUID-gone (3.3.0 vulkan-image *)"]), "stale row(s) VUID-gone"),
        (_table(exercised=0), "0 tests exercised"),
    ],
)
def test_validation_problems_fail_the_session_with_a_line_per_cell(
    tmp_path: Path, table: dict[str, Any], why: str
) -> None:
    session, said = _session(tmp_path, "on")
    assert session.exit_code({"all_matched": True}, _cells(table)) == EXIT_MISMATCH
    assert [line for line in said if CELL.id in line and why in line], said


def test_a_clean_validated_session_exits_0(tmp_path: Path) -> None:
    session, _ = _session(tmp_path, "sync")
    assert session.exit_code({"all_matched": True}, _cells(_table(vuids={STYPE: {"count": 1}}))) == 0
    assert session.exit_code({"all_matched": False}, _cells(_table())) == EXIT_MISMATCH  # op verdicts still count


def _result(test: str, status: str, directory: Path, **fields: Any) -> opjudge.TestResult:
    return opjudge.TestResult(test, status, "PASS", status == "PASS", "", directory=str(directory), **fields)


def test_a_test_with_no_op_on_vulkan_is_not_exercised_and_unfinished_runs_decide_no_stale_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "v.toml").write_text(TESTS_ROW.format(vuid="VUID-gone", tests="op/[ft]*"))  # op/timeout, op/flake
    session, _ = _session(tmp_path, "on", validation.load_known(tmp_path / "v.toml"))
    monkeypatch.setattr(opvalidation, "canary_record", lambda *_: CANARY_OK)
    clean = _status(Path("SETTINGS"))  # the probe's instance only: "EXERCISED, 0 messages" on HEAD
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "op/nogpu": ("NO-GPU-WORK", {}),
        "op/notex": ("NOT-EXERCISED", {}),
        "op/allcpu": ("FALLBACK", {}),
        "op/partial": ("FALLBACK", {"partial": {"Convolution": 2}}),
        "op/timeout": ("TIMEOUT", {}),
        "op/flake": ("FLAKE", {"first": "CRASH"}),
    }
    dirs = {t: _run_dir(tmp_path, t.replace("/", "_"), clean + _error(STYPE)) for t in cases}
    ran = {t: optest.Outcome(t, "PASS", "", 1.0, 0, directory=d) for t, d in dirs.items()}
    results = [_result(t, status, dirs[t], **extra) for t, (status, extra) in cases.items()]
    table = session._validated(CELL, ran, results)
    records = {r.test: r.validation for r in results}
    for test, status in (("op/nogpu", "NO-GPU-WORK"), ("op/notex", "NOT-EXERCISED"), ("op/allcpu", "FALLBACK")):
        assert records[test]["status"] == validation.NOT_EXERCISED
        assert records[test]["reason"] == f"no op ran on the Vulkan backend ({status})"
        assert test in table["not_exercised"]
    assert records["op/partial"]["status"] == validation.EXERCISED
    assert records["op/partial"]["fallback"] == {"Convolution": 2}
    assert table["exercised"] == 3 and table["stale"] == []  # only TIMEOUT and CRASH-then-pass runs cover the row
    results.append(_result("op/finished", "PASS", _run_dir(tmp_path, "finished", clean)))
    ran["op/finished"] = optest.Outcome("op/finished", "PASS", "", 1.0, 0, directory=Path(results[-1].directory))
    assert len(session._validated(CELL, ran, results)["stale"]) == 1  # a finished run does decide it


def test_the_canary_runs_first_in_the_batch(tmp_path: Path) -> None:
    spec, runner = _spec(tmp_path, "vulkan-buffer", "on")
    optest.sweep(spec, say=lambda _: None)
    names = [e["name"] for e in runner.plans[0]["tests"]]
    assert names[0] == opvalidation.CANARY_NAME and sorted(names[1:]) == ["op/a", "op/b"]


@pytest.mark.parametrize("key", ["device", "vendor", "driver"])
def test_a_tests_row_with_device_keys_is_refused_at_load(tmp_path: Path, key: str) -> None:
    row = TESTS_ROW.format(vuid="V", tests="op/*")
    (tmp_path / "v.toml").write_text(row + f'{key} = "NVIDIA*"\n')
    with pytest.raises(ConfigError, match=f"tests together with {key}"):
        validation.load_known(tmp_path / "v.toml")
    (tmp_path / "v.toml").write_text(row)
    assert validation.load_known(tmp_path / "v.toml")[0].tests == "op/*"


def test_a_clean_cells_line_names_no_skipped_attribution() -> None:
    skipped = {"status": "skipped", "reason": "no VUID to attribute"}
    record = {"status": validation.EXERCISED, "mode": "on", "vuids": {}, "attribution": skipped}
    assert validation.one_line(record) == "validation on: 0 message(s), 0 id(s)"
    with_vuid = {**record, "vuids": {STYPE: {"count": 1}}, "attribution": {**skipped, "reason": "no gdb: none"}}
    assert "frames skipped: no gdb: none" in validation.one_line(with_vuid)
