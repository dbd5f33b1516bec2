"""reuse: a stored CPU baseline run comes back as the driver left it, under a key that changes with every input."""

from __future__ import annotations

import json
from pathlib import Path

from mnnrepro import reuse
from mnnrepro.cells import Cell, run_cell
from mnnrepro.runner import HostRunner
from mnnrepro.workloads.train.workload import Training

EVENTS = [
    {"v": 1, "event": "start", "t": 0.0},
    {"v": 1, "event": "backend", "t": 0.1, "requested": "cpu", "active": "cpu", "exercised": True},
    *({"v": 1, "event": "step", "t": 0.2 + i, "step": i, "loss": 2.3 - i * 0.1, "lr": 0.01} for i in range(3)),
    {"v": 1, "event": "test", "t": 3.5, "correct": 70, "total": 100, "accuracy": 0.7, "ms": 1.0},
    {"v": 1, "event": "done", "t": 3.6, "exit_code": 0},
]
DRIVER = (
    '#!/bin/sh\nout=""\nfor a in "$@"; do [ "$prev" = "--out" ] && out="$a"; prev="$a"; done\n'
    'mkdir -p "$out/grads/step0" && echo dump > "$out/grads/step0/ip1.weight.npy"\n'
    "cat > \"$out/events.jsonl\" <<'JSON'\n" + "".join(json.dumps(e) + "\n" for e in EVENTS) + "JSON\n"
)


def parts(tmp_path: Path, **change: object) -> dict[str, object]:
    manifest = tmp_path / "MANIFEST.json"
    if not manifest.exists():
        manifest.write_text('{"files": {}}')
    args: dict[str, object] = {
        "core_key": "c" * 24,
        "driver": tmp_path / "build" / "driver-1" / "mnist_driver",
        "runner": "host",
        "image": None,
        "argv": ["--steps", "3", "--save-init", str(tmp_path / "results" / "cells" / "x" / "init")],
        "results": tmp_path / "results",
        "manifests": [manifest],
    }
    args.update(change)
    return reuse.key_parts(**args)  # type: ignore[arg-type]


def test_the_key_names_every_input_but_not_the_sessions_own_directory(tmp_path: Path) -> None:
    base = reuse.key_of(parts(tmp_path))
    # Another session's results directory, same run: same key.
    other = tmp_path / "elsewhere"
    moved = ["--steps", "3", "--save-init", str(other / "cells" / "x" / "init")]
    assert reuse.key_of(parts(tmp_path, argv=moved, results=other)) == base
    assert reuse.key_of(parts(tmp_path, core_key="d" * 24)) != base
    assert reuse.key_of(parts(tmp_path, runner="docker", image="sha256:1")) != base
    assert reuse.key_of(parts(tmp_path, argv=["--steps", "4"])) != base
    (tmp_path / "MANIFEST.json").write_text('{"files": {"a": 1}}')  # a changed fixture or golden
    assert reuse.key_of(parts(tmp_path)) != base


def test_a_stored_run_comes_back_whole_into_the_new_result_dir(tmp_path: Path) -> None:
    driver = tmp_path / "mnist_driver"
    driver.write_text(DRIVER)
    driver.chmod(0o755)
    cell = Cell("3.3.0", "cpu", "-")
    workload = Training(steps=3, batch_size=8, seed=1, precision="high", test_limit=100)
    first = run_cell(
        cell,
        driver=driver,
        plugin=None,
        icd=None,
        workload=workload,
        timeout_s=30,
        runner=HostRunner(),
        result_dir=tmp_path / "s1" / "cpu",
        use_gdb=False,
    )
    store = tmp_path / "store"
    key = reuse.key_of(parts(tmp_path))
    assert reuse.load(store, key, cell, tmp_path / "s2" / "cpu") is None  # nothing stored yet
    reuse.save(store, key, parts(tmp_path), first)
    loaded = reuse.load(store, key, cell, tmp_path / "s2" / "cpu")
    assert loaded is not None
    run, info = loaded
    assert run.result_dir == tmp_path / "s2" / "cpu"
    assert run.record.losses == first.record.losses and run.record.accuracy == 0.7
    assert run.completed.returncode == 0 and run.argv == first.argv
    assert (run.result_dir / "grads" / "step0" / "ip1.weight.npy").read_text() == "dump\n"
    assert info["key"] == key and info["from"] == str(first.result_dir)
    # A torn entry (no cell.json) is not reused: the cell runs again.
    (reuse.entry(store, key) / "run" / "cell.json").unlink()
    assert reuse.load(store, key, cell, tmp_path / "s3" / "cpu") is None
