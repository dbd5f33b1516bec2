"""The ops session writes its reports whatever moment a signal comes (issue 21 item 10's races, as session.py):
a signal after the last cell and before the reports is held, the reports are written whole, the exit says it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mnnrepro import interrupts, prepare
from mnnrepro.settings import Settings
from mnnrepro.workloads.ops import optest
from mnnrepro.workloads.ops import session as opsession


def _fake_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    tree = SimpleNamespace(path=tmp_path, commit="0" * 40, version="3.3.0")
    binary = optest.Binary(tmp_path / "mnn_optest", ("op/a",), registered=("op/a",))
    monkeypatch.setattr(optest, "build_binary", lambda builder, core: binary)
    builder = SimpleNamespace(toolchain="fake")
    built = SimpleNamespace(tree=tree, runner=SimpleNamespace(name="host"), builder=builder, core=None)
    return SimpleNamespace(built=built, seconds={}, gdb_absent="", gdb_path=None)


def test_a_signal_between_the_last_cell_and_the_reports_still_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    prepared = _fake_prepared(tmp_path, monkeypatch)
    monkeypatch.setattr(prepare, "preflight_for", lambda s, names, say: (s, []))
    monkeypatch.setattr(prepare, "resolve_tree", lambda ref, s, m: prepared.built.tree)
    monkeypatch.setattr(optest, "declared_names", lambda path: ("op/a",))
    monkeypatch.setattr(prepare, "results_dir", lambda s, name: results)
    monkeypatch.setattr(prepare, "prepare", lambda *a, **k: prepared)
    monkeypatch.setattr(
        opsession, "_header", lambda *a: {"ref": "3.3.0", "mnn_version": "3.3.0", "session": "ops", "timeout_s": 120.0}
    )
    monkeypatch.setattr(opsession, "_cell", lambda *a: ([], {}, None))
    monkeypatch.setattr(
        opsession,
        "_cell_entry",
        lambda cell, *a: {"cell": cell.id, "variant": cell.variant, "icd": cell.icd, "tests": []},
    )

    def signal_now(cells: list[dict[str, Any]]) -> None:  # the first thing after the last cell
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(opsession, "_suspects", signal_now)
    with interrupts.installed():
        code = opsession.run_ops(Settings(variants=("cpu",), select=("op/a",)), say=lambda line: None)
    assert code == 128 + signal.SIGTERM
    summary = json.loads((results / "summary.json").read_text())
    assert [c["cell"] for c in summary["cells"]] == ["3.3.0/cpu/-"]


def _finished(
    directory: Path, test: str, code: int, *, timed_out: bool = False, by: dict[str, Any] | None = None
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    events = [{"v": 1, "event": "backend", "requested": "vulkan", "active": "vulkan", "exercised": True}]
    if not timed_out:
        by = by or {"vulkan": {"ReLU": 1}}
        events.append({"v": 1, "event": "test", "name": test, "passed": code == 0, "ops_total": 1, "by_backend": by})
    (directory / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (directory / "result.json").write_text(json.dumps({"returncode": code, "timed_out": timed_out, "duration_s": 120}))


def test_an_interrupted_cell_keeps_what_it_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: on the GPU machine a sweep of 255 tests was stopped by the call's time limit while 8 timeouts ran
    again alone, and the summary kept nothing of the cell. Now every finished test is judged; one that did not
    finish, or was killed among others and not yet run alone, is "not run (interrupted)", never a TIMEOUT."""
    results = tmp_path / "results"
    results.mkdir()
    prepared = _fake_prepared(tmp_path, monkeypatch)
    tests = ("op/a", "op/b", "op/slow", "op/slow2", "op/PoolGrad")  # op/PoolGrad has a row: FALLBACK at 3.3.0
    binary = optest.Binary(tmp_path / "mnn_optest", tests, registered=tests)
    monkeypatch.setattr(optest, "build_binary", lambda builder, core: binary)
    monkeypatch.setattr(prepare, "preflight_for", lambda s, names, say: (s, []))
    monkeypatch.setattr(prepare, "resolve_tree", lambda ref, s, m: prepared.built.tree)
    monkeypatch.setattr(optest, "declared_names", lambda path: tests)
    monkeypatch.setattr(prepare, "results_dir", lambda s, name: results)
    monkeypatch.setattr(prepare, "prepare", lambda *a, **k: prepared)
    header = {"ref": "3.3.0", "mnn_version": "3.3.0", "session": "ops", "timeout_s": 120.0}
    monkeypatch.setattr(opsession, "_header", lambda *a: dict(header))

    def stopped_midway(cell: Any, *args: Any) -> Any:
        d = results / cell.dirname
        _finished(d / "op__a", "op/a", 0)
        _finished(d / "op__b", "op/b", 1)
        _finished(d / "op__slow", "op/slow", -9, timed_out=True)  # killed among others: its run alone not begun
        _finished(d / "op__slow2", "op/slow2", -9, timed_out=True)
        _finished(d / "op__slow2" / "slow", "op/slow2", 0)  # ... and this one passed alone before the stop
        raise KeyboardInterrupt

    monkeypatch.setattr(opsession, "_cell", stopped_midway)
    settings = Settings(variants=("vulkan-image",), icds=("lavapipe",), select=("op/",), cpu_from=None)
    monkeypatch.setattr(opsession, "check", lambda s: ("vulkan-image",))
    code = opsession.run_ops(settings, say=lambda line: None)
    assert code == 128 + signal.SIGINT
    summary = json.loads((results / "summary.json").read_text())
    (cell,) = summary["cells"]
    assert cell["cell"] == "3.3.0/vulkan-image/lavapipe" and cell["interrupted"] is True
    status = {t["test"]: (t["status"], t.get("not_run") or "") for t in cell["tests"]}
    assert status == {
        "op/a": ("PASS", ""),
        "op/b": ("FAIL", ""),
        "op/slow2": ("PASS", ""),
        "op/slow": ("NOT-RUN", "interrupted"),
        "op/PoolGrad": ("NOT-RUN", "interrupted"),
    }
    assert summary["status"] == "INTERRUPTED" and summary["all_matched"] is False
    # The unfinished op/PoolGrad says nothing of its FALLBACK row: not "stale" (which invites deleting it).
    assert summary["stale"] == []
