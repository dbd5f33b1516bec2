"""gradcheck: metrics, the golden-vs-run comparison, its problems and its failure table, on synthetic trees."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np
import pytest

from mnnrepro import fixtures, gradcheck
from mnnrepro.cells import Cell
from mnnrepro.errors import FixtureError
from mnnrepro.gradcheck import GradReport, Tolerance, check_run, compare, make_row, tolerance_for
from mnnrepro.prepare import Prepared
from mnnrepro.settings import Settings
from mnnrepro.workloads.train.models import lenet
from mnnrepro.workloads.train.session import MnistRef
from mnnrepro.workloads.train.workload import Training

SHAPES = {"a.weight": (3, 4), "a.bias": (4,)}
STEPS = (0, 1)
TIGHT = Tolerance(1e-3, 0.999999, 1e-6, "test")


def write_tree(root: Path, *, seed: int, init: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """step<N>/{grad,after}/<name>.npy + batch_indices/dropout_mask, like the driver's --dump-steps."""
    rng = np.random.default_rng(seed)
    params = init or {n: rng.normal(0, 0.1, s).astype(np.float32) for n, s in SHAPES.items()}
    current = dict(params)
    for step in STEPS:
        rng = np.random.default_rng(100 + step)  # the same gradients for every tree of this test
        d = root / f"step{step}"
        for kind in ("grad", "after"):
            (d / kind).mkdir(parents=True, exist_ok=True)
        np.save(d / "batch_indices.npy", np.arange(4, dtype=np.float32) + step)
        np.save(d / "dropout_mask.npy", np.tile(np.array([0.0, 2.0], np.float32), (4, 2)))
        for name, shape in SHAPES.items():
            grad = rng.normal(0, 0.05, shape).astype(np.float32)
            np.save(d / "grad" / f"{name}.npy", grad)
            current[name] = (current[name] - 0.01 * grad).astype(np.float32)
            np.save(d / "after" / f"{name}.npy", current[name])
    return params


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    root = tmp_path / "golden" / "9.9.9"
    params = write_tree(root, seed=1)
    (root / "init").mkdir()
    for name, value in params.items():
        np.save(root / "init" / f"{name}.npy", value)
    provenance = {
        "format": 1,
        "ref": "9.9.9",
        "steps": list(STEPS),
        "config": {"batch_size": 4, "seed": 1, "dropout": 0.5},
        "parameters": [{"name": n, "shape": list(s)} for n, s in SHAPES.items()],
    }
    (root / "provenance.json").write_text(json.dumps(provenance))
    return root


def make_run(tmp_path: Path, golden: Path, name: str = "run", **config: object) -> Path:
    """A result directory whose dumps equal the golden's (copied), with the driver's start event."""
    run = tmp_path / name
    shutil.copytree(golden, run / "grads", ignore=shutil.ignore_patterns("init", "provenance.json"))
    start = {"batch_size": 4, "seed": 1, "dropout": 0.5, "dump_steps": ["0", "1"], **config}
    (run / "events.jsonl").write_text(json.dumps({"v": 1, "event": "start", "t": 0, "config": start}) + "\n")
    return run


def edit(path: Path, change: Callable[[np.ndarray], np.ndarray] | np.ndarray) -> None:
    np.save(path, change(np.load(path)) if callable(change) else change)


# -- metrics ------------------------------------------------------------------------------------------------------


def test_identical_arrays_have_zero_error() -> None:
    g = np.arange(12.0).reshape(3, 4) - 5
    m = compare(g, g)
    assert (m.max_abs, m.max_rel, m.nmse) == (0.0, 0.0, 0.0)
    assert m.cosine == pytest.approx(1.0)


def test_metrics_of_a_uniform_scale_error() -> None:
    g = np.linspace(-1, 2, 30)
    m = compare(1.01 * g, g)
    assert m.max_abs == pytest.approx(0.02)
    assert m.max_rel == pytest.approx(0.01)  # relative to the tensor's scale, max|g| = 2
    assert m.nmse == pytest.approx(1e-4)
    assert m.cosine == pytest.approx(1.0)  # direction unchanged: only max_rel and nmse see a scale error
    assert m.worst_index == (29,)


def test_metrics_of_one_planted_element() -> None:
    g = np.ones((5, 7))
    o = g.copy()
    o[3, 4] = 1.5
    m = compare(o, g)
    assert m.worst_index == (3, 4)
    assert (m.worst_obtained, m.worst_golden) == (1.5, 1.0)
    assert m.max_rel == pytest.approx(0.5)
    assert m.nmse == pytest.approx(0.25 / 35)
    assert m.cosine < 1.0


def test_metrics_of_zero_tensors() -> None:
    z = np.zeros(4)
    assert compare(z, z).cosine == 1.0 and compare(z, z).max_rel == 0.0
    m = compare(np.array([0.0, 1e-3, 0.0, 0.0]), z)
    assert math.isinf(m.max_rel) and math.isinf(m.nmse) and m.cosine == 0.0


def test_compare_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        compare(np.zeros(3), np.zeros(4))


def test_a_row_fails_on_any_one_metric() -> None:
    g = np.linspace(-1, 1, 100)
    assert make_row("t", 0, "grad", g * (1 + 1e-5), g, TIGHT).passed
    only_rel = Tolerance(1e-3, -1.0, math.inf, "only max_rel binds")
    only_nmse = Tolerance(math.inf, -1.0, 1e-6, "only nmse binds")
    only_cos = Tolerance(math.inf, 0.999999, math.inf, "only cosine binds")
    assert not make_row("t", 0, "grad", g * 1.01, g, only_rel).passed  # max_rel 1e-2
    assert make_row("t", 0, "grad", g * 1.0001, g, only_rel).passed
    assert not make_row("t", 0, "grad", g * 1.01, g, only_nmse).passed  # nmse 1e-4
    assert make_row("t", 0, "grad", g * 1.01, g, only_cos).passed  # a pure scale error keeps the direction
    assert not make_row("t", 0, "grad", g[::-1] + 0.1, g, only_cos).passed


# -- tolerances (fixtures/matrix.toml) --------------------------------------------------------------------------------


def test_tolerances_come_from_the_matrix_per_backend_precision_and_step() -> None:
    first = tolerance_for("vulkan", "high", 0)
    later = tolerance_for("vulkan", "high", 1)
    fp16 = tolerance_for("vulkan", "normal", 0)
    assert (first.name, later.name, fp16.name) == ("fp32/first", "fp32/later", "fp16/first")
    assert first.max_rel < later.max_rel and first.max_rel < fp16.max_rel
    assert first.min_cosine > fp16.min_cosine
    assert tolerance_for("cpu", "high", 0) == first


def test_an_unknown_backend_has_no_tolerance() -> None:
    with pytest.raises(FixtureError, match="metal"):
        tolerance_for("metal", "high", 0)


def test_gradcheck_table_rejects_unknown_keys_and_classes(tmp_path: Path) -> None:
    text = fixtures.MATRIX.read_text()
    typo = tmp_path / "typo.toml"
    typo.write_text(text.replace("[gradcheck]\n", "[gradcheck]\nmax_rell = 1\n"))
    with pytest.raises(FixtureError, match="max_rell"):
        fixtures.load_matrix(typo)
    bad_class = tmp_path / "class.toml"
    bad_class.write_text(text.replace('cpu = { high = "fp32"', 'cpu = { high = "fp8"'))
    with pytest.raises(FixtureError, match="fp8"):
        fixtures.load_matrix(bad_class)
    missing = tmp_path / "missing.toml"
    missing.write_text(text.replace("first = { max_rel = 1e-3, ", "first = { ", 1))
    with pytest.raises(FixtureError, match="max_rel"):
        fixtures.load_matrix(missing)


# -- check_run -------------------------------------------------------------------------------------------------------


def test_a_run_equal_to_the_golden_passes(tmp_path: Path, golden: Path) -> None:
    report = check_run(make_run(tmp_path, golden), golden, "vulkan", "high")
    assert report.passed, report.table()
    assert len(report.rows) == len(STEPS) * 2 * len(SHAPES)
    assert {(r.step, r.limit.name) for r in report.rows} == {(0, "fp32/first"), (1, "fp32/later")}
    assert "PASS" in report.table().splitlines()[0]


def test_a_planted_gradient_error_is_named_with_its_element(tmp_path: Path, golden: Path) -> None:
    run = make_run(tmp_path, golden)
    path = run / "grads" / "step0" / "grad" / "a.weight.npy"
    planted = np.load(path)
    planted[1, 2] += 0.01
    np.save(path, planted)
    report = check_run(run, golden, "vulkan", "high")
    assert not report.passed
    failed = report.failed_rows
    assert [(r.name, r.step, r.kind) for r in failed] == [("a.weight", 0, "grad")]
    assert failed[0].worst_index == (1, 2)
    table = report.table()
    first_row = table.splitlines()[3]
    assert first_row.startswith("a.weight") and "(1,2)" in first_row and first_row.endswith("FAIL")
    # the obtained values are written beside the golden's, in the result dir; the golden is untouched
    out = run / "gradcheck" / "step0" / "grad"
    assert np.load(out / "a.weight.obtained.npy")[1, 2] == pytest.approx(planted[1, 2])
    assert np.array_equal(np.load(out / "a.weight.golden.npy"), np.load(golden / "step0" / "grad" / "a.weight.npy"))
    assert not list(golden.rglob("*.obtained.npy"))
    assert "FAIL" in (run / "gradcheck" / "report.txt").read_text()
    assert json.loads((run / "gradcheck" / "report.json").read_text())["passed"] is False
    assert "a.weight step 0 grad" in report.summary()


def test_a_wrong_update_fails_the_after_row_only(tmp_path: Path, golden: Path) -> None:
    """'after' compares the update (after - before): a 10% larger learning rate at step 1, gradients intact."""
    run = make_run(tmp_path, golden)
    for name in SHAPES:
        before = np.load(run / "grads" / "step0" / "after" / f"{name}.npy")
        path = run / "grads" / "step1" / "after" / f"{name}.npy"
        edit(path, before + 1.1 * (np.load(path) - before))
    report = check_run(run, golden, "vulkan", "high")
    failed = {(r.name, r.step, r.kind) for r in report.failed_rows}
    assert failed == {(n, 1, "after") for n in SHAPES}
    assert all(r.passed for r in report.rows if r.kind == "grad")


def test_nan_is_a_failure_of_its_own(tmp_path: Path, golden: Path) -> None:
    run = make_run(tmp_path, golden)
    edit(run / "grads" / "step1" / "grad" / "a.bias.npy", lambda a: np.where(np.arange(4) == 2, np.nan, a))
    report = check_run(run, golden, "vulkan", "high")
    assert not report.passed
    assert [(p.what, p.name, p.step) for p in report.problems] == [("non-finite", "a.bias", 1)]
    assert "1 NaN" in report.problems[0].detail and "(2,)" in report.problems[0].detail
    assert "NON-FINITE [step 1 grad a.bias]" in report.table()
    assert (run / "gradcheck" / "step1" / "grad" / "a.bias.obtained.npy").is_file()


def test_inf_and_shape_mismatch_and_missing_file_are_each_named(tmp_path: Path, golden: Path) -> None:
    run = make_run(tmp_path, golden)
    edit(run / "grads" / "step0" / "grad" / "a.bias.npy", lambda a: a * np.inf)
    edit(run / "grads" / "step1" / "grad" / "a.weight.npy", np.zeros((4, 3), np.float32))
    (run / "grads" / "step1" / "after" / "a.bias.npy").unlink()
    report = check_run(run, golden, "vulkan", "high")
    found = {(p.what, p.name, p.step, p.kind) for p in report.problems}
    assert ("non-finite", "a.bias", 0, "grad") in found
    assert ("shape mismatch", "a.weight", 1, "grad") in found
    assert ("missing file", "a.bias", 1, "after") in found
    assert "(4, 3)" in str(next(p for p in report.problems if p.what == "shape mismatch"))


def test_a_missing_golden_fails_and_says_how_to_make_it(tmp_path: Path, golden: Path) -> None:
    run = make_run(tmp_path, golden)
    report = check_run(run, tmp_path / "golden" / "1.2.3", "vulkan", "high")
    assert not report.passed
    assert report.problems[0].what == "missing golden"
    assert "python -m mnnrepro golden --ref 1.2.3" in report.summary()


def test_a_golden_that_lists_no_parameters_is_no_pass(tmp_path: Path, golden: Path) -> None:
    """gradcheck knows no model (issue 23): a golden whose provenance lists no parameters is a bad golden, not a
    comparison of nothing (before, Lenet's shapes were assumed, whatever the golden's model)."""
    path = golden / "provenance.json"
    provenance = json.loads(path.read_text())
    del provenance["parameters"]
    path.write_text(json.dumps(provenance))
    report = gradcheck.check_run(make_run(tmp_path, golden), golden, "vulkan", "high")
    assert not report.passed and not report.rows
    assert [p.what for p in report.problems] == ["bad golden"]
    assert "lists no parameters" in report.problems[0].detail


def test_other_batches_or_config_make_the_run_incomparable(tmp_path: Path, golden: Path) -> None:
    run = make_run(tmp_path, golden, seed=2)
    edit(run / "grads" / "step1" / "batch_indices.npy", lambda a: a[::-1].copy())
    report = check_run(run, golden, "vulkan", "high")
    whats = {p.what for p in report.problems}
    assert {"inputs differ", "config differs"} <= whats
    assert "seed" in str(next(p for p in report.problems if p.what == "config differs"))


def test_a_run_without_dumps_is_one_clear_problem(tmp_path: Path, golden: Path) -> None:
    run = make_run(tmp_path, golden)
    shutil.rmtree(run / "grads")
    report = check_run(run, golden, "vulkan", "high")
    assert len(report.problems) == 1 and not report.rows
    assert "--dump-steps 0,1 --init-params" in report.problems[0].detail


def test_a_run_that_dumped_fewer_steps_is_told_the_driver_options(tmp_path: Path, golden: Path) -> None:
    run = make_run(tmp_path, golden, dump_steps=["0"])
    report = check_run(run, golden, "vulkan", "high")
    assert any("--dump-steps 0,1" in p.detail for p in report.problems)


def test_initial_parameters_other_than_the_golden_are_named(tmp_path: Path, golden: Path) -> None:
    run = make_run(tmp_path, golden)
    shutil.copytree(golden / "init", run / "init")
    edit(run / "init" / "a.bias.npy", lambda a: a + np.float32(0.5) * (np.arange(4) == 0))
    report = check_run(run, golden, "vulkan", "high")
    problem = next(p for p in report.problems if p.what == "initial parameters differ")
    assert "a.bias" in problem.detail and "a.weight" not in problem.detail


def test_the_table_puts_failures_first_and_can_be_shortened() -> None:
    g = np.linspace(-1, 1, 50)
    rows = [make_row(f"t{i}", 0, "grad", g * (1 + 10.0**-i), g, TIGHT) for i in range(2, 7)]
    report = GradReport("synthetic", rows)
    lines = report.table(limit=2).splitlines()
    assert lines[3].startswith("t2") and lines[3].endswith("FAIL")
    assert lines[4].startswith("t3") and lines[4].endswith("ok")
    assert "3 more tensor(s)" in lines[-1]


def test_driver_args_for_a_golden(golden: Path) -> None:
    args = gradcheck.driver_args(golden)
    assert args == ("--dump-steps", "0,1", "--init-params", str(golden / "init"))


# -- which comparison a CPU run gets (issue 10, item 6: portable goldens) -----------------------------------------

MACHINE = {"format": 1, "arch": "x86_64", "mnn_x86_kernels": "avx2+fma", "rcpps": "sha256:86b782acf9498985"}


def with_machine(golden: Path, machine: dict[str, object] | None, threads: int = 4) -> Path:
    path = golden / "provenance.json"
    provenance = json.loads(path.read_text())
    provenance["config"]["threads"] = threads
    provenance.pop("machine", None)
    if machine is not None:
        provenance["machine"] = machine
    path.write_text(json.dumps(provenance))
    return golden


def test_same_machine_and_threads_get_the_bit_level_comparison(golden: Path) -> None:
    result = gradcheck.golden_comparison(with_machine(golden, MACHINE), {"threads": 4}, here={**MACHINE, "cpu": "x"})
    assert result.bit_level and result.reasons == ()
    assert str(result).startswith("bit-level comparison")


def test_another_rcpps_table_gets_the_fp32_tolerance_and_says_why(golden: Path) -> None:
    here = {**MACHINE, "rcpps": "sha256:315610cdc419d6a7"}
    result = gradcheck.golden_comparison(with_machine(golden, MACHINE), {"threads": 4}, here=here)
    assert not result.bit_level
    assert str(result).startswith("fp32-tolerance comparison")
    assert "rcpps sha256:86b782acf9498985 on the golden's machine, sha256:315610cdc419d6a7 here" in str(result)


def test_another_thread_count_or_no_recorded_machine_is_not_bit_level(golden: Path) -> None:
    result = gradcheck.golden_comparison(with_machine(golden, MACHINE), {"threads": 1}, here=MACHINE)
    assert not result.bit_level and result.reasons == ("threads 4 in the golden's run, 1 in this one",)
    result = gradcheck.golden_comparison(with_machine(golden, None), {"threads": 4}, here=MACHINE)
    assert not result.bit_level and result.reasons == ("the golden records no machine fingerprint",)
    assert result.golden_machine == "unrecorded"


def test_the_committed_3_3_0_golden_is_bit_level_only_where_rcpps_matches() -> None:
    golden = gradcheck.GOLDEN_ROOT / "mnist" / "3.3.0"
    assert gradcheck.golden_comparison(golden, {"threads": 4}, here=MACHINE).bit_level
    amd = {**MACHINE, "rcpps": "sha256:315610cdc419d6a7"}
    assert not gradcheck.golden_comparison(golden, {"threads": 4}, here=amd).bit_level


# -- runs of fewer steps than the golden holds (issue 21, item 9: `--steps 1` was a false red) --------------------


def short_run(tmp_path: Path, golden: Path, run_steps: int) -> Path:
    """What the driver leaves for `--steps run_steps`: dumps only of the golden's steps it reached."""
    reached = [s for s in STEPS if s < run_steps]
    run = make_run(tmp_path, golden, f"run{run_steps}", steps=run_steps, dump_steps=[str(s) for s in reached])
    for step in STEPS:
        if step not in reached:
            shutil.rmtree(run / "grads" / f"step{step}")
    return run


@pytest.mark.parametrize(("run_steps", "compared", "not_run"), [(1, [0], [1]), (2, [0, 1], []), (3, [0, 1], [])])
def test_a_run_is_judged_on_the_steps_it_ran(
    tmp_path: Path, golden: Path, run_steps: int, compared: list[int], not_run: list[int]
) -> None:
    run = short_run(tmp_path, golden, run_steps)
    report = check_run(run, golden, "vulkan", "high")  # the run's own step count, from its start event
    assert report.passed, report.table()
    assert not report.problems
    assert sorted({r.step for r in report.rows}) == compared
    assert report.not_run == not_run
    said = report.summary(), report.table(), json.dumps(report.to_dict())
    for text in said:
        assert ("step 1 n/a: not run (the workload has 1 step)" in text) == (run_steps == 1), text
    # The step count the session passes wins over the run's own (and says the same).
    assert check_run(run, golden, "vulkan", "high", run_steps=run_steps).not_run == not_run


def test_a_short_run_still_fails_for_a_step_it_ran_but_did_not_dump(tmp_path: Path, golden: Path) -> None:
    run = short_run(tmp_path, golden, 2)
    (run / "grads" / "step1" / "grad" / "a.bias.npy").unlink()
    report = check_run(run, golden, "vulkan", "high")
    assert not report.passed
    assert any(p.what == "missing file" and p.step == 1 for p in report.problems)
    assert report.not_run == []


@pytest.mark.parametrize(("run_steps", "dumps"), [(1, "0"), (2, "0,1"), (3, "0,1"), (None, "0,1")])
def test_driver_args_ask_only_for_the_steps_a_run_reaches(golden: Path, run_steps: int | None, dumps: str) -> None:
    args = gradcheck.driver_args(golden, run_steps=run_steps)
    assert args == ("--dump-steps", dumps, "--init-params", str(golden / "init"))


def test_the_reference_check_says_which_steps_were_not_run(tmp_path: Path) -> None:
    compared, not_run = gradcheck.steps_within([0, 1], 1)
    assert (compared, not_run) == ([0], [1])
    report = lenet.check_dumps(
        gradcheck.Dumps(tmp_path / "none", None), [], not_run=(not_run, 1), data_dir=fixtures.MNIST
    )
    assert "step 1 n/a: not run (the workload has 1 step)" in report.summary()


@pytest.mark.parametrize(("steps", "dumps"), [(1, "0"), (2, "0,1"), (3, "0,1")])
@pytest.mark.parametrize("ref", ["3.3.0", "0.0.0-no-golden"])
def test_the_session_asks_the_driver_for_the_steps_its_workload_runs(
    tmp_path: Path, steps: int, dumps: str, ref: str
) -> None:
    """Both gradient paths of the MNIST workload: the committed golden (3.3.0) and a ref without one (the CPU
    cell's dumps become the session's golden)."""
    built = SimpleNamespace(ref=ref, tree=SimpleNamespace(version="3.3.0"))
    prepared = SimpleNamespace(built=built, gdb_path=None, icds={}, timeout_for=lambda b: 60.0)
    mnist = MnistRef(cast(Prepared, prepared), Settings(steps=steps), fixtures.load_matrix(), tmp_path, lambda s: None)
    assert mnist.workload == Training(steps=steps, batch_size=64, seed=1, precision="high", test_limit=0)
    plan = mnist.plan(Cell(ref, "cpu", "-"))
    assert plan.grads
    args = plan.workload.extra_args
    assert args[args.index("--dump-steps") + 1] == dumps
