"""Issue 24: training workloads are data ([workloads.NAME] of fixtures/matrix.toml): --workload, rows that name
workloads, per-workload checks, fitted step counts, goldens and the zero-gradient rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnnrepro import fixtures, gradcheck, judge
from mnnrepro.cells import Cell
from mnnrepro.contract import RunRecord, Stage
from mnnrepro.errors import ConfigError, FixtureError
from mnnrepro.settings import Settings
from mnnrepro.workloads.train import session

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = """format = 1
[workloads.mnist]
model = "lenet"
steps = 4
[workloads.v2]
model = "mnistv2"
[[workloads.v2.fit]]
variant = "vulkan-image"
icd = "swiftshader"
steps = 2
reason = "measured: 40 s a step"
[[expect]]
variant = "cpu"
outcome = "pass"
[[expect]]
variant = "cpu"
workload = ["v2"]
outcome = "reproduce"
signal = "SIGSEGV"
stage = "forward"
"""


def _matrix(tmp_path: Path, text: str = MINIMAL) -> fixtures.Matrix:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return fixtures.load_matrix(path)


def test_the_matrix_names_every_workload_with_its_model() -> None:
    m = fixtures.load_matrix()
    assert {n: w.model for n, w in m.workloads.items()} == {"mnist": "lenet", "mnistv2": "mnistv2", "static": "lenet"}
    assert m.training == m.workloads["mnist"].training and m.training["steps"] == 30
    assert m.workloads["static"].driver_args == ("--train-graph-file",)
    assert m.workloads["static"].golden_workload == "mnist"
    assert m.workloads["mnistv2"].zero == ("conv1.bias",) and m.workloads["mnistv2"].zero_reason


def test_an_old_training_table_is_refused_saying_where_it_went(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match=r"\[training\] moved to \[workloads\.mnist\]"):
        _matrix(tmp_path, 'format = 1\n[training]\nsteps = 30\n[[expect]]\nvariant = "cpu"\noutcome = "pass"\n')


def test_a_row_without_workload_covers_mnist_only(tmp_path: Path) -> None:
    m = _matrix(tmp_path)
    mnist = m.expectation("1.0", "cpu", "-")
    v2 = m.expectation("1.0", "cpu", "-", workload="v2")
    assert mnist is not None and mnist.outcome == "pass"
    assert v2 is not None and v2.outcome == "reproduce"
    assert m.expectation("1.0", "cpu", "-", workload="other") is None
    assert m.likely_expectation("1.0", "cpu", "-", workload="v2") == v2


def test_a_row_naming_an_unknown_workload_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="workload 'nope' has no"):
        _matrix(tmp_path, MINIMAL + '[[expect]]\nvariant = "cpu"\nworkload = "nope"\noutcome = "pass"\n')


def test_fit_rows_give_the_steps_of_one_variant_on_one_icd(tmp_path: Path) -> None:
    spec = _matrix(tmp_path).workloads["v2"]
    fit = spec.fitted("vulkan-image", "swiftshader")
    assert fit is not None and fit.steps == 2 and "40 s" in fit.reason
    assert spec.fitted("vulkan-image", "lavapipe") is None and spec.fitted("vulkan-buffer", "swiftshader") is None


def test_the_workload_gives_the_driver_its_model_and_options_and_mnist_s_command_is_unchanged() -> None:
    from mnnrepro.workloads.train import workload as train

    m = fixtures.load_matrix()
    assert train.workload_of(m, Settings()).driver_args() == [
        "--steps", "30", "--batch-size", "64", "--seed", "1", "--precision", "high", "--test-limit", "0",
    ]  # fmt: skip
    assert train.workload_of(m, Settings(), "mnistv2").driver_args()[:2] == ["--model", "mnistv2"]
    assert "--train-graph-file" in train.workload_of(m, Settings(), "static").driver_args()


def test_an_unknown_workload_is_refused_before_any_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*_a: object, **_k: object) -> None:
        raise AssertionError("built")

    from mnnrepro import prepare

    monkeypatch.setattr(prepare, "preflight_for", no_build)
    monkeypatch.setattr(prepare, "prepare", no_build)
    with pytest.raises(ConfigError, match=r"unknown workload 'nope'.*mnist, mnistv2, static"):
        session.run_session("cpu", Settings(), workloads=("nope",), say=lambda _: None)


def test_cells_name_their_workload_only_when_it_is_not_mnist() -> None:
    assert Cell("3.3.0", "cpu", "-").id == "3.3.0/cpu/-"
    assert Cell("3.3.0", "cpu", "-", "mnistv2").id == "mnistv2:3.3.0/cpu/-"
    cells = session.cells_for("3.3.0", ("vulkan-buffer",), ("lavapipe",), "mnistv2")
    assert [c.id for c in cells] == ["mnistv2:3.3.0/cpu/-", "mnistv2:3.3.0/vulkan-buffer/lavapipe"]
    assert cells[0].dirname != Cell("3.3.0", "cpu", "-").dirname


def test_the_workloads_session_runs_every_workload_and_run_takes_workload() -> None:
    m = fixtures.load_matrix()
    assert session.session_workloads("workloads", m, None) == ("mnist", "mnistv2", "static")
    assert session.session_workloads("cpu", m, None) == ("mnist",)
    assert session.session_workloads("vulkan_buffer", m, ("mnistv2",)) == ("mnistv2",)
    assert session.SESSIONS["workloads"] == ("cpu", "vulkan-image", "vulkan-buffer")
    assert session.session_variants("workloads", Settings(variants=("cpu",))) == ("cpu",)
    from mnnrepro.cli import parser

    args = parser().parse_args(["run", "vulkan_buffer", "--workload", "mnistv2,static"])
    assert args.workload == "mnistv2,static"


def test_nox_has_a_workloads_session_and_ci_does_not_run_it() -> None:
    noxfile = (ROOT / "noxfile.py").read_text()
    assert "def workloads(session: nox.Session)" in noxfile and '"run", "workloads"' in noxfile
    assert "workloads" not in (ROOT / ".ci" / "run").read_text()


def _report(conv1_bias: float) -> gradcheck.GradReport:
    limit = gradcheck.Tolerance(1e-3, 0.999999, 1e-6)
    weight = np.array([0.38, -0.2, 0.1])
    report = gradcheck.GradReport("t")
    report.rows.append(gradcheck.make_row("conv1.weight", 0, "grad", weight * 1.0001, weight, limit))
    report.rows.append(gradcheck.make_row("conv1.bias", 0, "grad", np.array([conv1_bias, 0.0]), np.zeros(2), limit))
    return report


def test_a_zero_gradient_is_judged_by_an_absolute_limit_scaled_by_its_layer_weight() -> None:
    rule = gradcheck.ZeroRule(("conv1.bias",), 1e-3, "BatchNorm")
    noise = _report(4.5e-7)  # MNN's float32 rounding at 3.3.0
    assert not noise.rows[1].passed  # the relative metrics call noise a failure
    rule.apply(noise)
    assert noise.passed and noise.rows[1].abs_limit == pytest.approx(0.38e-3)
    planted = _report(0.01)  # a real bias gradient, 2.6% of the weight's: must still fail
    rule.apply(planted)
    assert not planted.passed and "conv1.bias" in planted.summary()


def test_a_zero_tensor_without_its_layer_weight_fails() -> None:
    report = _report(1e-9)
    report.rows.pop(0)
    gradcheck.ZeroRule(("conv1.bias",), 1e-3).apply(report)
    assert not report.passed


def test_the_mnistv2_golden_passes_its_reference_and_fails_with_a_planted_conv1_bias(tmp_path: Path) -> None:
    import shutil

    from mnnrepro.workloads.train import workload as train
    from mnnrepro.workloads.train.models import lenet

    golden = fixtures.golden_dir("mnistv2", "3.3.0")
    if not (golden / "provenance.json").is_file():
        pytest.fail(f"no mnistv2 golden at {golden}: python -m mnnrepro golden --workload mnistv2 --ref 3.3.0")
    spec = fixtures.load_matrix().workloads["mnistv2"]
    import json

    provenance = json.loads((golden / "provenance.json").read_text())
    sgd = lenet.sgd_config(provenance["config"])

    def check(root: Path) -> gradcheck.GradReport:
        dumps = gradcheck.Dumps(root, root / "init")
        return train.check_against_reference(spec, dumps, [0], sgd=sgd, losses=provenance["losses"])

    assert check(golden).passed
    copy = tmp_path / "golden"
    shutil.copytree(golden, copy)
    grad = copy / "step0" / "grad" / "conv1.bias.npy"
    np.save(grad, np.load(grad) + np.float32(0.01))
    assert not check(copy).passed


def test_a_gpu_run_against_the_mnistv2_golden_needs_no_dropout_mask(tmp_path: Path) -> None:
    """check_run compares the step inputs of the golden's model: MnistV2 has no dropout mask."""
    golden = fixtures.golden_dir("mnistv2", "3.3.0")
    rule = gradcheck.ZeroRule(("conv1.bias",), 1e-3)
    run = tmp_path / "run"
    import shutil

    shutil.copytree(golden, run / "grads", ignore=shutil.ignore_patterns("init", "provenance.json", "MANIFEST.json"))
    import json

    config = {**json.loads((golden / "provenance.json").read_text())["config"], "dump_steps": [0, 1], "steps": 2}
    (run / "events.jsonl").write_text(json.dumps({"v": 1, "event": "start", "config": config}) + "\n")
    report = gradcheck.check_run(run, golden, "vulkan", "high", zero=rule)
    assert report.passed, report.table()
    assert not any("dropout" in str(p) for p in report.problems)


def test_an_unmeasured_check_is_n_a_with_why_never_a_failure(tmp_path: Path) -> None:
    from mnnrepro.cells import CellRun
    from mnnrepro.runner import Completed

    rec = RunRecord(backend={"requested": "cpu", "active": "cpu", "exercised": True})
    for i in range(30):
        rec.stages += [Stage("forward", i, 0.0), Stage("sgd_step", i, 0.0)]
        rec.steps.append({"step": i, "loss": 2.3 - 0.01 * i})
    rec.stages += [Stage("test", None, 0.0), Stage("done", None, 0.0)]
    rec.test, rec.done = {"accuracy": 0.2}, True
    cell = Cell("3.3.0", "cpu", "-", "mnistv2")
    run = CellRun(cell, tmp_path, Completed(argv=(), returncode=0, duration_s=1.0), rec, None, [], gdb=False)
    row = fixtures.Expectation(("*",), "cpu", "*", "pass", workloads=("mnistv2",))
    checks = {"absolute_min_steps": 30, "min_accuracy": 0.5}
    failed = judge.judge(run, row, steps=30, checks=checks, baseline=None)
    assert failed.verdict == judge.FAIL
    why = "BatchNorm's running variance starts at 0"
    v = judge.judge(run, row, steps=30, checks=checks, baseline=None, unmeasured={"accuracy": why})
    assert v.verdict == judge.PASS, v.reason
    status = {c.name: (c.status, c.detail) for c in v.checks}
    assert status["accuracy"][0] == "n/a" and why in status["accuracy"][1]
