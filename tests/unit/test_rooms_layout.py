"""Issue 23: the ops, reduce and training workloads are rooms of the workloads/ package, with nothing left at the
old paths, and the scripts that run where the runner runs are where the runners look for them."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

import mnnrepro
from mnnrepro import cells, fixtures
from mnnrepro.docker_runner import DockerRunner

PACKAGE = Path(mnnrepro.__file__).parent
ROOMS = {
    "ops": ("optest", "optest_batch", "judge", "report", "session"),
    "reduce": ("search", "session"),
    "train": ("workload", "session", "golden"),
}
MODELS = ("lenet", "mnistv2")  # workloads/train/models/: one numpy reference per driver model
# Where these modules were before issue 23; no shim stays behind (nothing outside the repository imports them).
OLD = (
    "optest",
    "optest_batch",
    "opsession",
    "opjudge",
    "opreport",
    "reduce",
    "redsession",
    "session",
    "golden",
    "reference",
    "reference_mnistv2",
)


@pytest.mark.parametrize("name", OLD)
def test_nothing_is_left_at_the_old_module_paths(name: str) -> None:
    assert importlib.util.find_spec(f"mnnrepro.{name}") is None
    assert not (PACKAGE / f"{name}.py").exists()


@pytest.mark.parametrize("room,module", [(room, m) for room, modules in ROOMS.items() for m in modules])
def test_each_room_holds_its_modules(room: str, module: str) -> None:
    loaded = importlib.import_module(f"mnnrepro.workloads.{room}.{module}")
    assert Path(str(loaded.__file__)) == PACKAGE / "workloads" / room / f"{module}.py"


@pytest.mark.parametrize("model", MODELS)
def test_each_model_reference_is_in_the_training_room(model: str) -> None:
    from mnnrepro.workloads.train import workload

    loaded = importlib.import_module(f"mnnrepro.workloads.train.models.{model}")
    assert Path(str(loaded.__file__)) == PACKAGE / "workloads" / "train" / "models" / f"{model}.py"
    assert model in workload.MODELS  # a model is its reference module and its line in MODELS


def test_gradcheck_knows_no_model() -> None:
    """The verdict layer compares dumps with a golden; the models' references live in the training room, so
    gradcheck no longer holds Lenet's check (which stood below the room that names every model)."""
    from mnnrepro import gradcheck

    for name in ("check_reference", "verify_golden", "sgd_config", "PARAM_SHAPES", "SgdConfig"):
        assert not hasattr(gradcheck, name), name


def test_the_batch_script_is_where_both_runners_look_for_it() -> None:
    """The sweep and the reducer run ``python3 BATCH_SCRIPT PLAN.json`` through the runner: on the host the path
    must name the script, and inside the container it must lie below a read-only same-path mount (prepare mounts
    the checkout, fixtures.ROOT), since the container sees nothing else of the host."""
    from mnnrepro.workloads.ops import optest
    from mnnrepro.workloads.reduce import search

    script = optest.BATCH_SCRIPT
    assert script.is_file() and script == PACKAGE / "workloads" / "ops" / "optest_batch.py"
    assert vars(search)["BATCH_SCRIPT"] == script  # the reducer's candidates run through the same script
    assert cells.GDB_SCRIPT.is_file()  # it stays beside cells (issue 23 moves it nowhere)
    runner = DockerRunner(client=None, image="unused", read_only=(fixtures.ROOT,))
    mounts = runner._volumes(writable=())
    for path in (script, cells.GDB_SCRIPT):
        assert any(path.resolve().is_relative_to(src) and v["bind"] == src for src, v in mounts.items()), path
