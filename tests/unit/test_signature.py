"""Crash signatures: normalization, MNN-only frames, the stored signature's provenance, and the judge's use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import fixtures, signature
from mnnrepro.cells import Cell, CellRun
from mnnrepro.contract import RunRecord, Stage
from mnnrepro.judge import judge
from mnnrepro.runner import Completed

CHECKS = {
    "min_accuracy": 0.5,
    "loss_fall_window": 5,
    "loss_abs_tolerance": 0.02,
    "loss_rel_tolerance": 0.01,
    "max_accuracy_gap": 0.03,
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MNN::A::b", "MNN::A::b"),
        ("MNN::A::b(int, float*)", "MNN::A::b"),
        ("MNN::T<std::pair<int, int> >::f(int)", "MNN::T<std::pair<int, int> >::f"),
        ("MNN::A::b [clone .isra.0]", "MNN::A::b"),
        ("MNN::A::b.cold", "MNN::A::b"),
        ("  MNN::A::b.constprop.0.isra.0 ", "MNN::A::b"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert signature.normalize(raw) == expected


def frame(function: str, library: str) -> dict[str, Any]:
    return {"function": function, "library": library, "pc": "0x1"}


def test_only_frames_in_mnn_libraries_count() -> None:
    crash = {
        "frames": [
            frame("memcpy", "/lib/libc.so.6"),
            frame("MNN::A::a", "/x/libMNN.so"),
            frame("??", "/x/libMNN_Vulkan.so"),
            frame("MNN::B::b", "/x/libMNN_Vulkan.so"),
            frame("main", "/x/mnist_driver"),
            frame("MNN::C::c", "/x/libMNNTrain.so"),
            frame("MNN::D::d", "/x/libMNN.so"),
        ]
    }
    assert signature.of_crash(crash) == ("MNN::A::a", "MNN::B::b", "MNN::C::c")
    assert signature.matches(("MNN::A::a", "MNN::B::b", "MNN::C::c"), ("MNN::A::a", "MNN::B::b"))
    assert not signature.matches(("MNN::A::a",), ("MNN::A::a", "MNN::B::b"))
    assert not signature.matches(("MNN::A::a",), ())


def test_stored_signature_is_derived_from_the_stored_evidence() -> None:
    rows = [r for r in fixtures.load_matrix().expectations if r.outcome == "reproduce"]
    assert rows and all(r.signature and r.evidence for r in rows)
    for row in rows:
        for rel in row.evidence:
            crash = json.loads((fixtures.FIXTURES / rel).read_text())
            assert signature.matches(signature.of_crash(crash), row.signature), rel


def crashed_run(tmp_path: Path, crash: dict[str, Any] | None) -> CellRun:
    record = RunRecord(
        backend={"requested": "vulkan", "active": "vulkan", "exercised": True},
        stages=[Stage("forward", 0, 0.1), Stage("sgd_step", 0, 0.9)],
    )
    done = Completed(argv=(), returncode=139, duration_s=1.0)
    return CellRun(Cell("3.3.0", "vulkan-image", "lavapipe"), tmp_path, done, record, crash, [], True)


def image_row() -> fixtures.Expectation:
    row = fixtures.load_matrix().expectation("3.3.0", "vulkan-image", "lavapipe")
    assert row is not None
    return row


def test_expected_signature_is_reproduced(tmp_path: Path) -> None:
    crash = json.loads((fixtures.FIXTURES / image_row().evidence[0]).read_text())
    v = judge(crashed_run(tmp_path, crash), image_row(), steps=30, checks=CHECKS, baseline=None)
    assert v.verdict == "REPRODUCED" and v.matched
    assert v.evidence["signature"][0] == "MNN::ConvolutionCommon::getConvParameters"


def test_same_signal_and_stage_but_other_frames_is_an_unexpected_crash(tmp_path: Path) -> None:
    crash = {
        "frames": [
            frame("MNN::Train::SGD::onGetNextParameter", "/x/libMNNTrain.so"),
            frame("MNN::Train::ParameterOptimizer::step", "/x/libMNNTrain.so"),
        ]
    }
    v = judge(crashed_run(tmp_path, crash), image_row(), steps=30, checks=CHECKS, baseline=None)
    assert v.verdict == "UNEXPECTED-CRASH" and not v.matched
    assert "getConvParameters" in v.reason


def test_no_backtrace_reproduces_with_an_unverified_note(tmp_path: Path) -> None:
    v = judge(crashed_run(tmp_path, None), image_row(), steps=30, checks=CHECKS, baseline=None)
    assert v.verdict == "REPRODUCED"
    assert "signature not verified" in v.reason
