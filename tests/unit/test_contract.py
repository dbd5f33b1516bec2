"""contract.read_events: the driver's events.jsonl parsed into a RunRecord; exit codes in sync with main.cpp."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import contract
from mnnrepro.build import NATIVE_DIR
from mnnrepro.contract import ContractError, read_events

DEVICE = "llvmpipe (LLVM 15.0.6, 256 bits)"


def ev(event: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "event": event, "t": 0.5, **fields}


def stage(name: str, step: int | None = None) -> dict[str, Any]:
    return ev("stage", name=name, **({} if step is None else {"step": step}))


FULL_RUN = [
    ev("start", backend="vulkan", steps=2),
    stage("load_plugin"),
    ev("backend", requested="vulkan", active="vulkan", exercised=True, device={"name": DEVICE}),
    stage("forward", 0),
    stage("sgd_step", 0),
    ev("step", step=0, loss=2.3),
    stage("forward", 1),
    stage("sgd_step", 1),
    ev("step", step=1, loss=2.1),
    stage("test"),
    ev("test", correct=75, total=100, accuracy=0.75),
    stage("done"),
    ev("done", exit_code=0),
]


def write(path: Path, events: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + tail)
    return path


def test_a_complete_run(tmp_path: Path) -> None:
    rec = read_events(write(tmp_path / "events.jsonl", FULL_RUN))
    assert rec.start["backend"] == "vulkan"
    assert rec.last_stage is not None and (rec.last_stage.name, rec.last_stage.step) == ("done", None)
    assert [s.label() for s in rec.stages[2:4]] == ["sgd_step[step 0]", "forward[step 1]"]
    assert rec.losses == [2.3, 2.1]
    assert rec.accuracy == 0.75
    assert rec.device_name == DEVICE
    assert rec.exercised is True
    assert rec.done is True
    assert rec.truncated_line is False
    assert rec.error is None


def test_a_crash_leaves_the_last_stage(tmp_path: Path) -> None:
    rec = read_events(write(tmp_path / "events.jsonl", FULL_RUN[:5]))
    assert rec.last_stage is not None and rec.last_stage.label() == "sgd_step[step 0]"
    assert rec.losses == []
    assert rec.accuracy is None
    assert rec.done is False


def test_a_torn_last_line_is_noted_and_earlier_events_kept(tmp_path: Path) -> None:
    rec = read_events(write(tmp_path / "events.jsonl", FULL_RUN[:8], tail='{"v": 1, "event": "step", "st'))
    assert rec.truncated_line is True
    assert rec.losses == [2.3]
    assert rec.last_stage is not None and rec.last_stage.label() == "sgd_step[step 1]"
    assert rec.exercised is True
    assert rec.done is False


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(FULL_RUN[0]) + "\n\n   \n" + json.dumps(FULL_RUN[2]) + "\n")
    rec = read_events(path)
    assert rec.exercised is True and rec.truncated_line is False


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_a_wrong_version_raises(tmp_path: Path, version: object) -> None:
    events = [FULL_RUN[0], {**FULL_RUN[1], "v": version}]
    with pytest.raises(ContractError, match=r"events.jsonl:2: events version"):
        read_events(write(tmp_path / "events.jsonl", events))


def test_a_bad_middle_line_raises_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(FULL_RUN[0]), "{not json", json.dumps(FULL_RUN[2])]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ContractError, match=r"events.jsonl:2: not JSON"):
        read_events(path)


@pytest.mark.parametrize("line", ["[1]", "42", '{"v": 1, "event": "stage", "t": 0.1}'])
def test_a_well_formed_but_wrong_line_raises_contract_error(tmp_path: Path, line: str) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(FULL_RUN[0]) + "\n" + line + "\n" + json.dumps(FULL_RUN[2]) + "\n")
    with pytest.raises(ContractError):
        read_events(path)


@pytest.mark.parametrize(("text", "check"), [("nan", math.isnan), ("inf", math.isinf), ("-inf", math.isinf)])
def test_non_finite_loss_strings_parse(tmp_path: Path, text: str, check: Any) -> None:
    events = [*FULL_RUN[:5], ev("step", step=0, loss=text)]
    rec = read_events(write(tmp_path / "events.jsonl", events))
    assert len(rec.losses) == 1 and check(rec.losses[0])


def test_a_non_numeric_loss_is_nan(tmp_path: Path) -> None:
    rec = read_events(write(tmp_path / "events.jsonl", [ev("step", step=0, loss="garbage"), ev("step", step=1)]))
    assert len(rec.losses) == 2 and all(math.isnan(x) for x in rec.losses)


def test_not_exercised_backend_and_error_event(tmp_path: Path) -> None:
    events = [
        ev("backend", requested="vulkan", active="cpu", exercised=False, reason="no device", device={}),
        ev("error", kind="mnn", message="boom", exit_code=7),
    ]
    rec = read_events(write(tmp_path / "events.jsonl", events))
    assert rec.exercised is False
    assert rec.device_name == ""
    assert rec.error is not None and rec.error["message"] == "boom"


def test_a_missing_file_is_an_empty_record(tmp_path: Path) -> None:
    rec = read_events(tmp_path / "absent.jsonl")
    assert rec.exercised is None
    assert rec.last_stage is None
    assert rec.losses == [] and rec.accuracy is None and rec.done is False


# -- agreement with the driver's source (text only; nothing is built) -------------------------------

OPTIONS_HPP = NATIVE_DIR / "src" / "options.hpp"  # the driver's command line and exit codes


def driver_text() -> str:
    """Every source of the driver (main.cpp puts its parts in order: issue 23), the model files included."""
    return "".join(p.read_text() for p in sorted((NATIVE_DIR / "src").rglob("*.cpp")))


def test_exit_codes_match_the_driver_enum() -> None:
    body = re.search(r"enum ExitCode \{(.*?)\};", OPTIONS_HPP.read_text(), re.S)
    assert body is not None
    enum = {name: int(value) for name, value in re.findall(r"(k\w+)\s*=\s*(\d+)", body.group(1))}
    assert enum == {
        "kOk": contract.EXIT_OK,
        "kUsage": contract.EXIT_USAGE,
        "kDataError": contract.EXIT_DATA,
        "kNotExercised": contract.EXIT_NOT_EXERCISED,
        "kNonFinite": contract.EXIT_NON_FINITE,
        "kOutputError": contract.EXIT_OUTPUT,
        "kMnnError": contract.EXIT_MNN_ERROR,
    }
    assert set(contract.EXIT_MEANINGS) == set(enum.values())


def test_the_driver_emits_every_event_the_reader_uses() -> None:
    text = driver_text()
    emitted = set(re.findall(r'log\.emit\("(\w+)"', text))
    assert {"start", "backend", "step", "test", "error", "done"} <= emitted
    stages = set(re.findall(r'log\.stage\("(\w+)"', text))
    assert {"forward", "sgd_step", "test", "done"} <= stages


def test_ops_events_give_placement_per_phase(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"v":1,"event":"ops","t":0.1,"phase":"forward","step":0,"total":4,"backend_switches":2,'
        '"by_backend":{"cpu":{"Convolution":2},"vulkan":{"Pooling":2}}}\n'
        '{"v":1,"event":"ops","t":0.2,"phase":"forward","step":1,"total":4,"backend_switches":0,'
        '"by_backend":{"vulkan":{"Pooling":4}}}\n'
    )
    record = read_events(path)
    assert record.placement(0) == {
        "forward": {"ops": {"cpu": 2, "vulkan": 2}, "cpu_ops": {"Convolution": 2}, "backend_switches": 2}
    }
    assert record.placement(1)["forward"]["cpu_ops"] == {}


OPTEST_MAIN = NATIVE_DIR / "optest" / "main.cpp"


def test_mnn_optest_exit_codes_and_events_match_the_reader() -> None:
    from mnnrepro.workloads.ops import optest

    text = OPTEST_MAIN.read_text()
    body = re.search(r"enum ExitCode \{(.*?)\};", text, re.S)
    assert body is not None
    enum = {name: int(value) for name, value in re.findall(r"(k\w+)\s*=\s*(\d+)", body.group(1))}
    assert enum == {
        "kPassed": optest.EXIT_PASSED,
        "kFailed": optest.EXIT_FAILED,
        "kUsage": optest.EXIT_USAGE,
        "kNotExercised": optest.EXIT_NOT_EXERCISED,
        "kOutputError": optest.EXIT_OUTPUT,
        "kNoSuchTest": optest.EXIT_NO_SUCH_TEST,
    }
    emitted = set(re.findall(r'log\.emit\("(\w+)"', text))
    assert {"start", "test", "done"} <= emitted
    assert "setupBackend(log" in text  # the backend event and NOT-EXERCISED, as the driver's
