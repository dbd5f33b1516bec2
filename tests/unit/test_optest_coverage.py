"""optest's coverage of MNN's own tests (issue 21): item 7, registrations found in every test source, the sources
mnn_optest compiles, and a reason for each registration the built binary lacks; item 1, the trace hooks that let
mnn_optest see cloned executors and Modules (checked against a real MNN by hand: see the issue's closing note)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mnnrepro.workloads.ops import optest

HYBRID = """\
#include "MNNTestSuite.h"
class DenseConvInt8Test : public MNNTestCase {};
#ifdef MNN_LOW_MEMORY
class PTQInt4Test : public MNNTestCase {};
MNNTestSuiteRegister(PTQInt4Test, "op/int4Ptq");
#endif

MNNTestSuiteRegister(DenseConvInt8Test, "op/lowMemory/DenseConv");
MNNTestSuiteRegister(HybridConvSpeedInt8Test, "speed/HybridConv");
"""


def write(root: Path, rel: str, text: str) -> None:
    path = root / "test" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tree shaped like MNN 3.3.0's test/: op/lowMemory/* and op/int4Ptq live in test/speed/."""
    root = tmp_path / "mnn"
    write(root, "op/ConvTest.cpp", 'MNNTestSuiteRegister(A, "op/conv");\nMNNTestSuiteRegister(B, "speed/conv");\n')
    write(root, "grad/ReluGradTest.cpp", 'MNNTestSuiteRegister(G, "grad/relu");\n')
    write(root, "speed/HybridConvSpeedTest.cpp", HYBRID)
    write(root, "expr/ExprTest.cpp", 'MNNTestSuiteRegister(E, "expr/e");\n')
    commented = '// MNNTestSuiteRegister(X, "op/commented");\n/* MNNTestSuiteRegister(Y, "op/c2"); */\n'
    write(root, "cv/OldTest.cpp", commented)
    write(root, "TestUtils.cpp", "// helpers\n")
    return root


def test_registrations_are_found_in_every_test_source_not_only_op_and_grad(tree: Path) -> None:
    # op/lowMemory/* is registered from test/speed/ (MNN_FACTS); speed/ names are not this suite's, nor comments.
    assert optest.declared_names(tree) == ("grad/relu", "op/conv", "op/int4Ptq", "op/lowMemory/DenseConv")


def test_mnn_optest_compiles_exactly_the_sources_that_register_op_or_grad_tests(tree: Path) -> None:
    assert optest.test_sources(tree) == ["grad/ReluGradTest.cpp", "op/ConvTest.cpp", "speed/HybridConvSpeedTest.cpp"]


def test_a_registration_knows_the_conditionals_around_it() -> None:
    text = '#if defined(A) && \\\n    !defined(B)\n#ifndef C\n#else\nMNNTestSuiteRegister(X, "op/x");\n#endif\n#endif\n'
    (reg,) = optest.scan_source(text, "op/X.cpp")
    assert reg.line == 5
    assert [b.text for b in reg.branches] == ["#if defined(A) && !defined(B)", "#else of #ifndef C"]
    assert reg.branches[1].taken is None and reg.branches[1].not_taken == ("!defined(C)",)


@pytest.mark.parametrize(
    ("expression", "defines", "value"),
    [
        ("defined(A) && !defined(B)", {"A": 1}, 1),
        ("defined(A) && !defined(B)", {"A": 1, "B": 1}, 0),
        ("defined A || defined(B)", {}, 0),
        ("VERSION >= 2 && (X || Y)", {"VERSION": 3, "Y": 1}, 1),
        ("(precision == 2)", {}, 0),  # an unknown name is 0, as in C (HybridConvSpeedTest.cpp's #if)
        ("1 +", {}, None),
        ("A ? 1 : 0", {}, None),
    ],
)
def test_preprocessor_expressions_are_read_as_c_reads_them(
    expression: str, defines: dict[str, int], value: int | None
) -> None:
    assert optest.pp_value(expression, defines) == value


def test_build_json_gives_each_registration_the_binary_lacks_its_reason(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "bin"
    out.mkdir()
    listing = "op/conv\nspeed/conv\nop/lowMemory/DenseConv\nspeed/HybridConv\n"
    excluded = {"grad/ReluGradTest.cpp": "does not compile: 'x' was not declared"}
    binary = optest.Binary.write(out, listing, excluded, tree, ["-DMNN_USE_THREAD_POOL"])
    assert binary.registered == ("grad/relu", "op/conv", "op/int4Ptq", "op/lowMemory/DenseConv")
    assert set(binary.left_out) == {"grad/relu", "op/int4Ptq"}
    assert binary.left_out["op/int4Ptq"].startswith("compiled out: needs MNN_LOW_MEMORY (#ifdef MNN_LOW_MEMORY at")
    assert "test/speed/HybridConvSpeedTest.cpp:3" in binary.left_out["op/int4Ptq"]
    why = "not built: test/grad/ReluGradTest.cpp does not compile: 'x' was not declared"
    assert binary.left_out["grad/relu"] == why
    # Not run, so the session lists them among the tests not built (SKIP with the reason), never as passing.
    assert binary.excluded_tests["op/int4Ptq"] == binary.left_out["op/int4Ptq"]
    assert optest.Binary.load(out) == binary
    assert json.loads((out / "build.json").read_text())["defines"] == ["-DMNN_USE_THREAD_POOL"]


def test_coverage_counts_the_selection_against_the_trees_registrations(tree: Path, tmp_path: Path) -> None:
    binary = optest.Binary.write(tmp_path, "op/conv\nop/lowMemory/DenseConv\ngrad/relu\n", {}, tree, [])
    coverage = binary.coverage(("op/",))
    assert coverage.built == ("op/conv", "op/lowMemory/DenseConv")
    assert coverage.registered == ("op/conv", "op/int4Ptq", "op/lowMemory/DenseConv")
    line = coverage.line()
    assert line.startswith("tests: 2 built of 3 registered for the selection; left out: op/int4Ptq (compiled out")
    assert binary.coverage(("grad/",)).line() == "tests: 1 built of 1 registered for the selection"


def test_a_registration_missing_for_no_known_reason_is_said_to_be_unexplained(tree: Path, tmp_path: Path) -> None:
    binary = optest.Binary.write(tmp_path, "op/conv\ngrad/relu\n", {}, tree, ["-DMNN_LOW_MEMORY"])
    assert "unexplained" in binary.left_out["op/lowMemory/DenseConv"]
    # MNN_LOW_MEMORY is defined, so its #ifdef is not the reason; the reason must not pretend it is.
    assert "unexplained" in binary.left_out["op/int4Ptq"] and "needs" not in binary.left_out["op/int4Ptq"]


NATIVE_OPTEST = Path(__file__).resolve().parents[2] / "native" / "optest"


def test_the_trace_hooks_are_defined_exported_and_linked() -> None:
    """Item 1: cloned executors and Modules are traced only if mnn_optest defines, exports (hooks.list) and links
    the two interposed MNN functions; without the export, calls from inside libMNN_Express never reach them."""
    hooks = (NATIVE_OPTEST / "hooks.cpp").read_text()
    exported = re.findall(r'"(MNN::[^"]+)"', (NATIVE_OPTEST / "hooks.list").read_text())
    assert exported == [
        "MNN::Express::Executor::newExecutor(MNNForwardType, MNN::BackendConfig const&, int)",
        "MNN::Express::Executor::RuntimeManager::createRuntimeManager(MNN::ScheduleConfig const&)",
    ]
    assert "Executor::newExecutor(MNNForwardType type, const BackendConfig& config, int numberThread)" in hooks
    assert "Executor::RuntimeManager::createRuntimeManager(const ScheduleConfig& config)" in hooks
    assert "setMode(Interpreter::Session_Debug)" in hooks and "traceExecutor(*executor)" in hooks
    cmake = (NATIVE_OPTEST / "CMakeLists.txt").read_text()
    assert "hooks.cpp" in cmake and "--dynamic-list=${CMAKE_CURRENT_SOURCE_DIR}/hooks.list" in cmake
    main = (NATIVE_OPTEST / "main.cpp").read_text()
    assert "mnnrepro::traceExecutor(*exe)" in main and '.raw("trace", mnnrepro::hooksJson(' in main
