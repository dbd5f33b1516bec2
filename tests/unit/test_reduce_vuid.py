"""reduce --vuid (issue 25): the search under the validation layer, run for real through the host runner, the batch
runner and the relay, against a stand-in for mnn_graph that plays the layer: it writes the canary's message and, when
the candidate keeps every culprit op, the target VUID's, to the log the layer's settings file names."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import validation
from mnnrepro.errors import ConfigError
from mnnrepro.runner import HostRunner
from mnnrepro.settings import Settings
from mnnrepro.workloads.reduce import search as reduce
from mnnrepro.workloads.reduce import session as redsession

VUID = "VUID-VkImageMemoryBarrier-sType-sType"
FAKE_TOOL = textwrap.dedent(
    """\
    #!{python}
    import json, os, signal, sys
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    cmd = sys.argv[1]
    n = int(os.environ["FAKE_OPS"])
    culprits = set(map(int, os.environ["FAKE_CULPRITS"].split(",")))
    crasher = int(os.environ.get("FAKE_CRASHER") or -1)
    def message(vuid):
        return (f"{{vuid}}(ERROR / SPEC): msgNum: 1 - Validation Error: [ {{vuid}} ] Object 0: handle = 0x1; | "
                f"MessageID = 0xab | vkCmdPipelineBarrier: bad. The Vulkan spec states: sType must be X "
                f"(https://www.khronos.org/registry/vulkan/specs/1.3-extensions/html/vkspec.html#{{vuid}})\\n")
    if cmd == "info":
        print("0\\tCONST\\tc\\t\\tc")
        for i in range(1, n + 1):
            print(f"{{i}}\\tBinaryOp\\top{{i}}\\t{{'c' if i == 1 else f't{{i - 1}}'}}\\tt{{i}}")
    elif cmd == "values":
        os.makedirs(args["--out"], exist_ok=True)
        open(os.path.join(args["--out"], "manifest.tsv"), "w").close()
    elif cmd == "cut":
        os.makedirs(args["--out"] + "/inputs", exist_ok=True)
        keep = open(args["--keep"]).read().split()
        open(args["--out"] + "/graph.mnn", "w").write(",".join(keep))
        open(args["--out"] + "/inputs/manifest.tsv", "w").close()
    elif cmd == "run":
        keep = set(map(int, open(args["--graph"]).read().split(",")))
        os.makedirs(args["--out"], exist_ok=True)
        log = None
        if os.environ.get("VK_INSTANCE_LAYERS") and os.environ.get("FAKE_LAYER") != "missing":
            for line in open(os.environ["VK_LAYER_SETTINGS_PATH"]):
                if ".log_filename = " in line:
                    log = open(line.split(" = ", 1)[1].strip(), "w")
        canary = "--vk-canary" in sys.argv
        with open(args["--out"] + "/events.jsonl", "w") as events:
            if canary:
                events.write(json.dumps({{"v": 1, "event": "vk_canary", "made": True, "count": 1}}) + "\\n")
        if log and canary:
            log.write(message("{canary}"))
        if crasher in keep:  # as #3129: in creating the kernels, before any command is recorded
            log and log.close()
            os.kill(os.getpid(), signal.SIGSEGV)
        if log and culprits <= keep:
            log.write(message("{vuid}"))
            log.write(message("{vuid}"))
        if log:
            log.close()
        sys.exit(0)
    """
)


def _spec(tmp_path: Path, ops: int, culprits: str, **env: str) -> reduce.Spec:
    tool = tmp_path / "mnn_graph"
    tool.write_text(FAKE_TOOL.format(python=sys.executable, canary=validation.CANARY_VUID, vuid=VUID))
    tool.chmod(0o755)
    graph = tmp_path / "graph"
    (graph / "inputs").mkdir(parents=True)
    (graph / "graph.mnn").write_text("the original graph")
    (graph / "inputs" / "manifest.tsv").write_text("")
    work = tmp_path / "work"
    work.mkdir()
    env = {"FAKE_OPS": str(ops), "FAKE_CULPRITS": culprits, **env}
    runner = HostRunner(base_env={**os.environ, **env})
    spec = reduce.Spec(tool, graph, work, runner, "vulkan", None, env, None, jobs=2, timeout_s=30)
    spec.validation = "on"
    return spec


def _reduce(spec: reduce.Spec, pattern: str = VUID) -> tuple[reduce.Reducer, tuple[int, ...]]:
    reducer = reduce.Reducer(spec, budget_s=300, say=lambda _: None)
    reducer.prepare()
    reducer.establish(reduce.Target("vuid", vuid=pattern), "--vuid")
    return reducer, reducer.reduce()


def test_a_vuid_reduces_to_the_ops_that_raise_it(tmp_path: Path) -> None:
    reducer, keep = _reduce(_spec(tmp_path, 12, "5,6"))
    assert keep == (5, 6) and reducer.minimal
    # Every candidate ran under the layer with the canary, and its counts are the layer's (canary taken out).
    assert all(t.vuids in ({}, {VUID: 2}) for t in reducer.trials.values())
    assert json.loads((tmp_path / "work" / "reduce.json").read_text())["target"]["vuid"] == VUID


def test_a_pattern_names_the_vuid(tmp_path: Path) -> None:
    _, keep = _reduce(_spec(tmp_path, 8, "3"), "VUID-VkImageMemoryBarrier-*")
    assert keep == (3,)


def test_a_candidate_whose_canary_the_layer_did_not_report_stops_the_reduction(tmp_path: Path) -> None:
    # The layer is asked for but does not load: silence must never read as "VUID absent".
    with pytest.raises(reduce.ReduceError, match=r"NOT-EXERCISED.*canary"):
        _reduce(_spec(tmp_path, 8, "3", FAKE_LAYER="missing"))


def test_a_graph_without_the_vuid_is_nothing_to_reduce(tmp_path: Path) -> None:
    with pytest.raises(reduce.ReduceError, match="raises no VUID-Other"):
        _reduce(_spec(tmp_path, 8, "3"), "VUID-Other")


def test_a_crash_after_the_vuid_starts_the_search_from_the_longest_prefix_without_it(tmp_path: Path) -> None:
    # 3.3.0 image mode: alibaba/MNN#3129's Deconvolution crashes near the end of the step, before the layer speaks.
    reducer, keep = _reduce(_spec(tmp_path, 12, "4", FAKE_CRASHER="11"))
    assert keep == (4,)
    assert reducer.start == tuple(range(1, 11))


def test_vuid_aim_turns_the_layer_on_and_refuses_a_variant_without_one() -> None:
    settings, aim = redsession.vuid_aim(Settings(), "vulkan-image", VUID)
    assert settings.vk_validation == "on" and aim.target == reduce.Target("vuid", vuid=VUID)
    sync, _ = redsession.vuid_aim(Settings(vk_validation="sync"), "vulkan-buffer", VUID)
    assert sync.vk_validation == "sync"
    with pytest.raises(ConfigError, match="no Vulkan variant"):
        redsession.vuid_aim(Settings(), "opencl", VUID)


def test_a_run_alone_under_the_layer_is_judged_by_its_canary_and_vuid(tmp_path: Path) -> None:
    target = reduce.Target("vuid", vuid=VUID)
    run = tmp_path / "run"
    run.mkdir()
    (run / "events.jsonl").write_text(json.dumps({"v": 1, "event": "vk_canary", "made": True, "count": 1}) + "\n")
    (run / validation.LOG).write_text("")
    assert redsession.vuid_word(run, "on", target).startswith("NOT-EXERCISED")
    line = "{}(ERROR / SPEC): msgNum: 1 - Validation Error: [ {} ] x | MessageID = 0x1 | text\n"
    (run / validation.LOG).write_text(line.format(validation.CANARY_VUID, validation.CANARY_VUID))
    assert redsession.vuid_word(run, "on", target) == "passes"
    (run / validation.LOG).write_text(
        line.format(validation.CANARY_VUID, validation.CANARY_VUID) + line.format(VUID, VUID)
    )
    assert redsession.vuid_word(run, "on", target) == "fails"


class _FakeReducer:
    """op_indices and judge only: which single ops raise the VUID under the layer."""

    def __init__(self, raising: set[int]) -> None:
        self.raising = raising
        self.asked: list[tuple[int, ...]] = []

    def op_indices(self) -> list[int]:
        return [3, 5, 7, 9]

    def judge(self, candidates: list[tuple[int, ...]]) -> list[Any]:
        self.asked += candidates
        return [type("T", (), {"interesting": bool(set(c) & self.raising)})() for c in candidates]


def test_a_vuid_that_shows_with_any_op_is_not_called_the_op_s_own() -> None:
    """3.4.0's 16-bit storage VUID (raised at pipeline creation) reduced to whichever op the search tried first."""
    from mnnrepro.workloads.reduce import session as redsession

    said: list[str] = []
    setup = _FakeReducer({3, 5, 7})
    assert redsession.op_specific(setup, (3,), said.append) is False  # type: ignore[arg-type]
    assert setup.asked == [(5,), (7,)] and "from setup" in said[0]
    own = _FakeReducer({3})
    assert redsession.op_specific(own, (3,), said.append) is True  # type: ignore[arg-type]
    assert redsession.op_specific(own, (3, 5), said.append) is None  # type: ignore[arg-type]
