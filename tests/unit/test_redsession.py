"""redsession.py (issue 21, item 8): the target of a captured graph is the known bug's row of fixtures/matrix.toml;
the reduced graph on its own (mnn_graph and the standalone repro.cpp) is FALLBACK, never a pass, when its op ran on
the CPU; an output that could not be computed is not "differs"."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import fixtures
from mnnrepro.runner import Completed, HostRunner
from mnnrepro.workloads.reduce import search as reduce
from mnnrepro.workloads.reduce import session as redsession


def test_the_known_bugs_row_is_the_target_of_a_captured_graph() -> None:
    matrix = fixtures.load_matrix()
    aim = redsession.aim_for(matrix, "3.3.0", "vulkan-image", "lavapipe", "3.3.0", given=False)
    row = matrix.expectation("3.3.0", "vulkan-image", "lavapipe", "3.3.0")
    assert row is not None and row.outcome == "reproduce" and row.signature
    assert aim.target == reduce.Target("crash", row.signal, row.signature)
    assert aim.bug == row.bug and aim.stage == "sgd_step[0]" and "fixtures/matrix.toml" in aim.source
    # A given graph is not the workload; a cell without a known bug reduces the graph's own failure, and says so.
    assert redsession.aim_for(matrix, "3.3.0", "vulkan-image", "lavapipe", "3.3.0", given=True).target is None
    buffer = redsession.aim_for(matrix, "3.3.0", "vulkan-buffer", "lavapipe", "3.3.0", given=False)
    assert buffer.target is None and "no known bug in fixtures/matrix.toml for 3.3.0/vulkan-buffer" in buffer.source


def test_a_known_bug_of_another_phase_cannot_be_reduced_from_the_capture() -> None:
    matrix = fixtures.load_matrix()
    rows = tuple(
        dataclasses.replace(r, stage="forward") if r.outcome == "reproduce" else r for r in matrix.expectations
    )
    moved = dataclasses.replace(matrix, expectations=rows)
    with pytest.raises(reduce.ReduceError, match=r"crashes at forward\[0\].*cannot be reduced from the capture"):
        redsession.aim_for(moved, "3.3.0", "vulkan-image", "lavapipe", "3.3.0", given=False)


FAKE_RUN = """#!/bin/sh
# mnn_graph run: exit $FAKE_EXIT after recording where its ops ran ($FAKE_BY, the `ops` event), unless empty.
out=""
while [ $# -gt 0 ]; do case "$1" in --out) out="$2";; esac; shift; done
mkdir -p "$out"
[ -n "$FAKE_BY" ] && printf '{"v":1,"event":"ops","by_backend":%s,"total":3}\\n' "$FAKE_BY" > "$out/events.jsonl"
exit "$FAKE_EXIT"
"""


def _spec(tmp_path: Path, by: str, code: int) -> reduce.Spec:
    tool = tmp_path / "mnn_graph"
    tool.write_text(FAKE_RUN)
    tool.chmod(0o755)
    env = {"FAKE_BY": by, "FAKE_EXIT": str(code)}
    runner = HostRunner(base_env={**os.environ, **env})
    return reduce.Spec(tool, tmp_path, tmp_path / "work", runner, "vulkan", None, env, None, jobs=1, timeout_s=30)


CRASH = reduce.Target("crash", "SIGSEGV", ("C::get",))


@pytest.mark.parametrize(
    ("by", "code", "want"),
    [
        ('{"cpu":{"Deconvolution":1},"vulkan":{"Raster":2}}', 0, "FALLBACK (Deconvolution x1 on cpu)"),
        ('{"vulkan":{"Deconvolution":1}}', 0, "passes"),
        ("", 0, "FALLBACK (no op placement recorded)"),
        ('{"vulkan":{"Deconvolution":1}}', 7, "fails otherwise (could not compute)"),
    ],
)
def test_the_reduced_graph_alone_is_fallback_when_its_op_ran_on_the_cpu(
    tmp_path: Path, by: str, code: int, want: str
) -> None:
    spec = _spec(tmp_path, by, code)
    got = redsession.verify(
        spec, CRASH, tmp_path, tmp_path / "work", lambda _: None, cpu=False, kinds=("Deconvolution",)
    )
    assert got["backend"] == want


class _Runner:
    """The standalone reproducer's build (cmake, ninja) succeeds; its run exits ``code`` with ``err`` on stderr."""

    name = "host"

    def __init__(self, code: int, err: str) -> None:
        self.code, self.err = code, err

    def run(self, argv: list[str], **kw: Any) -> Completed:
        ran = argv[0] == "sh"  # the reproducer runs through sh (cd into repro/); the build steps do not
        Path(kw["stderr_path"]).write_text(self.err if ran else "")
        return Completed(tuple(argv), self.code if ran else 0, 0.1)


@pytest.mark.parametrize(
    ("code", "err", "want"),
    [
        (5, "repro: FALLBACK: Deconvolution x1 on cpu, not vulkan\n", "FALLBACK (Deconvolution x1 on cpu, not vulkan)"),
        (7, "repro: could not compute Deconvolution81\n", "fails otherwise (could not compute)"),
        (1, "repro: outputs differ from the CPU's\n", "fails otherwise (differs)"),
    ],
)
def test_the_standalone_reproducer_says_fallback_and_could_not_compute(
    tmp_path: Path, code: int, err: str, want: str
) -> None:
    built: Any = dataclasses.make_dataclass("B", ["runner", "tree", "core"])(
        _Runner(code, err), dataclasses.make_dataclass("T", ["path"])(tmp_path), None
    )
    built.core = dataclasses.make_dataclass("C", ["lib_dir"])(tmp_path)
    prepared: Any = dataclasses.make_dataclass("P", ["built"])(built)
    spec = _spec(tmp_path, "", 0)
    out = redsession.verify_standalone(prepared, spec, CRASH, tmp_path, tmp_path, lambda _: None)
    assert out["standalone"] == want


@pytest.mark.parametrize(
    ("checks", "want"),
    [
        ({"backend": "FALLBACK (Deconvolution x1 on cpu)", "cpu": "passes", "standalone": "FALLBACK (x)"}, "FALLBACK"),
        ({"backend": "passes", "cpu": "passes", "standalone": "passes", "standalone_cpu": "passes"}, "PASS"),
        ({"backend": "fails", "cpu": "passes"}, "REPRODUCED"),
        ({"backend": "NOT-EXERCISED", "cpu": "passes"}, "NO-ANSWER"),
    ],
)
def test_a_check_at_another_ref_names_a_fallback(checks: dict[str, str], want: str) -> None:
    verdict, code = redsession.at_verdict(checks)
    assert verdict == want and (code == 0) == (want == "PASS")


def test_the_machines_own_gpu_is_aimed_at_the_row_for_its_vendor() -> None:
    # Rows for --icd host name the device (issue 22); the reduction has not probed it yet, so the row most likely
    # to judge the cell is the target: at 3.3.0 image mode, #3129's crash.
    aim = redsession.aim_for(fixtures.load_matrix(), "3.3.0", "vulkan-image", "host", "3.3.0", given=False)
    assert aim.target is not None and aim.target.signal == "SIGSEGV" and aim.op == "Deconvolution"


# issue 22: repro.cpp's words on a PoolGrad output of 64x50x8x8 (NC4HW4 pads 50 channels to 52): before the fix it
# counted the padded tensor and said this on every backend, the CPU included; after it, its numbers.
PADDED = "repro: running graph.mnn on cpu\nrepro: PoolGrad77 has 212992 values, the CPU's 204800\n"
NUMBERS = (
    "repro: PoolGrad77: max_rel 0.73, cosine 0.149000000, nmse 1.2, 0 of 204800 not finite, against the CPU's values\n"
    "repro: outputs differ from the CPU's\n"
)


@pytest.mark.parametrize(
    ("err", "want"),
    [
        (PADDED, "PoolGrad77 has 212992 values, the CPU's 204800"),
        (NUMBERS, "PoolGrad77: max_rel 0.73, cosine 0.149000000, nmse 1.2, 0 of 204800 not finite"),
        (
            NUMBERS.replace(
                "repro: outputs",
                "repro: PoolGrad77: 139264 of 204800 values differ, flat indices 65536 to 204799\nrepro: outputs",
            ),
            "PoolGrad77: max_rel 0.73, cosine 0.149000000, nmse 1.2, 0 of 204800 not finite; "
            "PoolGrad77: 139264 of 204800 values differ, flat indices 65536 to 204799",
        ),
    ],
)
def test_the_standalone_reproducers_numbers_are_in_the_checks(tmp_path: Path, err: str, want: str) -> None:
    built: Any = dataclasses.make_dataclass("B", ["runner", "tree", "core"])(
        _Runner(1, err), dataclasses.make_dataclass("T", ["path"])(tmp_path), None
    )
    built.core = dataclasses.make_dataclass("C", ["lib_dir"])(tmp_path)
    prepared: Any = dataclasses.make_dataclass("P", ["built"])(built)
    said: list[str] = []
    differs = reduce.Target("differs")
    out = redsession.verify_standalone(prepared, _spec(tmp_path, "", 0), differs, tmp_path, tmp_path, said.append)
    assert out["standalone"] == out["standalone_cpu"] == "fails"
    assert out["standalone_numbers"] == want and out["standalone_cpu_numbers"] == want
    assert any(want in line for line in said)


@pytest.mark.parametrize("standalone_cpu", ["fails otherwise (differs)", "passes"])
def test_a_reproducer_that_fails_where_mnn_graph_passes_on_the_cpu_is_no_evidence(standalone_cpu: str) -> None:
    checks = {"backend": "fails", "cpu": "passes", "standalone_build": "ok", "standalone": "fails"}
    checks |= {
        "standalone_cpu": standalone_cpu,
        "standalone_cpu_numbers": "PoolGrad77 has 212992 values, the CPU's 204800",
    }
    said: list[str] = []
    aim = redsession.Aim(None, "the captured graph's own failure")
    code = redsession.conclude(checks, aim, ("PoolGrad",), (76,), Path("/r"), 900.0, exhausted=False, say=said.append)
    blamed = [x for x in said if "look at repro.cpp before MNN" in x]
    if standalone_cpu == "passes":
        assert code == 0 and not blamed
    else:
        assert code == 1 and len(blamed) == 1 and "212992 values" in blamed[0] and "no evidence" in blamed[0]
