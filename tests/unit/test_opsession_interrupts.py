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

from mnnrepro import interrupts, opsession, optest, prepare
from mnnrepro.settings import Settings


def _fake_prepared(tmp_path: Path) -> Any:
    tree = SimpleNamespace(path=tmp_path, commit="0" * 40, version="3.3.0")
    binary = optest.Binary(tmp_path / "mnn_optest", ("op/a",), registered=("op/a",))
    builder = SimpleNamespace(optest=lambda core: binary, toolchain="fake")
    built = SimpleNamespace(tree=tree, runner=SimpleNamespace(name="host"), builder=builder, core=None)
    return SimpleNamespace(built=built, seconds={}, gdb_absent="", gdb_path=None)


def test_a_signal_between_the_last_cell_and_the_reports_still_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    prepared = _fake_prepared(tmp_path)
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
