"""The driver's --train-graph-file (issue 24, the `static` workload): training from a SAVED training graph, not the
in-memory --static-graph. Text only (nothing is built): the flag, its place in main, one graph builder shared by both
static paths, MNN's own save and load on a RuntimeManager the driver makes (traced), and the documented contract.
tests/integration/test_driver_train_graph.py runs it."""

from __future__ import annotations

import re

from mnnrepro.build import NATIVE_DIR
from tools import structure

SRC = NATIVE_DIR / "src"


def _code(name: str) -> str:
    """The file's code without comments or string literals (what it does, not what it says)."""
    return structure.blank_cpp((SRC / name).read_text())


def test_the_flag_is_a_boolean_that_excludes_the_other_step_loops() -> None:
    options = (SRC / "options.cpp").read_text()
    assert re.search(r'\{"--train-graph-file", &Options::trainGraphFile, true\}', options)
    assert re.search(r"bool trainGraphFile = false;", (SRC / "options.hpp").read_text())
    assert "--train-graph-file cannot be combined with --static-graph or --save-graph" in options
    main = _code("main.cpp")
    assert re.search(r"opt\.trainGraphFile\s*\?\s*trainSaved\(trainer, data\.train\)", main)


def test_one_training_graph_builder_serves_both_static_paths() -> None:
    # The saved graph is --static-graph's graph plus its gradients as outputs: one builder, no copy of it.
    assert "src/saved_graph.cpp" in (NATIVE_DIR / "CMakeLists.txt").read_text()  # test_native_driver: all compiled
    static, saved = _code("static_graph.cpp"), _code("saved_graph.cpp")
    assert re.search(r"\nint buildTrainGraph\(Trainer& t, TrainGraph& g\) \{", static)
    assert "buildTrainGraph(t, g)" in static and "buildTrainGraph(t, g)" in saved
    for text in (static, saved):
        assert len(re.findall(r"\bbuildTrainGraph\(Trainer&", text)) <= 1
    assert not re.search(r"gradientsOf|OpGrad|_Const\(0\.9f\)", saved)  # the update is the builder's alone


def test_the_graph_is_saved_then_loaded_with_mnns_api_on_a_traced_runtime_manager() -> None:
    saved = _code("saved_graph.cpp")
    raw = (SRC / "saved_graph.cpp").read_text()
    assert '"/train_graph.mnn"' in raw and "Variable::save(outputs, s.path.c_str())" in saved
    assert "fix(VARP::INPUT)" in saved  # parameters saved as inputs, fed every step
    assert "Executor::RuntimeManager::createRuntimeManager(schedule)" in saved
    assert "forwardType(opt.backend)" in saved  # the backend under test, not a default one
    # StaticModule runs its Session with the executor's callbacks only in Session_Debug: no trace otherwise.
    assert re.search(r"if \(opt\.traceOps\) rtm->setMode\(Interpreter::Session_Debug\)", saved)
    assert re.search(r"Module::load\(s\.inputNames, s\.outputNames, s\.path\.c_str\(\), rtm, &moduleConfig\)", saved)
    assert "s.module->onForward(s.feeds)" in saved
    # Stages and events a crash or a placement is reported with.
    for name in (
        "save_train_graph",
        "load_train_graph",
        "saved_step",
        "grad_dump",
        "train_graph_saved",
        "train_graph_loaded",
        "not_exercised",
    ):
        assert f'"{name}"' in raw, name
    assert 't.run.ops("saved_step", step)' in raw and 't.run.timing("saved_step", step, t1)' in raw
    assert "return kNotExercised" in saved


def test_the_contract_documents_the_flag() -> None:
    readme = (NATIVE_DIR / "README.md").read_text()
    for text in ("--train-graph-file", "train_graph.mnn", "train_graph_saved", "train_graph_loaded", "saved_step"):
        assert text in readme, text
