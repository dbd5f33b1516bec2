"""Knowledge kept in one place (code reviews of issues 23-25): gradcheck knows no model (each model's step inputs
come from its own module, through workloads.train.workload.MODELS); the vk_canary event is read by the one events
reader (contract.read_events); whether the validation layer watches a cell is one function (cells.is_validated)."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mnnrepro import cells, contract, gradcheck, validation
from mnnrepro.cells import Cell
from mnnrepro.contract import ContractError
from mnnrepro.workloads.train import workload as train
from mnnrepro.workloads.train.models import lenet, mnistv2

SRC = Path(gradcheck.__file__).parent

# -- gradcheck knows no model ---------------------------------------------------------------------------------------


def test_gradcheck_names_no_model() -> None:
    """No string in gradcheck's code (docstrings aside) is a model's name: the step inputs live with the models."""
    tree = ast.parse((SRC / "gradcheck.py").read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    named = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }
    assert not named & set(train.MODELS), sorted(named & set(train.MODELS))
    assert not hasattr(gradcheck, "STEP_INPUTS")


def test_each_models_step_inputs_come_from_its_module_through_models() -> None:
    assert train.MODELS["lenet"].step_inputs == lenet.STEP_INPUTS
    assert train.MODELS["mnistv2"].step_inputs == mnistv2.STEP_INPUTS
    assert [f for f, _ in lenet.STEP_INPUTS] == ["batch_indices.npy", "dropout_mask.npy"]
    assert [f for f, _ in mnistv2.STEP_INPUTS] == ["batch_indices.npy"]  # no dropout in MnistV2
    for name, model in train.MODELS.items():
        assert gradcheck.golden_model({"model": name}) == name
        assert gradcheck._STEP_INPUTS.inputs[name] == model.step_inputs
    assert gradcheck.golden_model({}) == train.DEFAULT_MODEL  # MNIST's goldens name no model: Lenet's


def _golden_and_run(tmp_path: Path, model: str | None) -> tuple[Path, Path]:
    """A one-tensor golden of ``model`` with a `noise.npy` step file, and a run that equals it."""
    golden = tmp_path / "golden" / "9.9.9"
    for kind in ("grad", "after"):
        (golden / "step0" / kind).mkdir(parents=True)
        np.save(golden / "step0" / kind / "w.npy", np.ones(3, np.float32))
    np.save(golden / "step0" / "batch_indices.npy", np.arange(4, dtype=np.float32))
    np.save(golden / "step0" / "noise.npy", np.zeros(2, np.float32))
    (golden / "init").mkdir()
    np.save(golden / "init" / "w.npy", np.zeros(3, np.float32))
    provenance = {"format": 1, "steps": [0], "config": {}, "parameters": [{"name": "w", "shape": [3]}]}
    if model is not None:
        provenance["model"] = model
    (golden / "provenance.json").write_text(json.dumps(provenance))
    run = tmp_path / "run"
    shutil.copytree(golden, run / "grads", ignore=shutil.ignore_patterns("init", "provenance.json"))
    start = {"v": 1, "event": "start", "config": {"dump_steps": [0], "steps": 1}}
    (run / "events.jsonl").write_text(json.dumps(start) + "\n")
    return golden, run


def test_check_run_compares_the_step_inputs_a_model_registers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gradcheck, "_STEP_INPUTS", gradcheck._StepInputRegistry())
    golden, run = _golden_and_run(tmp_path, "toy")
    unknown = gradcheck.check_run(run, golden, "vulkan", "high", write_artifacts=False)
    assert [p.what for p in unknown.problems] == ["bad golden"]  # a model nobody registered: never a pass
    assert "'toy': its step inputs are not known" in unknown.problems[0].detail
    gradcheck.register_step_inputs("toy", (("batch_indices.npy", "training images"), ("noise.npy", "noise")))
    assert gradcheck.check_run(run, golden, "vulkan", "high", write_artifacts=False).passed
    np.save(run / "grads" / "step0" / "noise.npy", np.ones(2, np.float32))
    differ = gradcheck.check_run(run, golden, "vulkan", "high", write_artifacts=False)
    assert [(p.what, p.name) for p in differ.problems] == [("inputs differ", "noise.npy")]
    assert "the run's noise are not the golden's" in differ.problems[0].detail


def test_a_golden_naming_no_model_is_the_registered_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gradcheck, "_STEP_INPUTS", gradcheck._StepInputRegistry())
    golden, run = _golden_and_run(tmp_path, None)
    np.save(run / "grads" / "step0" / "noise.npy", np.ones(2, np.float32))
    assert [p.what for p in gradcheck.check_run(run, golden, "vulkan", "high", write_artifacts=False).problems] == [
        "bad golden"
    ]  # no default registered: nothing says what the run must share
    gradcheck.register_step_inputs("toy", (("noise.npy", "noise"),), default=True)
    report = gradcheck.check_run(run, golden, "vulkan", "high", write_artifacts=False)
    assert [(p.what, p.name) for p in report.problems] == [("inputs differ", "noise.npy")]


# -- the vk_canary event: the one events reader ---------------------------------------------------------------------


def test_read_events_keeps_the_canary(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    canary = {"v": 1, "event": "vk_canary", "t": 0.1, "vuid": validation.CANARY_VUID, "made": True, "count": 1}
    events.write_text("\n".join(json.dumps(e) for e in ({"v": 1, "event": "start", "t": 0.0}, canary)) + "\n")
    assert contract.read_events(events).canary == canary
    assert validation.canary_event(events) == canary
    assert contract.read_events(tmp_path / "none.jsonl").canary is None


def test_canary_event_reads_through_contract_read_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []

    def read(path: Path) -> contract.RunRecord:
        seen.append(path)
        return contract.RunRecord(canary={"event": "vk_canary", "made": True, "count": 2})

    monkeypatch.setattr(validation, "read_events", read)
    assert validation.canary_event(tmp_path / "events.jsonl") == {"event": "vk_canary", "made": True, "count": 2}
    assert seen == [tmp_path / "events.jsonl"]

    def broken(path: Path) -> contract.RunRecord:
        raise ContractError(f"{path}:1: events version None, expected 1")

    monkeypatch.setattr(validation, "read_events", broken)
    assert validation.canary_event(tmp_path / "events.jsonl") is None  # events that break the contract prove nothing


def test_events_that_break_the_contract_prove_no_canary(tmp_path: Path) -> None:
    """An events file that is not the driver's (no version) is no proof the layer ran: NOT-EXERCISED."""
    (tmp_path / "events.jsonl").write_text(json.dumps({"event": "vk_canary", "made": True, "count": 1}) + "\n")
    assert validation.canary_event(tmp_path / "events.jsonl") is None
    record = validation.assess(
        tmp_path, ref="3.3.0", version=None, variant="vulkan-image", icd="-", mode="on", known=[]
    )
    assert record["status"] == validation.NOT_EXERCISED


# -- is this cell validated: one rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "mode", "watched"),
    [
        ("vulkan-image", "on", True),
        ("vulkan-buffer", "sync", True),
        ("vulkan-image", "off", False),
        ("cpu", "on", False),
        ("opencl", "sync", False),
    ],
)
def test_is_validated(variant: str, mode: str, watched: bool) -> None:
    assert cells.is_validated(Cell("3.3.0", variant, "lavapipe" if "vulkan" in variant else "-"), mode) is watched


def test_the_rule_is_written_once() -> None:
    """Every module under src/mnnrepro asks cells.is_validated; cells.py alone writes the rule (either way round:
    `!= "off" and ... == "vulkan"`, or its negation `== "off" or ... != "vulkan"`)."""
    rule = re.compile(
        r"""!=\s*["']off["'].*backend\s*==\s*["']vulkan["']|==\s*["']off["']\s+or\s.*backend\s*!=\s*["']vulkan["']"""
    )
    copies = {str(f.relative_to(SRC)): len(rule.findall(f.read_text())) for f in sorted(SRC.rglob("*.py"))}
    assert len(copies) > 20 and "workloads/ops/optest.py" in copies  # the scan reached the package's modules
    assert {f: n for f, n in copies.items() if n} == {"cells.py": 1}
    for user in ("workloads/train/session.py", "workloads/ops/optest.py", "workloads/ops/session.py"):
        assert "is_validated(" in (SRC / user).read_text(), user
