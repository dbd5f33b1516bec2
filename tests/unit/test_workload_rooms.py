"""Issue 23: cells, prepare and build know no workload; MNIST's workload lives on its own side (workloads.train);
goldens are keyed by (workload, ref)."""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from mnnrepro import cells, fixtures, gradcheck, prepare
from mnnrepro.errors import FixtureError
from mnnrepro.settings import Settings
from mnnrepro.workloads.train import golden
from mnnrepro.workloads.train.session import MnistRef

COMMITTED = ("3.3.0", "47027e10")
MNIST = "mnist"  # workloads.train.NAME (imported inside the tests that need the module, so each fails alone)


def _identifiers(module: Any) -> set[str]:
    """Every name a module defines, reads, imports or annotates with (docstrings and comments do not count)."""
    tree = ast.parse(Path(module.__file__).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name.rsplit(".", 1)[-1])
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            names.add(node.value)  # a string annotation (from __future__ import annotations keeps them as names)
    return names


@pytest.mark.parametrize("module", [cells, prepare], ids=["cells", "prepare"])
def test_cells_and_prepare_know_no_workload(module: Any) -> None:
    assert not _identifiers(module) & {"Workload", "Training", "workload_of"}


def test_prepared_carries_no_workload() -> None:
    assert "workload" not in {f.name for f in dataclasses.fields(prepare.Prepared)}


def test_mnist_workload_is_the_matrix_training_table_with_steps_from_the_settings() -> None:
    from mnnrepro.workloads.train import workload as train

    matrix = fixtures.load_matrix()
    training = dict(matrix.training)
    w = train.workload_of(matrix, Settings())
    assert (w.steps, w.batch_size, w.seed) == (int(training["steps"]), int(training["batch_size"]), 1)
    assert train.workload_of(matrix, Settings(steps=2)).steps == 2
    assert w.driver_args()[:2] == ["--steps", str(w.steps)]


# -- goldens keyed by (workload, ref) -------------------------------------------------------------------------


@pytest.mark.parametrize("ref", COMMITTED)
def test_committed_goldens_live_under_their_workload(ref: str) -> None:
    from mnnrepro.workloads.train import workload as train

    assert train.NAME == MNIST
    where = fixtures.golden_dir(train.NAME, ref)
    assert where == fixtures.GOLDEN_ROOT / "mnist" / ref == gradcheck.GOLDEN_ROOT / "mnist" / ref
    assert json.loads((where / "provenance.json").read_text())["ref"] == ref
    fixtures.verify_golden_manifest(where)
    assert not (fixtures.GOLDEN_ROOT / ref).exists()  # nothing left in the old layout


def test_the_golden_lookup_takes_a_workload(tmp_path: Path) -> None:
    assert fixtures.golden_dir("mnist", "3.3.0", tmp_path) == tmp_path / "mnist" / "3.3.0"
    assert fixtures.golden_dir("other", "3.3.0", tmp_path) == tmp_path / "other" / "3.3.0"


def test_a_golden_in_the_old_layout_says_where_it_moved(tmp_path: Path) -> None:
    shutil.copytree(fixtures.GOLDEN_ROOT / "mnist" / "3.3.0", tmp_path / "3.3.0")
    with pytest.raises(FixtureError) as caught:
        fixtures.golden_dir("mnist", "3.3.0", tmp_path)
    assert "old layout" in caught.value.message and str(tmp_path / "mnist" / "3.3.0") in caught.value.message
    assert f"mv {tmp_path / '3.3.0'} {tmp_path / 'mnist' / '3.3.0'}" in caught.value.hint


def test_mnnrepro_golden_refuses_the_old_layout_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "3.3.0").mkdir()
    (tmp_path / "3.3.0" / "provenance.json").write_text("{}")
    monkeypatch.setattr(prepare, "preflight_for", lambda *a, **k: pytest.fail("reached the preflight"))
    with pytest.raises(FixtureError, match="old layout"):
        golden.generate_golden("3.3.0", settings=Settings(), out_root=tmp_path, say=lambda line: None)


def test_golden_publishes_under_the_workload(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    (staging / "step0").mkdir(parents=True)
    (staging / "step0" / "x.npy").write_bytes(b"x")
    dest = golden._publish(staging, fixtures.golden_dir(MNIST, "9.9.9", tmp_path / "root"))
    assert dest == tmp_path / "root" / "mnist" / "9.9.9"
    fixtures.verify_golden_manifest(dest)
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == ["9.9.9"]  # no staging left


def test_the_mnist_session_reads_its_golden_by_workload_and_ref(tmp_path: Path) -> None:
    built = SimpleNamespace(ref="3.3.0", tree=SimpleNamespace(version="3.3.0"))
    prepared = SimpleNamespace(built=built, gdb_path=None, icds={}, timeout_for=lambda b: 60.0)
    mnist = MnistRef(cast(Any, prepared), Settings(), fixtures.load_matrix(), tmp_path, lambda s: None)
    assert mnist.golden_dir == fixtures.GOLDEN_ROOT / "mnist" / "3.3.0"
