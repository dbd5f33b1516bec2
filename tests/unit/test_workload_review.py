"""Review findings on the training workloads (issue 24): a session golden names its workload as a committed one
does, --variants outside session workloads, fit rows and zero names checked at load, one ABSOLUTE_CHECKS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mnnrepro import fixtures, judge
from mnnrepro.cells import Cell, CellRun
from mnnrepro.cli import main
from mnnrepro.contract import RunRecord
from mnnrepro.errors import ConfigError, FixtureError
from mnnrepro.runner import Completed
from mnnrepro.settings import Settings
from mnnrepro.workloads.train import session
from mnnrepro.workloads.train import workload as train


def _cpu_run_from(golden: Path, where: Path, workload: str) -> CellRun:
    """A CPU cell's result dir (init/, grads/stepN/, its start config and losses) made of a committed golden."""
    provenance = json.loads((golden / "provenance.json").read_text())
    shutil.copytree(golden / "init", where / "init")
    for step in provenance["steps"]:
        shutil.copytree(golden / f"step{step}", where / "grads" / f"step{step}")
    record = RunRecord(
        start={"config": provenance["config"]},
        steps=[{"step": i, "loss": loss} for i, loss in enumerate(provenance["losses"])],
    )
    completed = Completed(argv=(), returncode=0, duration_s=1.0)
    return CellRun(Cell("3.3.0", "cpu", "-", workload), where, completed, record, None, [], gdb=False)


def test_a_session_golden_of_mnistv2_verifies_as_mnistv2_with_the_committed_golden_s_keys(tmp_path: Path) -> None:
    committed = fixtures.golden_dir("mnistv2", "3.3.0")
    matrix = fixtures.load_matrix()
    wl = train.workload_of(matrix, Settings(), "mnistv2")
    run = _cpu_run_from(committed, tmp_path / "cell", "mnistv2")
    dest = session.make_session_golden(run, [0, 1], tmp_path / "golden" / "mnistv2" / "3.3.0", "3.3.0", wl)
    written = json.loads((dest / "provenance.json").read_text())
    old = json.loads((committed / "provenance.json").read_text())
    assert (written["workload"], written["model"]) == (old["workload"], old["model"]) == ("mnistv2", "mnistv2")
    report = train.verify_golden(dest, matrix, workload="mnistv2")
    assert not report.problems, report.problems
    assert report.passed and "MnistV2 reference" in report.title
    assert "MnistV2 reference" in train.verify_golden(dest, matrix).title  # `gradcheck verify DIR`: no --workload


def test_mnist_s_session_golden_names_no_workload_as_before(tmp_path: Path) -> None:
    committed = fixtures.golden_dir("mnist", "3.3.0")
    wl = train.workload_of(fixtures.load_matrix(), Settings())
    run = _cpu_run_from(committed, tmp_path / "cell", "mnist")
    dest = session.make_session_golden(run, [0, 1], tmp_path / "golden" / "3.3.0", "3.3.0", wl)
    written = json.loads((dest / "provenance.json").read_text())
    assert "workload" not in written and "model" not in written
    assert train.golden_identity(wl) == {}
    assert train.golden_identity(train.workload_of(fixtures.load_matrix(), Settings(), "static")) == {
        "workload": "static",
        "model": "lenet",
    }


def test_variants_outside_session_workloads_is_refused_before_any_build(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_build(*_a: object, **_k: object) -> None:
        raise AssertionError("built")

    from mnnrepro import prepare

    monkeypatch.setattr(prepare, "preflight_for", no_build)
    monkeypatch.setattr(prepare, "prepare", no_build)
    with pytest.raises(ConfigError, match=r"session vulkan runs its own variants.*only session workloads"):
        session.run_session("vulkan", Settings(variants=("cpu",)), say=lambda _: None)
    assert session.session_variants("workloads", Settings(variants=("cpu",))) == ("cpu",)
    assert session.session_variants("cpu", Settings()) == ("cpu",)
    assert main(["run", "cpu", "--variants", "vulkan-buffer"]) == ConfigError.exit_code
    assert "--variants vulkan-buffer" in capsys.readouterr().err


FIT = """format = 1
[workloads.mnist]
model = "lenet"
[workloads.v2]
model = "mnistv2"
[[workloads.v2.fit]]
variant = "{variant}"
icd = "{icd}"
steps = 2
reason = "measured"
"""


def _load(tmp_path: Path, text: str) -> fixtures.Matrix:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return fixtures.load_matrix(path)


@pytest.mark.parametrize(
    ("variant", "icd", "error"),
    [
        ("vulkan-imgae", "swiftshader", r"variant = 'vulkan-imgae': matches none of cpu"),
        ("vulkan-image", "swiftshadr", r"icd = 'swiftshadr': matches none of lavapipe"),
        ("vulkan-*", "lava*x", r"icd = 'lava\*x'"),
    ],
)
def test_a_fit_row_matching_no_cell_is_refused_at_load(tmp_path: Path, variant: str, icd: str, error: str) -> None:
    with pytest.raises(FixtureError, match=error):
        _load(tmp_path, FIT.format(variant=variant, icd=icd))


def test_fit_rows_take_patterns_and_the_no_icd_dash(tmp_path: Path) -> None:
    spec = _load(tmp_path, FIT.format(variant="vulkan-*", icd="swift*")).workloads["v2"]
    assert spec.fitted("vulkan-buffer", "swiftshader") is not None
    spec = _load(tmp_path, FIT.format(variant="opencl", icd="-")).workloads["v2"]
    assert spec.fitted("opencl", "-") is not None


ZERO = """format = 1
[workloads.mnist]
model = "lenet"
[workloads.v2]
model = "mnistv2"
[workloads.v2.gradcheck]
zero = {zero}
zero_limit = 1e-3
reason = "BatchNorm follows conv1"
"""


def test_an_empty_zero_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match=r"zero = \[\]"):
        _load(tmp_path, ZERO.format(zero="[]"))


def test_a_zero_name_the_model_lacks_is_refused_before_any_build(tmp_path: Path) -> None:
    matrix = _load(tmp_path, ZERO.format(zero='["conv1.bais"]'))
    with pytest.raises(FixtureError, match=r"conv1\.bais: no parameter of model mnistv2.*conv1\.bias"):
        train.workload_of(matrix, Settings(), "v2")
    with pytest.raises(FixtureError, match=r"conv1\.bais"):
        session.session_workloads("workloads", matrix, None)
    good = _load(tmp_path, ZERO.format(zero='["conv1.bias"]'))
    rule = train.zero_rule(good.workloads["v2"])
    assert rule is not None and rule.names == ("conv1.bias",)


def test_absolute_checks_are_defined_once() -> None:
    assert vars(judge)["ABSOLUTE_CHECKS"] is fixtures.ABSOLUTE_CHECKS  # the judge's is the matrix's, not a copy
