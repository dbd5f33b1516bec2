"""Issue 22 in the ops workload: expectation rows that name the device, vendor and driver a test ran on (a real GPU
behind `--icd host` is a different GPU on every machine), looked up per test once its run probed the device; and
the verdicts of a run without gdb (summary.json's gdb_absent, crashes "judged by signal only")."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from mnnrepro import prepare
from mnnrepro.cells import Cell
from mnnrepro.errors import FixtureError
from mnnrepro.settings import Settings
from mnnrepro.workloads.ops import judge as opjudge
from mnnrepro.workloads.ops import optest
from mnnrepro.workloads.ops import session as opsession
from mnnrepro.workloads.ops.optest import Outcome

# The `device` of a `backend` event as native/src/backend.cpp writes it (Vulkan: physical device 0).
H100 = {
    "api": "vulkan",
    "name": "NVIDIA H100 80GB HBM3",
    "type": "discrete-gpu",
    "driver_name": "NVIDIA",
    "driver_info": "580.159.04",
    "api_version": "1.4.312",
    "vendor_id": 0x10DE,
    "device_id": 0x2330,
}
A100 = {**H100, "name": "NVIDIA A100-SXM4-80GB", "device_id": 0x20B2}
LLVMPIPE = {
    "api": "vulkan",
    "name": "llvmpipe (LLVM 19.1.1, 256 bits)",
    "driver_name": "llvmpipe",
    "driver_info": "Mesa 24.2.8-1ubuntu1~24.04.1 (LLVM 19.1.1)",
    "vendor_id": 0x10005,
}
OPENCL = {"api": "opencl", "name": "NVIDIA H100 80GB HBM3", "driver_name": "NVIDIA CUDA", "api_version": "OpenCL 3.0"}


def _device(probe: dict[str, Any]) -> opjudge.Device:
    return opjudge.Device.of_backend({"event": "backend", "active": "vulkan", "device": probe})


def test_the_device_facts_come_from_the_backend_events_probe() -> None:
    assert _device(H100) == opjudge.Device("NVIDIA H100 80GB HBM3", "NVIDIA", "580.159.04")
    assert _device(LLVMPIPE).vendor == "Mesa" and _device(LLVMPIPE).driver.startswith("Mesa 24.2.8")
    assert _device({**H100, "vendor_id": 0x1234}).vendor == "0x1234"
    # The OpenCL probe has no vendor ID and no driver version: those facts are unknown, the name is known.
    assert _device(OPENCL) == opjudge.Device("NVIDIA H100 80GB HBM3", "", "")
    # No probe, or a Vulkan loader that found no device: unknown.
    assert not opjudge.Device.of_backend({}).known
    assert not _device({"api": "vulkan", "device_count": 0, "name": "", "vendor_id": 0}).known


def _load(tmp_path: Path, body: str) -> opjudge.Expectations:
    path = tmp_path / "expectations.toml"
    path.write_text("format = 1\n" + textwrap.dedent(body))
    return opjudge.load_expectations(path)


ROWS = """
[[expect]]
refs = ["3.6.1"]
variant = "vulkan-image"
icd = "host"
device = "NVIDIA H100*"
vendor = "NVIDIA"
driver = "580.*"
test = "op/PoolGrad"
status = "FAIL"
reason = "wrong values on NVIDIA's driver"

[[expect]]
refs = ["3.6.1"]
variant = "opencl"
icd = "-"
device = "NVIDIA H100*"
test = "op/PoolGrad"
status = "FAIL"
reason = "wrong values on NVIDIA's OpenCL"

[[expect]]
refs = ["3.6.1"]
variant = "opencl"
icd = "-"
vendor = "NVIDIA"
test = "op/other"
status = "FAIL"
reason = "the OpenCL probe gives no vendor: never matches there"

[[expect]]
refs = ["3.6.1"]
variant = "vulkan-image"
icd = "lavapipe"
test = "op/PoolGrad"
status = "CPU-FAIL"
reason = "a row without device keys, as before"
"""


def test_a_row_holds_only_on_the_device_vendor_and_driver_it_names(tmp_path: Path) -> None:
    exp = _load(tmp_path, ROWS)
    cell = ("3.6.1", "3.6.1", "vulkan-image", "host", "op/PoolGrad")
    row = exp.of(*cell, _device(H100))
    assert row is not None and (row.device, row.vendor, row.driver) == ("NVIDIA H100*", "NVIDIA", "580.*")
    assert row.line == 1 and "device='NVIDIA H100*'" in row.describe()
    assert exp.of(*cell, _device(A100)) is None  # another device
    assert exp.of(*cell, _device({**H100, "driver_info": "535.104.05"})) is None  # another driver
    assert exp.of(*cell, _device({**H100, "vendor_id": 0x1002})) is None  # another vendor
    assert exp.of(*cell, _device({**H100, "driver_info": ""})) is None  # the driver not known
    assert exp.of(*cell, opjudge.Device()) is None and exp.of(*cell) is None  # the device not known
    # OpenCL: the device name matches; a vendor key cannot (the probe has no vendor).
    assert exp.of("3.6.1", None, "opencl", "-", "op/PoolGrad", _device(OPENCL)) is not None
    assert exp.of("3.6.1", None, "opencl", "-", "op/other", _device(OPENCL)) is None
    # Rows without device keys match whatever the device, known or not.
    lavapipe = exp.of("3.6.1", None, "vulkan-image", "lavapipe", "op/PoolGrad")
    assert lavapipe is not None and lavapipe.status == "CPU-FAIL"
    assert exp.of("3.6.1", None, "vulkan-image", "lavapipe", "op/PoolGrad", _device(LLVMPIPE)) == lavapipe


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('icd = "host"\nstatus = "FAIL"', "must name the device: host means a different GPU on every machine"),
        ('icd = "h*"\nstatus = "FAIL"', "must name the device"),
        ('icd = "host"\ndriver = "580.*"\nstatus = "FAIL"', "must name the device"),
        ('icd = "host"\ndevice = "NVIDIA*"\nstatus = "SKIP"', "a SKIP row cannot name a device"),
        ('icd = "lavapipe"\nvendor = "Mesa"\nstatus = "SKIP"', "a SKIP row cannot name a device"),
        ('icd = "host"\ndevice = ""\nstatus = "FAIL"', "must be a non-empty string"),
    ],
)
def test_a_host_row_must_name_the_device(tmp_path: Path, row: str, message: str) -> None:
    body = f'[[expect]]\nrefs = ["3.6.1"]\nvariant = "vulkan-image"\ntest = "op/x"\nreason = "r"\n{row}\n'
    with pytest.raises(FixtureError, match=message):
        _load(tmp_path, body)


def test_host_rows_that_name_the_device_and_rows_for_every_icd_load(tmp_path: Path) -> None:
    body = '[[expect]]\nrefs = ["3.6.1"]\nvariant = "vulkan-image"\ntest = "op/x"\nreason = "r"\nstatus = "FAIL"\n'
    assert _load(tmp_path, body + 'icd = "host"\nvendor = "NVIDIA"\n').rows[0].vendor == "NVIDIA"
    assert _load(tmp_path, body + 'icd = "*"\n').rows[0].icd == "*"
    assert not any(r.icd == "host" and not (r.device or r.vendor) for r in opjudge.load_expectations().rows)


FLAKE = """
[[expect]]
refs = ["3.6.1"]
variant = "vulkan-*"
icd = "host"
device = "NVIDIA H100*"
test = "op/flaky"
status = "FLAKE"
reruns = 4
reason = "fails now and then on NVIDIA"
"""


def test_a_device_flake_row_gives_its_reruns_before_the_device_is_known(tmp_path: Path) -> None:
    exp = _load(tmp_path, FLAKE)
    assert exp.reruns_before("3.6.1", None, "vulkan-buffer", "host", "op/flaky") == 4
    assert exp.reruns_before("3.6.1", None, "vulkan-buffer", "host", "op/other") == 1
    assert exp.reruns_before("3.6.1", None, "vulkan-buffer", "lavapipe", "op/flaky") == 1
    # On another device the row does not hold: a failure that passed on a later run is a FLAKE without a row,
    # which is a mismatch, never a pass.
    row = exp.of("3.6.1", None, "vulkan-buffer", "host", "op/flaky", _device(A100))
    assert row is None
    flaky = Outcome("op/flaky", "FAIL", "x", 1.0, 1, rerun=Outcome("op/flaky", "PASS", "", 1.0, 0))
    r = opjudge.judge(flaky, None, "vulkan", row)
    assert (r.status, r.matched) == ("FLAKE", False)
    h100_row = exp.of("3.6.1", None, "vulkan-buffer", "host", "op/flaky", _device(H100))
    assert opjudge.judge(flaky, None, "vulkan", h100_row).matched is True


def _run_dir(path: Path, probe: dict[str, Any] | None, passed: bool) -> Path:
    path.mkdir(parents=True)
    events: list[dict[str, Any]] = [{"v": 1, "event": "start", "driver": "mnn_optest"}]
    if probe is not None:  # a run that died before the probe has no backend event
        events.append({"v": 1, "event": "backend", "requested": "vulkan", "active": "vulkan", "device": probe})
    by = {"vulkan": {"PoolGrad": 1}}
    events.append({"v": 1, "event": "test", "name": "t", "passed": passed, "ops_total": 1, "by_backend": by})
    (path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def test_the_device_of_a_test_is_its_own_runs_else_a_reruns(tmp_path: Path) -> None:
    rerun = Outcome("op/a", "FAIL", "x", 1.0, 1, directory=_run_dir(tmp_path / "b", H100, False))
    first = Outcome("op/a", "CRASH", "x", 1.0, -11, directory=_run_dir(tmp_path / "a", None, False), rerun=rerun)
    assert opsession.device_of(first).name == "NVIDIA H100 80GB HBM3"
    assert not opsession.device_of(Outcome("op/a", "FAIL", "x", 1.0, 1, directory=tmp_path / "none")).known


def _prepared(gdb_absent: str = "") -> prepare.Prepared:
    tree = SimpleNamespace(version="3.6.1", commit="c" * 40)
    builder = SimpleNamespace(toolchain="gcc")
    built = SimpleNamespace(tree=tree, runner=SimpleNamespace(name="host"), plugins={}, builder=builder)
    return cast(prepare.Prepared, SimpleNamespace(built=built, icds={}, gdb_path=None, gdb_absent=gdb_absent))


PER_TEST = """
[[expect]]
refs = ["3.6.1"]
variant = "vulkan-image"
icd = "host"
vendor = "NVIDIA"
test = "op/flaky"
status = "FLAKE"
reruns = 4
reason = "now and then on NVIDIA"

[[expect]]
refs = ["3.6.1"]
variant = "vulkan-image"
icd = "host"
device = "NVIDIA H100*"
test = "op/*"
status = "FAIL"
reason = "wrong values on the H100"
"""


def _sweep_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, probe: dict[str, Any]
) -> tuple[dict[str, opjudge.TestResult], opjudge.Device, optest.SweepSpec]:
    """One vulkan-image/host cell through opsession._cell, its sweep faked: op/PoolGrad's run probed `probe`,
    op/early died before its probe (no backend event), op/flaky failed."""
    seen: list[optest.SweepSpec] = []

    def sweep(spec: optest.SweepSpec, *, say: Any = None) -> dict[str, Outcome]:
        seen.append(spec)
        root = tmp_path / probe["name"].replace(" ", "_")
        return {
            t: Outcome(
                t, "FAIL", "wrong", 1.0, 1, directory=_run_dir(root / t[3:], probe if t != "op/early" else None, False)
            )
            for t in spec.tests
        }

    monkeypatch.setattr(optest, "sweep", sweep)
    tests = ["op/PoolGrad", "op/early", "op/flaky"]
    results, _, device = opsession._cell(
        Cell("3.6.1", "vulkan-image", "host"),
        _prepared(),
        optest.Binary(tmp_path / "mnn_optest", tuple(tests)),
        tests,
        {},
        _load(tmp_path, PER_TEST),
        {},
        Settings(test_jobs=2),
        tmp_path,
        lambda _: None,
    )
    return {r.test: r for r in results}, device, seen[0]


def test_rows_are_looked_up_per_test_with_the_device_its_run_probed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by, device, spec = _sweep_cell(tmp_path, monkeypatch, H100)
    assert device.name == "NVIDIA H100 80GB HBM3"
    assert (by["op/PoolGrad"].status, by["op/PoolGrad"].matched, by["op/PoolGrad"].row) == ("FAIL", True, 2)
    # op/early has no probe of its own: the cell's device (the H100) stands for it.
    assert (by["op/early"].matched, by["op/early"].row) == (True, 2)
    # The FLAKE row for NVIDIA gave op/flaky its reruns before any device was known; it failed every run here.
    assert spec.reruns == {"op/PoolGrad": 1, "op/early": 1, "op/flaky": 4}
    assert by["op/flaky"].row == 1 and by["op/flaky"].matched is False
    # Another GPU: the rows for NVIDIA hold for none of them, every failure is unexpected.
    radeon = {**H100, "name": "AMD Radeon PRO W7900", "vendor_id": 0x1002, "driver_info": "Mesa 24.2.8"}
    other, device, _ = _sweep_cell(tmp_path, monkeypatch, radeon)
    assert (device.name, device.vendor) == ("AMD Radeon PRO W7900", "AMD")
    assert all(r.row == 0 and r.matched is False for r in other.values())


def test_stale_rows_know_the_cells_device(tmp_path: Path) -> None:
    exp = _load(tmp_path, ROWS)
    key = ("3.6.1", "3.6.1", "vulkan-image", "host")
    passed = [
        opjudge.judge(Outcome("op/PoolGrad", "PASS", "", 1.0, 0, by_backend={"vulkan": {"X": 1}}), None, "vulkan", None)
    ]
    stale = opjudge.stale_rows(exp, [(key, passed)], ("op/",), {key: _device(H100)})
    assert [(s["row"], s.get("device")) for s in stale] == [(1, "NVIDIA H100*")]
    assert opjudge.stale_rows(exp, [(key, passed)], ("op/",), {key: _device(A100)}) == []
    assert opjudge.stale_rows(exp, [(key, passed)], ("op/",)) == []  # the device not known: covers no cell


# -- a run without gdb ------------------------------------------------------------------------------------------
def test_every_crash_without_a_backtrace_is_judged_by_signal_only() -> None:
    crash = Outcome("op/c", "CRASH", "SIGSEGV in op/c", 1.0, -11, signal="SIGSEGV")
    plain = opjudge.judge(crash, None, "vulkan", None)
    assert plain.matched is False and "judged by signal only" in plain.reason
    row = opjudge.Expect(("3.6.1",), "vulkan-image", "*", "op/c", "CRASH", "r", signature=("MNN::a",), line=2)
    signed = opjudge.judge(crash, None, "vulkan", row)
    assert signed.matched is True and "judged by signal only" in signed.reason and "not verified" in signed.reason
    unsigned = opjudge.Expect(("3.6.1",), "vulkan-image", "*", "op/c", "CRASH", "r", line=3)
    assert "judged by signal only" in opjudge.judge(crash, None, "vulkan", unsigned).reason
    traced = Outcome("op/c", "CRASH", "SIGSEGV in op/c", 1.0, -11, crash={"frames": [{"function": "MNN::a()"}]})
    assert "signal only" not in opjudge.judge(traced, None, "vulkan", row, ("MNN::a",)).reason


def test_the_summary_header_says_why_there_is_no_gdb(tmp_path: Path) -> None:
    binary = optest.Binary(tmp_path / "mnn_optest", ("op/a",))
    exp = opjudge.Expectations(())
    absent = "no usable gdb with Python for the host runner: gdb: not installed"
    header = opsession._header("3.6.1", Settings(test_jobs=2), exp, _prepared(absent), binary, ["op/"])
    assert header["gdb_absent"] == absent and header["mnn_version"] == "3.6.1"
    assert opsession._header("3.6.1", Settings(test_jobs=2), exp, _prepared(""), binary, ["op/"])["gdb_absent"] == ""
