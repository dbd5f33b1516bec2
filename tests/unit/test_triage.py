"""triage (issue 27): the comparison over summary.json data, the exit code, and the plan of each finding (the heavy
steps faked: no MNN build)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import triage
from mnnrepro.bisect import _test_cell
from mnnrepro.settings import Settings


def ops(ref: str, tests: dict[str, str], variant: str = "vulkan-image", icd: str = "lavapipe") -> dict[str, Any]:
    cells = [
        {
            "cell": f"{ref}/{variant}/{icd}",
            "variant": variant,
            "icd": icd,
            "tests": [{"test": t, "status": s} for t, s in tests.items()],
        }
    ]
    return {"session": "ops", "ref": ref, "commit": f"{ref}-commit", "cells": cells}


def training(ref: str, verdicts: dict[str, str]) -> dict[str, Any]:
    """verdicts: {"mnistv2:vulkan-image/lavapipe": "PASS", "vulkan-buffer/lavapipe": ...} (no prefix: mnist)."""
    cells = []
    for key, verdict in verdicts.items():
        prefix, _, rest = key.rpartition(":")
        variant, icd = rest.split("/")
        cells.append(
            {
                "cell": f"{prefix + ':' if prefix else ''}{ref}/{rest}",
                "variant": variant,
                "icd": icd,
                "verdict": verdict,
            }
        )
    return {"format": 1, "header": {"session": "vulkan", "ref": ref, "commit": f"{ref}-commit"}, "cells": cells}


def kinds(rows: list[triage.Row]) -> dict[str, str]:
    return {r.name: r.kind for r in rows}


def test_an_ops_test_that_passes_at_a_and_crashes_or_fails_at_b_is_a_finding() -> None:
    rows = triage.compare(
        [ops("A", {"op/x": "PASS", "op/y": "UNEXPECTED-PASS", "op/z": "PASS"})],
        [ops("B", {"op/x": "CRASH", "op/y": "FAIL", "op/z": "TIMEOUT"})],
    )
    assert [r.name for r in triage.findings(rows)] == [
        "vulkan-image/lavapipe/op/x",
        "vulkan-image/lavapipe/op/y",
        "vulkan-image/lavapipe/op/z",
    ]
    assert triage.exit_code(rows) == 1


def test_a_pass_pass_pair_is_no_finding_and_exits_0() -> None:
    rows = triage.compare([ops("A", {"op/x": "PASS"})], [ops("B", {"op/x": "PASS"})])
    assert triage.findings(rows) == []
    assert kinds(rows) == {"vulkan-image/lavapipe/op/x": triage.SAME}
    assert triage.exit_code(rows) == 0


def test_moves_off_the_gpu_are_listed_never_findings() -> None:
    before = {"op/f": "PASS", "op/n": "PASS", "op/e": "PASS", "op/c": "PASS", "op/w": "FALLBACK"}
    after = {"op/f": "FALLBACK", "op/n": "NO-GPU-WORK", "op/e": "NOT-EXERCISED", "op/c": "CPU-FAIL", "op/w": "FAIL"}
    rows = triage.compare([ops("A", before)], [ops("B", after)])
    assert triage.findings(rows) == []
    assert set(kinds(rows).values()) == {triage.CHANGE}
    md = triage.tables(rows, "A", "B", only_changed=True)
    for status in after.values():
        assert f"| {status} |" in md  # listed, so nobody reads them as passes


def test_a_test_only_one_side_ran_is_not_comparable_never_a_pass() -> None:
    rows = triage.compare(
        [ops("A", {"op/old": "PASS", "op/skipped": "NOT-RUN"})],
        [ops("B", {"op/new": "CRASH", "op/skipped": "CRASH"})],
    )
    assert kinds(rows) == {
        "vulkan-image/lavapipe/op/new": triage.NOT_COMPARABLE,
        "vulkan-image/lavapipe/op/old": triage.NOT_COMPARABLE,
        "vulkan-image/lavapipe/op/skipped": triage.NOT_COMPARABLE,
    }
    assert triage.exit_code(rows) == triage.EXIT_NOTHING_COMPARABLE  # nothing compared: not "no difference"


def test_training_cells_are_keyed_by_workload_variant_icd_not_by_ref() -> None:
    rows = triage.compare(
        [
            training(
                "3.6.1", {"vulkan-buffer/lavapipe": "PASS", "mnistv2:vulkan-buffer/lavapipe": "FIXED", "cpu/-": "PASS"}
            )
        ],
        [
            training(
                "4d40bdbd",
                {"vulkan-buffer/lavapipe": "REPRODUCED", "mnistv2:vulkan-buffer/lavapipe": "FIXED", "cpu/-": "PASS"},
            )
        ],
    )
    assert kinds(rows) == {
        "mnist/vulkan-buffer/lavapipe": triage.REGRESSION,
        "mnistv2/vulkan-buffer/lavapipe": triage.SAME,
        "mnist/cpu/-": triage.SAME,
    }


def test_training_fixed_by_fallback_or_not_exercised_at_b_is_no_finding() -> None:
    rows = triage.compare(
        [training("A", {"vulkan-image/lavapipe": "PASS", "vulkan-buffer/lavapipe": "PASS"})],
        [training("B", {"vulkan-image/lavapipe": "FIXED-BY-FALLBACK", "vulkan-buffer/lavapipe": "NOT-EXERCISED"})],
    )
    assert triage.findings(rows) == [] and set(kinds(rows).values()) == {triage.CHANGE}


def test_ops_and_training_summaries_compare_in_one_triage() -> None:
    rows = triage.compare(
        [ops("A", {"op/x": "PASS"}), training("A", {"vulkan-image/lavapipe": "PASS"})],
        [ops("B", {"op/x": "PASS"}), training("B", {"vulkan-image/lavapipe": "HANG"})],
    )
    assert {(r.room, r.kind) for r in rows} == {("ops", triage.SAME), ("training", triage.REGRESSION)}


def test_no_difference_writes_both_tables(tmp_path: Path) -> None:
    a, b = (
        [ops("A", {"op/x": "PASS"}), training("A", {"vulkan-image/lavapipe": "PASS"})],
        [ops("B", {"op/x": "PASS"}), training("B", {"vulkan-image/lavapipe": "PASS"})],
    )
    rows = triage.compare(a, b)
    side_a = triage.Side("A", "a1", {"ops": tmp_path, "training": tmp_path})
    side_b = triage.Side("B", "b1", {"ops": tmp_path, "training": tmp_path})
    code = triage.triage(rows, side_a, side_b, tmp_path, None, say=lambda _: None)
    md = (tmp_path / "summary.md").read_text()
    assert code == 0 and "no difference" in md
    assert "| mnist | vulkan-image | lavapipe | PASS | PASS | same |" in md
    assert "| vulkan-image | lavapipe | op/x | PASS | PASS | same |" in md
    assert json.loads((tmp_path / "triage.json").read_text())["exit"] == 0


class FakeHeavy:
    def __init__(self, out: Path) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.out = out

    def _step(self, name: str, args: dict[str, str], out: Path) -> Path | None:
        self.calls.append((name, args))
        (out / name).mkdir(parents=True, exist_ok=True)
        return out / name

    def reduce(self, args: dict[str, str], out: Path) -> Path | None:
        return self._step("reduce", args, out)

    def bisect(self, args: dict[str, str], out: Path) -> Path | None:
        return self._step("bisect", args, out)

    def report(self, args: dict[str, str], out: Path) -> Path | None:
        return self._step("report", args, out)


def test_a_training_finding_is_reduced_at_b_then_bisected_with_the_reduction_then_reported(tmp_path: Path) -> None:
    b_dir = tmp_path / "b"
    b_dir.mkdir()
    summary_b = training("HEAD", {"mnistv2:vulkan-image/lavapipe": "FAIL"})
    (b_dir / "summary.json").write_text(json.dumps(summary_b))
    rows = triage.compare([training("3.6.1", {"mnistv2:vulkan-image/lavapipe": "PASS"})], [summary_b])
    a = triage.Side("3.6.1", "aaa", {"training": tmp_path / "a"})
    b = triage.Side("HEAD", "bbb", {"training": b_dir})
    heavy = FakeHeavy(tmp_path)
    assert triage.triage(rows, a, b, tmp_path, heavy, say=lambda _: None) == 1
    where = tmp_path / "finding-1-mnistv2-vulkan-image-lavapipe"
    assert heavy.calls == [
        ("reduce", {"ref": "bbb", "variant": "vulkan-image", "icd": "lavapipe", "workload": "mnistv2"}),
        ("bisect", {"good": "aaa", "bad": "bbb", "mode": "image", "icd": "lavapipe", "repro": str(where / "reduce")}),
        (
            "report",
            {"issue": str(b_dir), "cell": "mnistv2:HEAD/vulkan-image/lavapipe", "bisect": str(where / "bisect")},
        ),
    ]
    assert (where / "finding.json").is_file() and (tmp_path / "triage.json").is_file()


def test_an_ops_finding_is_bisected_with_the_one_test_oracle_and_not_reduced() -> None:
    row = triage.Row("ops", ("vulkan-buffer", "swiftshader", "op/x"), "PASS", "CRASH", triage.REGRESSION, "")
    steps = triage.plan(row, triage.Side("A", "a1", {}), triage.Side("B", "b1", {"ops": Path("/r/b")}))
    assert [(s.step, s.args) for s in steps] == [
        ("bisect", {"good": "a1", "bad": "b1", "mode": "buffer", "icd": "swiftshader", "test": "op/x"}),
        ("report", {"issue": "/r/b", "test": "op/x", "bisect": "<bisect>"}),
    ]


def test_a_failed_reduction_stops_its_bisect_and_says_so(tmp_path: Path) -> None:
    class NoReduction(FakeHeavy):
        def reduce(self, args: dict[str, str], out: Path) -> Path | None:
            self.calls.append(("reduce", args))
            return None

    row = triage.Row("training", ("mnist", "vulkan-image", "lavapipe"), "PASS", "FAIL", triage.REGRESSION, "")
    heavy = NoReduction(tmp_path)
    plan = triage.plan(row, triage.Side("A", "a1", {}), triage.Side("B", "b1", {"training": tmp_path}))
    log = triage.execute(plan, tmp_path, heavy, lambda _: None)
    assert [c[0] for c in heavy.calls] == ["reduce", "report"]
    assert log[1] == {"step": "bisect", "result": "not run: <reduce> produced nothing"}


def test_bisect_test_cell_names_the_test_and_refuses_two_workloads(tmp_path: Path) -> None:
    s = Settings(icds=("lavapipe",))
    assert _test_cell("vulkan-image", s, "op/x", None).startswith("vulkan-image/lavapipe/optest=op/x/")
    assert _test_cell("vulkan-image", s, None, None) == ""
    with pytest.raises(Exception, match="two workloads"):
        _test_cell("vulkan-image", s, "op/x", tmp_path)


def test_keep_takes_the_asked_icds_and_variants_and_the_cpu_cells() -> None:
    rows = triage.compare(
        [
            ops("A", {"op/x": "PASS"}, icd="swiftshader"),
            ops("A", {"op/x": "PASS"}),
            ops("A", {"op/x": "PASS"}, "cpu", "-"),
        ],
        [
            ops("B", {"op/x": "CRASH"}, icd="swiftshader"),
            ops("B", {"op/x": "PASS"}),
            ops("B", {"op/x": "PASS"}, "cpu", "-"),
        ],
    )
    assert [r.name for r in triage.keep(rows, ("lavapipe",))] == ["cpu/-/op/x", "vulkan-image/lavapipe/op/x"]
    assert [r.name for r in triage.keep(rows, (), ("cpu",))] == ["cpu/-/op/x"]


def test_known_wrong_values_at_b_after_a_pass_are_a_regression() -> None:
    # KNOWN-WRONG: the GPU computed wrong values (a row expected them); after PASS/FIXED at A it is a finding.
    rows = triage.compare(
        [training("A", {"vulkan-image/host": "PASS", "vulkan-buffer/host": "FIXED"})],
        [training("B", {"vulkan-image/host": "KNOWN-WRONG", "vulkan-buffer/host": "KNOWN-WRONG"})],
    )
    assert set(kinds(rows).values()) == {triage.REGRESSION}
    assert triage.exit_code(rows) == 1


def test_an_interrupted_training_cell_at_b_is_not_comparable_and_never_no_difference() -> None:
    rows = triage.compare(
        [training("A", {"vulkan-image/lavapipe": "PASS", "vulkan-buffer/lavapipe": "FIXED"})],
        [training("B", {"vulkan-image/lavapipe": "INTERRUPTED", "vulkan-buffer/lavapipe": "INTERRUPTED"})],
    )
    assert set(kinds(rows).values()) == {triage.NOT_COMPARABLE}
    assert triage.exit_code(rows) == triage.EXIT_NOTHING_COMPARABLE


def test_changes_without_a_finding_are_not_called_no_difference(tmp_path: Path) -> None:
    rows = triage.compare(
        [training("A", {"vulkan-image/lavapipe": "PASS"})],
        [training("B", {"vulkan-image/lavapipe": "NOT-EXERCISED"})],
    )
    a, b = triage.Side("A", "a", {}), triage.Side("B", "b", {})
    md = triage.write(tmp_path, rows, a, b, {})
    assert "no difference" not in md and "no regression found; 1 change(s)" in md


def _two_ops_findings(tmp_path: Path, n: int = 2) -> tuple[list[triage.Row], triage.Side, triage.Side]:
    names = [f"op/t{k}" for k in range(1, n + 1)]
    rows = triage.compare([ops("A", dict.fromkeys(names, "PASS"))], [ops("B", dict.fromkeys(names, "CRASH"))])
    return rows, triage.Side("A", "a1", {"ops": tmp_path}), triage.Side("B", "b1", {"ops": tmp_path})


def test_the_top_files_are_written_before_the_heavy_steps_and_after_each_finding(tmp_path: Path) -> None:
    """A kill mid-bisect (a CI step timeout) leaves a summary: every finding pending at first, then each one's
    steps as soon as they ran, the ones not reached still pending."""
    rows, a, b = _two_ops_findings(tmp_path)
    seen: list[tuple[str, str, dict[str, Any]]] = []

    class Watching(FakeHeavy):
        def _step(self, name: str, args: dict[str, str], out: Path) -> Path | None:
            md, data = (tmp_path / "summary.md").read_text(), json.loads((tmp_path / "triage.json").read_text())
            seen.append((f"{out.name}:{name}", md, data["findings"]))
            return super()._step(name, args, out)

    assert triage.triage(rows, a, b, tmp_path, Watching(tmp_path), say=lambda _: None) == 1
    first, second = "finding-1-vulkan-image-lavapipe-op-t1", "finding-2-vulkan-image-lavapipe-op-t2"
    at_start = next(s for s in seen if s[0] == f"{first}:bisect")
    assert at_start[2] == {first: [{"step": "pending"}], second: [{"step": "pending"}]}
    assert f"- {first}: pending" in at_start[1] and "2 still pending" in at_start[1]
    mid = next(s for s in seen if s[0] == f"{second}:bisect")  # the first finding's steps done, the second's not
    assert [s["step"] for s in mid[2][first]] == ["bisect", "report"]
    assert mid[2][second] == [{"step": "pending"}]
    assert f"- {second}: pending" in mid[1] and "1 still pending" in mid[1]
    final = (tmp_path / "summary.md").read_text()
    assert "pending" not in final and "2 finding(s)" in final


def test_findings_beyond_max_findings_are_listed_not_triaged_and_still_fail(tmp_path: Path) -> None:
    rows, a, b = _two_ops_findings(tmp_path, 3)
    heavy = FakeHeavy(tmp_path)
    assert triage.triage(rows, a, b, tmp_path, heavy, say=lambda _: None, max_findings=1) == 1
    assert {c[1]["test"] for c in heavy.calls if c[0] == "bisect"} == {"op/t1"}
    md = (tmp_path / "summary.md").read_text()
    for k in (2, 3):
        assert f"- finding-{k}-vulkan-image-lavapipe-op-t{k}: not triaged (limit 1)" in md
        assert not (tmp_path / f"finding-{k}-vulkan-image-lavapipe-op-t{k}").exists()
    assert "3 finding(s); 2 not triaged" in md
    data = json.loads((tmp_path / "triage.json").read_text())
    assert len(data["findings"]) == 3 and data["exit"] == 1
    # --plan-only keeps the limit too; the default is 5
    assert triage.triage(rows, a, b, tmp_path, None, say=lambda _: None, max_findings=2) == 1
    assert "not triaged (limit 2)" in (tmp_path / "summary.md").read_text()
    p = argparse.ArgumentParser()
    triage.add_arguments(p)
    assert p.parse_args(["A", "B"]).max_findings == triage.MAX_FINDINGS == 5
    assert p.parse_args(["A", "B", "--max-findings", "2"]).max_findings == 2
    with pytest.raises(SystemExit):
        p.parse_args(["A", "B", "--max-findings", "0"])


# -- training verdicts compared by what was observed, not by a row's words ------------------------------------------
GRADS = (
    "no committed golden for {ref}: vs the CPU run of this build: gradient check FAILED for 28/40 tensors; "
    "worst conv1.weight step 0 grad: max_rel 3.85e+00"
)


def trained_wrong(ref: str, verdict: str, grads: str = GRADS, *, with_checks: bool = True) -> dict[str, Any]:
    """One mnistv2 vulkan-image cell on the host GPU as summary.json stores it: KNOWN-WRONG (a row expects the wrong
    values: its reason is prefixed with the row's) or FAIL (no row: judge() appends its note)."""
    checks = [
        {"name": "loss_finite", "passed": True, "detail": "all finite", "value": None, "limit": None, "status": "pass"},
        {"name": "gradients", "passed": False, "detail": grads.format(ref=ref), "value": None, "limit": f"/r/{ref}"},
    ]
    checks[1]["status"] = "fail"
    text = f"gradients: {grads.format(ref=ref)}"
    reason = (
        f"known wrong values (issue 22: 3.6.x image mode on NVIDIA): {text}"
        if verdict == "KNOWN-WRONG"
        else f"{text} (no expectation for this cell in fixtures/matrix.toml: no row names its device 'NVIDIA H100')"
    )
    summary = training(ref, {"mnistv2:vulkan-image/host": verdict})
    summary["cells"][0].update({"ref": ref, "reason": reason, "checks": checks if with_checks else []})
    return summary


def placed(summary: dict[str, Any], sgd_cpu: dict[str, int]) -> dict[str, Any]:
    """Each cell of a training summary with its placement as summary.json records it (op types on the CPU)."""
    for cell in summary["cells"]:
        cell["placement"] = {
            "forward": {"ops": {"cpu": 2, "vulkan": 40}, "cpu_ops": {"Cast": 2}},
            "sgd_step": {"ops": {"cpu": sum(sgd_cpu.values()), "vulkan": 374}, "cpu_ops": dict(sgd_cpu)},
        }
    return summary


def test_training_pass_and_fixed_with_the_same_placement_are_the_same_either_way() -> None:
    # FIXED says a row named a fixed bug there and checked its op ran on the GPU; PASS (no row) checked no
    # placement: the same only where the same op types ran on the CPU.
    rows = triage.compare(
        [placed(training("3.6.1", {"mnistv2:vulkan-buffer/host": "FIXED", "vulkan-buffer/host": "PASS"}), {"Cast": 2})],
        [
            placed(
                training("4d40bdbd", {"mnistv2:vulkan-buffer/host": "PASS", "vulkan-buffer/host": "FIXED"}), {"Cast": 2}
            )
        ],
    )
    assert kinds(rows) == {"mnistv2/vulkan-buffer/host": triage.SAME, "mnist/vulkan-buffer/host": triage.SAME}
    why = {r.name: r.why for r in rows}
    assert why["mnistv2/vulkan-buffer/host"] == (
        "trained right at both with the same ops on the CPU (FIXED at A, PASS at B: a row names a fixed bug at A only)"
    )
    assert why["mnist/vulkan-buffer/host"].startswith("trained right at both with the same ops on the CPU (PASS at A")
    assert triage.exit_code(rows) == 0


def test_training_pass_beside_fixed_with_the_bug_op_on_the_cpu_or_no_placement_stays_a_change() -> None:
    # B's PASS ran the Deconvolution on the CPU: a row would call it FIXED-BY-FALLBACK; never "the same".
    rows = triage.compare(
        [placed(training("3.6.1", {"mnistv2:vulkan-buffer/host": "FIXED"}), {"Cast": 2})],
        [placed(training("HEAD", {"mnistv2:vulkan-buffer/host": "PASS"}), {"Cast": 2, "Deconvolution": 1})],
    )
    assert kinds(rows) == {"mnistv2/vulkan-buffer/host": triage.CHANGE}
    assert "differs (A forward: Cast; sgd_step: Cast; B forward: Cast; sgd_step: Cast, Deconvolution)" in rows[0].why
    rows = triage.compare(
        [training("3.6.1", {"mnistv2:vulkan-buffer/host": "FIXED"})],
        [training("HEAD", {"mnistv2:vulkan-buffer/host": "PASS"})],
    )
    assert kinds(rows) == {"mnistv2/vulkan-buffer/host": triage.CHANGE}
    assert rows[0].why.endswith("but the placement on the CPU is not recorded at A and B")


def test_training_known_wrong_and_fail_with_the_same_checks_are_the_same_either_way() -> None:
    # The same failing checks, apart from each side's ref name; one side's row called them KNOWN-WRONG.
    sha = "4d40bdbd" * 5
    for a, b in (("KNOWN-WRONG", "FAIL"), ("FAIL", "KNOWN-WRONG")):
        rows = triage.compare([trained_wrong("3.6.1", a)], [trained_wrong(sha, b)])
        assert kinds(rows) == {"mnistv2/vulkan-image/host": triage.SAME}, (a, b)
        assert rows[0].why.startswith(f"trained wrong at both with the same failing checks ({a} at A, {b} at B")
        assert triage.exit_code(rows) == 0
    # a summary without its checks list: the reason, less the row's prefix and judge()'s note, is compared
    rows = triage.compare(
        [trained_wrong("3.6.1", "KNOWN-WRONG", with_checks=False)], [trained_wrong(sha, "FAIL", with_checks=False)]
    )
    assert kinds(rows) == {"mnistv2/vulkan-image/host": triage.SAME}


def test_training_trained_wrong_with_a_golden_at_one_ref_only_compares_the_numbers() -> None:
    # 3.6.1 has a committed golden, HEAD has none: its gradient check compares with the CPU run of its build and says
    # so before the same numbers (seen on an NVIDIA H200, triage 3.6.1 -> 4d40bdbd, mnistv2 image mode).
    golden = GRADS.replace("no committed golden for {ref}: vs the CPU run of this build: ", "")
    rows = triage.compare([trained_wrong("3.6.1", "KNOWN-WRONG", golden)], [trained_wrong("4d40bdbd" * 5, "FAIL")])
    assert kinds(rows) == {"mnistv2/vulkan-image/host": triage.SAME}
    # other numbers behind the same words stay a change
    other = GRADS.replace("28/40", "27/40")
    rows = triage.compare([trained_wrong("3.6.1", "KNOWN-WRONG", golden)], [trained_wrong("HEAD", "FAIL", other)])
    assert kinds(rows) == {"mnistv2/vulkan-image/host": triage.CHANGE}


def test_training_known_wrong_and_fail_with_other_checks_stay_a_change(tmp_path: Path) -> None:
    other = GRADS.replace("28/40", "3/40").replace("conv1.weight", "fc2.bias")
    rows = triage.compare([trained_wrong("3.6.1", "KNOWN-WRONG")], [trained_wrong("HEAD", "FAIL", other)])
    assert kinds(rows) == {"mnistv2/vulkan-image/host": triage.CHANGE}
    assert rows[0].why == ("did not pass at A (KNOWN-WRONG): trained wrong at both, but the failing checks differ")
    # the ref is a placeholder only as a whole word: refs 3.6 and 3.7 naming 3.6.1's and 3.7.1's goldens differ
    rows = triage.compare(
        [trained_wrong("3.6", "KNOWN-WRONG", GRADS.replace("{ref}", "{ref}.1"))],
        [trained_wrong("3.7", "FAIL", GRADS.replace("{ref}", "{ref}.1"))],
    )
    assert rows[0].kind == triage.CHANGE
    # the files keep their shape: the rows' keys, and the why beside the kind in summary.md
    md = triage.write(tmp_path, rows, triage.Side("3.6.1", "a", {}), triage.Side("HEAD", "b", {}), {})
    assert "| mnistv2 | vulkan-image | host | KNOWN-WRONG | FAIL | change (not a regression): did not pass" in md
    row = json.loads((tmp_path / "triage.json").read_text())["rows"][0]
    assert set(row) == {"room", "key", "a", "b", "kind", "why"} and row["key"] == ["mnistv2", "vulkan-image", "host"]


def test_a_pass_or_fixed_at_a_and_trained_wrong_at_b_is_still_a_regression() -> None:
    # Whatever the rows say (KNOWN-WRONG: a row expects the wrong values at B), a pass at A and wrong values at B
    # is a finding; only the same observed outcome is "same".
    for a, b in (("PASS", "KNOWN-WRONG"), ("FIXED", "KNOWN-WRONG"), ("PASS", "FAIL"), ("FIXED", "FAIL")):
        rows = triage.compare([training("3.6.1", {"mnistv2:vulkan-image/host": a})], [trained_wrong("HEAD", b)])
        assert kinds(rows) == {"mnistv2/vulkan-image/host": triage.REGRESSION}, (a, b)
        assert rows[0].why == f"passes at A, {b} at B"
        assert triage.exit_code(rows) == 1


def test_the_known_wrong_prefix_ends_before_the_first_check_not_inside_the_rows_reason() -> None:
    # matrix.toml's reasons hold "): " themselves ("(H100, 3.6.1, seen once): static as ...").
    cell = {"reason": "known wrong values (image mode (H100, 3.6.1, seen once): static as MNIST's): tracks_cpu: 1.17"}
    assert triage.failing_checks(cell) == "tracks_cpu: 1.17"
