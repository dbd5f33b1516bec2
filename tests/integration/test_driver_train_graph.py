"""Issue 24, the `static` workload's driver side: `--train-graph-file` at 3.3.0 on the CPU backend. The driver
saves the training graph (forward, loss, gradients, SGD update) as OUT/train_graph.mnn with MNN's Variable::save,
trains by loading that file (Module::load, traced), and matches the dynamic run of the same seed and init: losses,
step-0/1 gradients and updated parameters, batch rows and dropout masks. MNN loads the file independently too
(`mnn_graph info`, built beside the driver). MnistV2, whose BatchNorm statistics live outside the graph, is refused.

The driver is the one test_gradients.py builds (its session fixture `built`), skipped where the 3.3.0 source is
absent, as every integration test is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .test_driver_models import EXIT_USAGE, drive, events
from .test_gradients import GOLDEN, Built
from .test_gradients import built as built  # the session fixture: the driver is built once, shared

pytestmark = pytest.mark.integration
STEPS = 5
DUMPED = (0, 1)
LENET = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "ip1.weight", "ip1.bias", "ip2.weight", "ip2.bias")
# Same ops on the same CPU kernels: seen bit-identical at 3.3.0 and 3.6.1 (30 steps); allow float32 reordering.
MAX_REL = 1e-5


def _common(dump: str) -> tuple[str, ...]:
    return ("--steps", str(STEPS), "--dump-steps", dump, "--test-limit", "100", "--init-params", str(GOLDEN / "init"))


def _rel(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(np.abs(a64 - b64).max() / max(float(np.abs(a64).max()), 1e-30))


def _one(record: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [e for e in record if e["event"] == name]
    assert len(found) == 1, (name, found)
    return found[0]


def test_the_saved_graph_trains_like_the_dynamic_one(built: Built) -> None:
    dump = ",".join(map(str, DUMPED))
    code, output, dynamic = drive(built, "graph-file-dynamic", *_common(dump))
    assert code == 0, output[-3000:]
    code, output, saved = drive(built, "graph-file-saved", *_common(dump), "--train-graph-file")
    assert code == 0, output[-3000:]
    record = events(saved)
    file = saved / "run" / "train_graph.mnn"
    written = _one(record, "train_graph_saved")
    assert Path(written["path"]) == file and written["bytes"] == file.stat().st_size > 0
    assert written["inputs"][:4] == ["image", "label", "lr", "dropout_mask"]
    assert sorted(written["outputs"]) == sorted(
        ["loss"] + [f"{kind}/{p}" for p in LENET for kind in ("next", "next_momentum", "grad")]
    )
    loaded = _one(record, "train_graph_loaded")
    assert (loaded["requested"], loaded["active"], loaded["exercised"], loaded["loaded"]) == ("cpu", "cpu", True, True)
    stages = [(e["name"], e.get("step")) for e in record if e["event"] == "stage"]
    expected: list[tuple[str, int | None]] = [("save_train_graph", None), ("load_train_graph", None)]
    for step in range(STEPS):
        expected += [("saved_step", step)] + ([("grad_dump", step)] if step in DUMPED else [])
    assert stages[stages.index(("save_train_graph", None)) : stages.index(("test", None))] == expected
    # Placement: the loaded file's ops, traced through its Session (none from building the graph in memory).
    ops = [e for e in record if e["event"] == "ops"]
    assert (ops[0]["phase"], ops[0]["total"]) == ("save_train_graph", 0)
    assert [e["phase"] for e in ops[1:]] == ["saved_step"] * STEPS
    assert all(e["total"] > 100 and set(e["by_backend"]) == {"cpu"} for e in ops[1:]), ops[1]
    assert all("Deconvolution" in e["by_backend"]["cpu"] for e in ops[1:])  # the conv weight gradient: #3129's op
    _same_training(events(dynamic), record)
    _same_dumps(dynamic / "run" / "grads", saved / "run" / "grads")
    _mnn_reads_the_file(built, file)


def _same_training(dynamic: list[dict[str, Any]], saved: list[dict[str, Any]]) -> None:
    a = [(e["step"], e["first_index"], e["loss"]) for e in dynamic if e["event"] == "step"]
    b = [(e["step"], e["first_index"], e["loss"]) for e in saved if e["event"] == "step"]
    assert [x[:2] for x in a] == [x[:2] for x in b] and len(a) == STEPS
    assert _rel(np.array([x[2] for x in a]), np.array([x[2] for x in b])) <= MAX_REL, (a, b)
    assert a[-1][2] < a[0][2]  # it learns (a graph fed back wrongly would not track the dynamic losses anyway)


def _same_dumps(dynamic: Path, saved: Path) -> None:
    for step in DUMPED:
        for kind in ("grad", "after"):
            for name in LENET:
                a, b = (
                    np.load(dynamic / f"step{step}/{kind}/{name}.npy"),
                    np.load(saved / f"step{step}/{kind}/{name}.npy"),
                )
                assert a.shape == b.shape and _rel(a, b) <= MAX_REL, (step, kind, name)
        for name in ("batch_indices.npy", "dropout_mask.npy"):
            assert (dynamic / f"step{step}" / name).read_bytes() == (saved / f"step{step}" / name).read_bytes(), name


def _mnn_reads_the_file(built: Built, file: Path) -> None:
    # mnn_graph (native/graph/, beside the driver) loads it with MNN: the parameters are graph inputs, not constants.
    completed = built.runner.run([str(built.driver.parent / "mnn_graph"), "info", "--graph", str(file)], timeout_s=60)
    assert completed.returncode == 0, completed.output[-3000:]
    kinds = {
        line.split("\t")[2]: line.split("\t")[1] for line in completed.output.splitlines() if line.count("\t") >= 3
    }
    assert all(kinds.get(f"param/{p}") == "INPUT" for p in LENET), kinds
    assert "TRAINABLE" not in kinds.values()


def test_a_model_with_state_outside_the_graph_is_refused(built: Built) -> None:
    code, output, out = drive(built, "graph-file-mnistv2", "--model", "mnistv2", "--steps", "1", "--train-graph-file")
    assert code == EXIT_USAGE, output[-3000:]
    error = _one(events(out), "error")
    assert error["message"] == "--train-graph-file: MnistV2 has state outside its training graph (TrainModel::state)"
    assert not (out / "run" / "train_graph.mnn").exists()


def test_the_flag_excludes_the_in_memory_graph(built: Built) -> None:
    code, output, out = drive(built, "graph-file-both", "--static-graph", "--train-graph-file")
    assert code == EXIT_USAGE and "cannot be combined with --static-graph" in output, output[-3000:]
    assert not (out / "run" / "events.jsonl").exists()  # refused before anything ran, like every usage error
