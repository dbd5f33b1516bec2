"""`run SESSION --shard K/N` and `mnnrepro merge` of a training session's shards (issue 26): the split over the GPU
cells (shard.py's own functions), each shard's CPU baselines, the partial labels of every report, and the merge with
its refusals. Summaries are made from the session's real plan (cells_for) and its real summarize/report code."""

from __future__ import annotations

import copy
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import cli, fixtures, merge, prepare, report, shard, variants
from mnnrepro.cells import Cell, CellRun
from mnnrepro.contract import RunRecord
from mnnrepro.errors import ConfigError
from mnnrepro.judge import FIXED, PASS, REPRODUCED, Verdict
from mnnrepro.runner import Completed
from mnnrepro.settings import Settings, load
from mnnrepro.workloads.train import session as trainsession
from mnnrepro.workloads.train import shards as trainshards
from mnnrepro.workloads.train import workload as train
from mnnrepro.workloads.train.session import MnistSession, cells_for, shard_cells

GPU_VARIANTS = ("vulkan-image", "vulkan-buffer")
ICDS = ("lavapipe", "swiftshader")
ROW = "[[expect]] (3.3.0 vulkan-image lavapipe reproduce)"


def matrix_plan() -> list[Cell]:
    """A matrix-like plan: two refs, two workloads, two GPU variants on two ICDs (16 GPU cells, 4 CPU baselines)."""
    return [
        c for w in (train.NAME, "mnistv2") for ref in ("3.3.0", "3.6.1") for c in cells_for(ref, GPU_VARIANTS, ICDS, w)
    ]


# --- the split ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [1, 2, 3, 4, 16])
def test_the_gpu_cells_split_by_shard_py_and_each_shard_runs_its_own_cpu_baselines(total: int) -> None:
    plan = matrix_plan()
    gpu = [c.id for c in plan if c.variant != variants.BASELINE]
    expected = shard.split(gpu, total)  # the one split of shard.py: no second one
    seen: list[str] = []
    for k in range(1, total + 1):
        kept, record = shard_cells(plan, shard.Shard(k, total))
        mine = [c for c in kept if c.variant != variants.BASELINE]
        assert sorted(c.id for c in mine) == expected[k - 1] == record["tests"]
        assert record["seed"] == shard.SEED and record["selection_tests"] == len(gpu) == 16
        assert record["plan"] == [c.id for c in plan]
        # The CPU baselines of exactly the (ref, workload) pairs this slice holds, and no other.
        needed = {(c.ref, c.workload) for c in mine}
        cpu = [c for c in kept if c.variant == variants.BASELINE]
        assert {(c.ref, c.workload) for c in cpu} == needed and len(cpu) == len(needed)
        assert record["cpu_cells"] == [c.id for c in cpu]
        assert kept == [c for c in plan if c in kept]  # plan order: a baseline before the cells compared with it
        seen += [c.id for c in mine]
    assert sorted(seen) == sorted(gpu)  # every GPU cell in exactly one shard


def test_a_shard_of_one_ref_and_workload_skips_no_baseline_and_runs_no_other() -> None:
    plan = cells_for("3.3.0", ("vulkan-buffer",), ICDS)
    for k in (1, 2):
        kept, _ = shard_cells(plan, shard.Shard(k, 2))
        assert [c.variant for c in kept] == ["cpu", "vulkan-buffer"]


def test_what_cannot_be_split_is_refused() -> None:
    with pytest.raises(ConfigError, match="no GPU cell"):
        shard_cells(cells_for("3.3.0", ("cpu",), ICDS), shard.Shard(1, 2))
    with pytest.raises(ConfigError, match="shard 3 would hold none") as exc:
        shard_cells(cells_for("3.3.0", ("vulkan-buffer",), ICDS), shard.Shard(3, 3))
    assert "at most 2 shards" in (exc.value.hint or "")


def _no_build(*_: Any, **__: Any) -> Any:
    raise AssertionError("refused too late: preflight (or a build) started")


@pytest.mark.parametrize(
    ("session", "value", "said"),
    [
        ("vulkan_buffer", "3/2", "1 <= K <= N"),
        ("vulkan_buffer", "two/4", "is not K/N or auto"),
        ("vulkan_buffer", "auto", "CI_NODE_INDEX and CI_NODE_TOTAL not set"),
        ("cpu", "1/2", "no GPU cell"),
        ("vulkan_buffer", "3/3", "would hold none"),
    ],
)
def test_bad_shards_are_refused_before_anything_is_built(
    monkeypatch: pytest.MonkeyPatch, session: str, value: str, said: str
) -> None:
    monkeypatch.delenv(shard.INDEX_VAR, raising=False)
    monkeypatch.delenv(shard.TOTAL_VAR, raising=False)
    monkeypatch.setattr(prepare, "preflight_for", _no_build)
    monkeypatch.setattr(prepare, "prepare", _no_build)
    with pytest.raises(ConfigError, match=said):
        trainsession.run_session(session, Settings(ref="3.3.0", shard=value, icds=ICDS), say=lambda _: None)


def test_the_cli_gives_run_its_shard_from_the_flag_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[str] = []

    def fake(name: str, settings: Settings, **_: Any) -> int:
        got.append(settings.shard)
        return 0

    monkeypatch.setattr(cli, "run_session", fake)
    assert cli.main(["run", "vulkan_buffer", "--shard", "2/4"]) == 0
    monkeypatch.setenv("MNNREPRO_SHARD", "1/3")
    assert cli.main(["run", "vulkan_buffer"]) == 0
    assert got == ["2/4", "1/3"]


# --- a shard's reports -------------------------------------------------------------------------------------------


def _row(cell: Cell, verdict: str, expected: str, row: str = "", reason: str = "ran") -> tuple[CellRun, Verdict]:
    run = CellRun(
        cell, Path("/nowhere"), Completed(argv=(), returncode=0, duration_s=1.0), RunRecord(), None, [], False
    )
    evidence: dict[str, Any] = {"row": row} if row else {}
    return run, Verdict(verdict, verdict == expected, expected, reason, [], evidence)


def _session(sliced: shard.Shard | None, icds: tuple[str, ...] = ICDS) -> MnistSession:
    settings = Settings(ref="3.3.0", icds=icds, shard=f"{sliced.index}/{sliced.total}" if sliced else "")
    matrix = fixtures.load_matrix()
    s = MnistSession("vulkan", GPU_VARIANTS, settings, matrix, ["3.3.0"], lambda _: None, time.monotonic(), 0.0)
    s.sliced = sliced
    s.workload = train.workload_of(matrix, settings, train.NAME)
    s.per_ref["3.3.0"] = {"ref": "3.3.0", "commit": "5047919a1ae5", "mnn_version": "3.3.0", "runner": "host"}
    return s


def _rows_for(cells: list[Cell], passing: tuple[str, ...] = ()) -> list[tuple[CellRun, Verdict]]:
    """Every cell as expected, but the GPU cells of image/lavapipe (row ROW: reproduce), which reproduce unless
    named in ``passing`` (then they train right: FIXED, the judge's words that the row is stale)."""
    rows = []
    for c in cells:
        if (c.variant, c.icd) == ("vulkan-image", "lavapipe"):
            if c.id in passing:
                rows.append(_row(c, FIXED, REPRODUCED, ROW, "trained; the row expects a crash: the row is stale"))
            else:
                rows.append(_row(c, REPRODUCED, REPRODUCED, ROW))
        else:
            rows.append(_row(c, PASS, PASS, "[[expect]] (3.3.0 x pass)"))
    return rows


def test_a_shard_calls_itself_partial_in_every_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = _session(shard.Shard(1, 2))
    cells = list(s.plan())
    assert s.shard_record is not None and 1 < len(cells) < 5
    data = s.summarize(_rows_for(cells, passing=tuple(c.id for c in cells)), None, [])
    label = "shard 1/2: partial, not a whole verdict"
    assert data["shard"] == s.shard_record and data["shard"]["index"] == 1 and data["shard"]["total"] == 2
    assert data["status"] == "partial" and "mnnrepro merge" in data["stale_not_judged"]
    assert "stale" not in data  # no row is called stale from a shard
    written = report.write_all(tmp_path, data)
    md = (tmp_path / report.MARKDOWN_FILE).read_text()
    assert label in md.splitlines()[0] and "stale rows are judged only over every shard" in md
    suite = ET.parse(tmp_path / report.JUNIT_FILE).getroot().find("testsuite")
    assert suite is not None and label in suite.get("name", "")
    s.say = print
    s.show(data, [], written, None)
    assert s.exit_code(data, []) == 0
    out = capsys.readouterr().out
    assert "stale rows are judged only over every shard" in out and f"session vulkan ({label})" in out


def test_a_shards_cells_do_not_call_their_row_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _session(shard.Shard(1, 1))
    cell = Cell("3.3.0", "vulkan-image", "lavapipe")
    stale_reason = _row(cell, FIXED, REPRODUCED, ROW, "trained right; the row is stale")

    class Built:
        def run(self, _: Cell) -> tuple[CellRun, Verdict]:
            return stale_reason

    s.built[("3.3.0", train.NAME)] = Built()  # type: ignore[assignment]
    _, verdict = s.run(cell)
    assert verdict.verdict == FIXED and not verdict.matched  # the cell keeps its verdict
    assert "the row is stale" not in verdict.reason and "may be stale" in verdict.reason


def test_a_whole_run_judges_stale_rows_over_every_cell() -> None:
    s = _session(None)
    cells = list(s.plan())
    image_lavapipe = [c.id for c in cells if (c.variant, c.icd) == ("vulkan-image", "lavapipe")]
    data = s.summarize(_rows_for(cells, passing=tuple(image_lavapipe)), None, [])
    assert "shard" not in data and data["status"] == "complete"
    assert data["unexpected_passes"] == image_lavapipe
    assert [r["row"] for r in data["stale"]] == [ROW]


# --- the merge ---------------------------------------------------------------------------------------------------


def shard_summaries(tmp: Path, total: int, passing: tuple[str, ...] = ()) -> tuple[list[Path], dict[str, Any]]:
    """Every shard of a two-ref `vulkan` plan (the session's own summarize), and the unsharded run's summary."""
    dirs = []
    for k in range(1, total + 1):
        s = _two_refs(shard.Shard(k, total))
        data = s.summarize(_rows_for(list(s.plan()), passing), None, [])
        dirs.append(_write(tmp / f"s{k}", data))
    s = _two_refs(None)
    return dirs, s.summarize(_rows_for(list(s.plan()), passing), None, [])


def _two_refs(sliced: shard.Shard | None) -> MnistSession:
    s = _session(sliced)
    s.refs = ["3.3.0", "3.6.1"]
    s.per_ref["3.6.1"] = {"ref": "3.6.1", "commit": "6f5bd7c0e1", "mnn_version": "3.6.1", "runner": "host"}
    return s


def _write(d: Path, data: dict[str, Any]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps(data, default=str))
    return d


def _merge(tmp: Path, dirs: list[Path]) -> tuple[int, dict[str, Any]]:
    out = tmp / "merged"
    rc = merge.run(dirs, load({"results_dir": str(tmp / "r")}), out=out, say=lambda _: None)
    return rc, json.loads((out / "summary.json").read_text())


def _statuses(data: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    return [(c["cell"], c["verdict"], c["expected"], c["matched"]) for c in data["cells"]]


@pytest.mark.parametrize("total", [2, 3, 8])
def test_shards_merge_to_the_unsharded_statuses(tmp_path: Path, total: int) -> None:
    dirs, whole = shard_summaries(tmp_path, total)
    rc, data = _merge(tmp_path, dirs)
    assert rc == 0 and data["all_matched"] and data["status"] == "complete" and "shard" not in data
    assert _statuses(data) == _statuses(whole)  # plan order, every cell once, CPU baselines once
    assert data["merged"]["total"] == total and data["stale"] == [] == whole["stale"]
    for name in (report.SUMMARY_FILE, report.JUNIT_FILE, report.MARKDOWN_FILE):
        assert (tmp_path / "merged" / name).is_file()
    assert "Merged from" in (tmp_path / "merged" / report.MARKDOWN_FILE).read_text()


def test_stale_rows_are_judged_on_the_whole(tmp_path: Path) -> None:
    """ROW judges image/lavapipe of 3.3.0 and 3.6.1: one trains right, the other reproduces: not stale. Both train
    right: stale, on the merge as on the whole run."""
    one = ("3.3.0/vulkan-image/lavapipe",)
    dirs, whole = shard_summaries(tmp_path / "a", 4, passing=one)
    rc, data = _merge(tmp_path / "a", dirs)
    assert rc == 1 and data["unexpected_passes"] == list(one) == whole["unexpected_passes"]
    assert data["stale"] == [] == whole["stale"]
    both = (*one, "3.6.1/vulkan-image/lavapipe")
    dirs, whole = shard_summaries(tmp_path / "b", 4, passing=both)
    rc, data = _merge(tmp_path / "b", dirs)
    assert [r["row"] for r in data["stale"]] == [ROW] == [r["row"] for r in whole["stale"]]
    assert "**STALE** " + ROW in (tmp_path / "b" / "merged" / report.MARKDOWN_FILE).read_text()


def refused(tmp: Path, dirs: list[Path]) -> str:
    out = tmp / "merged"
    with pytest.raises(ConfigError) as exc:
        merge.run(dirs, load({"results_dir": str(tmp / "r")}), out=out, say=lambda _: None)
    assert not out.exists()
    return exc.value.message


def _edit(d: Path, change: Any) -> None:
    data = json.loads((d / "summary.json").read_text())
    change(data)
    (d / "summary.json").write_text(json.dumps(data))


def test_a_missing_or_doubled_shard_is_named(tmp_path: Path) -> None:
    dirs, _ = shard_summaries(tmp_path, 3)
    assert "shard(s) 2 of 3 missing" in refused(tmp_path, [dirs[0], dirs[2]])
    copy_dir = _write(tmp_path / "again", json.loads((dirs[0] / "summary.json").read_text()))
    said = refused(tmp_path, [*dirs, copy_dir])
    assert "shard 1/3 given 2 times" in said and str(copy_dir) in said and str(dirs[0]) in said


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda d: d["header"]["refs"]["3.6.1"].update(commit="0123456789"), "refs (commits) differ"),
        (lambda d: d["header"].update(commit="0123456789"), "refs (commits) differ: 3.3.0 commit"),
        (lambda d: d["header"].update(suite_digest="0" * 16), "suite_digest differ"),
        (lambda d: d["header"]["verdict_settings"].update(steps=2), "verdict_settings differ"),
        (lambda d: d["header"].update(session="vulkan_image"), "session differ"),
        (lambda d: d["shard"].update(seed=1), "shard seeds differ"),
        (lambda d: d["shard"].update(total=4), "shard counts (N) differ"),
        (lambda d: d.update(status=report.INTERRUPTED), "was interrupted"),
    ],
)
def test_a_set_that_is_not_one_run_split_is_refused(tmp_path: Path, change: Any, said: str) -> None:
    dirs, _ = shard_summaries(tmp_path, 2)
    _edit(dirs[1], change)
    assert said in refused(tmp_path, dirs)


def test_a_cpu_baseline_judged_differently_by_two_shards_is_refused(tmp_path: Path) -> None:
    dirs, _ = shard_summaries(tmp_path, 4)
    runs_it = [d for d in dirs if "3.3.0/cpu/-" in json.loads((d / "summary.json").read_text())["shard"]["cpu_cells"]]
    assert len(runs_it) >= 2

    def fail_cpu(data: dict[str, Any]) -> None:
        for c in data["cells"]:
            if c["cell"] == "3.3.0/cpu/-":
                c.update(verdict="FAIL", matched=False)

    _edit(runs_it[1], fail_cpu)
    assert "CPU baseline 3.3.0/cpu/-: PASS in" in refused(tmp_path, dirs)


def test_an_ops_shard_and_a_training_shard_never_merge(tmp_path: Path) -> None:
    dirs, _ = shard_summaries(tmp_path, 2)
    ops = {"session": "ops", "cells": [], "shard": {"index": 2, "total": 2, "seed": shard.SEED, "tests": []}}
    ops_dir = _write(tmp_path / "ops", ops)
    assert "ops and training shards mixed" in refused(tmp_path, [dirs[0], ops_dir])


def test_the_cli_merges_training_shards_and_refuses_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs, _ = shard_summaries(tmp_path, 2)
    assert cli.main(["merge", *map(str, dirs), "--out", str(tmp_path / "out")]) == 0
    assert "Merged from 2 shard(s) of 2" in capsys.readouterr().out
    assert cli.main(["merge", str(dirs[0]), "--out", str(tmp_path / "out2")]) == 2
    assert "shard(s) 2 of 2 missing" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_an_unsharded_run_alone_merges_as_one_of_one(tmp_path: Path) -> None:
    _, whole = shard_summaries(tmp_path, 2)
    rc, data = _merge(tmp_path, [_write(tmp_path / "whole", copy.deepcopy(whole))])
    assert rc == 0 and _statuses(data) == _statuses(whole)


def test_partial_words_are_shard_py_s() -> None:
    record = {"index": 2, "total": 5, "tests": ["a"], "selection_tests": 9, "cpu_cells": ["3.3.0/cpu/-"]}
    assert trainshards.partial_line(record) == shard.Shard(2, 5).partial_line
    assert "1 of the session's 9 GPU cells" in trainshards.slice_line(record)


# --- multi-ref sessions: a shard records only the refs whose cells it ran -------------------------------------------


def ran_refs_only(tmp: Path, total: int) -> tuple[list[Path], dict[str, Any]]:
    """shard_summaries, but each shard's header holds only the refs whose cells it ran, as the session fills it
    (per_ref gets a ref's header when its first cell runs; first() is then bare where refs[0] did not run)."""
    dirs = []
    for k in range(1, total + 1):
        s = _two_refs(shard.Shard(k, total))
        cells = list(s.plan())
        s.per_ref = {r: h for r, h in s.per_ref.items() if any(c.ref == r for c in cells)}
        dirs.append(_write(tmp / f"s{k}", s.summarize(_rows_for(cells), None, [])))
    s = _two_refs(None)
    return dirs, s.summarize(_rows_for(list(s.plan())), None, [])


def _recorded(d: Path) -> list[str]:
    return list(json.loads((d / "summary.json").read_text())["header"]["refs"])


def test_shards_that_ran_some_refs_each_merge_with_a_header_naming_every_ref(tmp_path: Path) -> None:
    dirs, whole = ran_refs_only(tmp_path, 8)
    assert {tuple(_recorded(d)) for d in dirs} == {("3.3.0",), ("3.6.1",)}  # every shard lacks a ref
    rc, data = _merge(tmp_path, dirs)
    assert rc == 0 and _statuses(data) == _statuses(whole)
    assert data["header"]["refs"] == whole["header"]["refs"] and list(data["header"]["refs"]) == ["3.3.0", "3.6.1"]
    for key in ("ref", "commit", "mnn_version", "runner"):  # the top level is the first ref's, as unsharded
        assert data["header"][key] == whole["header"][key]


def test_one_ref_at_two_commits_is_refused_naming_the_ref(tmp_path: Path) -> None:
    dirs, _ = ran_refs_only(tmp_path, 8)
    both = [d for d in dirs if _recorded(d) == ["3.6.1"]][:2]
    assert len(both) == 2
    _edit(both[1], lambda d: d["header"]["refs"]["3.6.1"].update(commit="0123456789"))
    said = refused(tmp_path, dirs)
    lines = [line for line in said.splitlines() if line.strip().startswith("- ")]
    assert len(lines) == 1, said  # that ref, and no other difference
    assert "3.6.1 commit" in lines[0] and "'6f5bd7c0e1' in" in lines[0] and f"'0123456789' in {both[1]}" in lines[0]


def test_shards_of_sessions_planning_other_refs_are_refused(tmp_path: Path) -> None:
    dirs, _ = ran_refs_only(tmp_path, 2)
    s = _two_refs(shard.Shard(2, 2))
    s.refs = ["3.3.0", "3.4.0"]
    s.per_ref = {"3.3.0": s.per_ref["3.3.0"], "3.4.0": {"ref": "3.4.0", "commit": "abc", "mnn_version": "3.4.0"}}
    other = _write(tmp_path / "other", s.summarize(_rows_for(list(s.plan())), None, []))
    assert "the session's plan of cells differ" in refused(tmp_path, [dirs[0], other])
