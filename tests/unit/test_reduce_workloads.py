"""Issue 24: `reduce --workload W` captures W's first SGD step (its model and driver options), names W in
reduce.json and summary.json, refuses a resumed reduction of another workload and the `static` workload (its graph
is loaded from a file the capture does not save) before anything is built; `gradcheck verify` checks a golden
against its own model's float64 reference."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from mnnrepro import cli, fixtures, prepare
from mnnrepro.errors import ConfigError
from mnnrepro.runner import HostRunner
from mnnrepro.settings import Settings
from mnnrepro.workloads.reduce import search as reduce
from mnnrepro.workloads.reduce import session as redsession
from mnnrepro.workloads.train import workload as train
from mnnrepro.workloads.train.models import lenet

# A driver that records its argv and saves a "graph" where --save-graph says, as the capture expects.
FAKE_DRIVER = """#!/bin/sh
printf '%s\\n' "$@" > "$ARGV_OUT"
while [ $# -gt 0 ]; do case "$1" in --save-graph) out="$2";; esac; shift; done
mkdir -p "$out/inputs" && : > "$out/graph.mnn" && : > "$out/inputs/manifest.tsv"
"""


def _captured_argv(tmp_path: Path, workload: train.Training) -> list[str]:
    driver = tmp_path / "mnist_driver"
    driver.write_text(FAKE_DRIVER)
    driver.chmod(0o755)
    argv_out = tmp_path / "argv.txt"
    runner = HostRunner(base_env={"PATH": "/usr/bin:/bin", "ARGV_OUT": str(argv_out)})
    prepared = cast(prepare.Prepared, SimpleNamespace(built=SimpleNamespace(driver=driver, runner=runner)))
    results = tmp_path / "results"
    results.mkdir()
    out = redsession.capture(prepared, workload, results, lambda line: None)
    assert (out / "graph.mnn").is_file()
    return argv_out.read_text().splitlines()


def _workload(name: str) -> train.Training:
    return train.workload_of(fixtures.load_matrix(), Settings(), name)


def test_the_mnist_capture_is_the_command_line_it_always_was(tmp_path: Path) -> None:
    w = _workload("mnist")
    argv = _captured_argv(tmp_path, w)
    results = tmp_path / "results"
    want = ["--backend", "cpu", "--data", str(fixtures.MNIST), "--out", str(results / "capture"), "--steps", "1"]
    want += ["--batch-size", str(w.batch_size), "--seed", str(w.seed), "--precision", w.precision]
    assert argv == [*want, "--save-graph", str(results / "graph")]


def test_the_capture_runs_the_workloads_model_for_one_step(tmp_path: Path) -> None:
    argv = _captured_argv(tmp_path, _workload("mnistv2"))
    assert argv[argv.index("--model") + 1] == "mnistv2"
    assert argv[argv.index("--steps") + 1] == "1"
    assert argv[-2:] == ["--save-graph", str(tmp_path / "results" / "graph")]


def _no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def built(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a refused reduction got as far as preparing a build")

    monkeypatch.setattr(prepare, "preflight_for", built)
    monkeypatch.setattr(prepare, "prepare", built)


def _settings() -> Settings:
    return Settings(variants=("vulkan-image",), icds=("lavapipe",), ref="3.3.0")


def test_the_static_workload_is_refused_before_any_build_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_build(monkeypatch)
    with pytest.raises(ConfigError, match=r"workload static cannot be reduced.*train_graph\.mnn.*--save-graph"):
        redsession.run_reduce(_settings(), workload="static", say=lambda line: None)


def test_an_unknown_workload_and_a_given_graph_of_another_workload_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_build(monkeypatch)
    with pytest.raises(ConfigError, match="unknown workload 'nope'"):
        redsession.run_reduce(_settings(), workload="nope", say=lambda line: None)
    graph = tmp_path / "given"
    (graph / "inputs").mkdir(parents=True)
    (graph / "graph.mnn").write_bytes(b"x")
    (graph / "inputs" / "manifest.tsv").write_text("")
    with pytest.raises(ConfigError, match="is not workload mnistv2's graph"):
        redsession.run_reduce(_settings(), graph=graph, workload="mnistv2", say=lambda line: None)


@pytest.mark.parametrize(("recorded", "asked"), [("mnistv2", "mnist"), (None, "mnistv2")])
def test_a_resumed_reduction_of_another_workload_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: str | None, asked: str
) -> None:
    _no_build(monkeypatch)
    state = {"format": 1, "graph_sha256": "0", "trials": {}, **({"workload": recorded} if recorded else {})}
    (tmp_path / "reduce.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=f"reduces workload {recorded or 'mnist'}'s graph, not {asked}'s"):
        redsession.run_reduce(_settings(), resume=tmp_path, workload=asked, say=lambda line: None)


def test_reduce_json_names_a_workload_other_than_mnist(tmp_path: Path) -> None:
    (tmp_path / "graph.mnn").write_bytes(b"graph")
    spec = reduce.Spec(tmp_path / "mnn_graph", tmp_path, tmp_path, HostRunner(), "vulkan", None, {}, None, 1, 30.0)
    reduce.Reducer(spec, budget_s=1, say=lambda line: None, meta={"workload": "mnistv2"}).save()
    assert json.loads((tmp_path / "reduce.json").read_text())["workload"] == "mnistv2"
    reduce.Reducer(spec, budget_s=1, say=lambda line: None).save()  # MNIST's reduce.json: as before, no key
    assert "workload" not in json.loads((tmp_path / "reduce.json").read_text())


def test_the_aim_of_another_workload_is_its_own_row_or_its_graphs_own_failure() -> None:
    matrix = fixtures.load_matrix()
    # mnistv2's own #3129 row (3.3.0) is its target; where no row of that workload covers the cell (47027e10),
    # the graph's own failure is, never MNIST's row.
    aim = redsession.aim_for(matrix, "3.3.0", "vulkan-image", "lavapipe", "3.3.0", given=False, workload="mnistv2")
    assert aim.target is not None and aim.target.signal == "SIGSEGV"
    aim = redsession.aim_for(matrix, "47027e10", "vulkan-image", "lavapipe", "3.0.1", given=False, workload="mnistv2")
    assert aim.target is None and "of workload mnistv2" in aim.source
    # MNIST's row is still MNIST's target.
    assert redsession.aim_for(matrix, "3.3.0", "vulkan-image", "lavapipe", "3.3.0", given=False).target is not None


def test_reduce_takes_workload_on_its_command_line() -> None:
    args = cli.parser().parse_args(["reduce", "--workload", "mnistv2", "--icd", "lavapipe"])
    assert args.workload == "mnistv2"
    assert cli.parser().parse_args(["reduce", "--icd", "lavapipe"]).workload == "mnist"


def test_the_issue_report_names_the_reduced_workload(tmp_path: Path) -> None:
    from mnnrepro import issue

    summary: dict[str, Any] = {"session": "reduce", "ref": "3.3.0", "variant": "vulkan-image", "icd": "lavapipe"}
    summary.update(keep=[85], graph="mnistv2", workload="mnistv2", ops=[{"type": "Deconvolution"}], reduced_ops=1)
    crash = issue._reduce_crash(summary, tmp_path)
    assert "of workload mnistv2" in crash.where and "a training step of mnistv2" in issue.title(crash)
    assert issue._nox(crash).endswith("--icd lavapipe --workload mnistv2")
    mnist = issue._reduce_crash({**summary, "graph": "mnist", "workload": None}, tmp_path)
    assert "workload" not in issue._nox(mnist) + mnist.where + issue.title(mnist)


# -- gradcheck verify per workload ---------------------------------------------------------------------------------


def test_the_mnistv2_golden_verifies_against_its_own_model(tmp_path: Path) -> None:
    golden = fixtures.golden_dir("mnistv2", "3.3.0")
    report = train.verify_golden(golden)
    assert report.passed, report.table()
    assert {r.name for r in report.rows} >= {"bn.scale", "conv2.weight"}  # MnistV2's parameters, not Lenet's
    copy = tmp_path / "3.3.0"
    shutil.copytree(golden, copy)
    grad = copy / "step0" / "grad" / "conv2.weight.npy"
    np.save(grad, np.load(grad) * np.float32(1.01))
    planted = train.verify_golden(copy)
    assert not planted.passed
    assert {(r.name, r.step, r.kind) for r in planted.rows if not r.passed} == {("conv2.weight", 0, "grad")}


def test_the_mnist_golden_verifies_as_before() -> None:
    golden = fixtures.golden_dir("mnist", "3.3.0")
    new, old = train.verify_golden(golden), lenet.verify_golden(golden)
    assert new.passed and [r.to_dict() for r in new.rows] == [r.to_dict() for r in old.rows]


def test_gradcheck_verify_by_workload(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["gradcheck", "verify", "--workload", "mnistv2", "--ref", "3.3.0"]) == 0
    assert "MnistV2 reference vs" in capsys.readouterr().out
    assert cli.main(["gradcheck", "verify", str(fixtures.golden_dir("mnistv2", "3.6.1"))]) == 0
    # A golden of another workload than the one named is no pass.
    assert cli.main(["gradcheck", "verify", "--workload", "mnist", str(fixtures.golden_dir("mnistv2", "3.3.0"))]) == 1
    assert "it is workload mnistv2's golden, not mnist's" in capsys.readouterr().out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
