"""`mnnrepro merge` (issue 26): shards of an op sweep merged into one verdict, judged on the whole; every set that
is not one run split refused, naming the inputs, with nothing written. The shards are built from a real ops
summary (3.6.1 vulkan-buffer on an H100, tests/unit/data/ops-3.6.1-vulkan-buffer-summary.json), split into 4 by
test name."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import cli, merge
from mnnrepro.errors import ConfigError
from mnnrepro.settings import Settings, load
from mnnrepro.workloads.ops import judge as opjudge

REAL = Path(__file__).parent / "data" / "ops-3.6.1-vulkan-buffer-summary.json"
CELL = "3.6.1/vulkan-buffer/host"
SEED = 1234


def whole() -> dict[str, Any]:
    """The real summary as a finished unsharded run: the interrupted cell's unfinished tests left out."""
    data: dict[str, Any] = json.loads(REAL.read_text())
    for c in data["cells"]:
        c.pop("interrupted", None)
        c["tests"] = [t for t in c["tests"] if t.get("not_run") != opjudge.INTERRUPTED]
        c.update(opjudge.summarize([opjudge.TestResult(**t) for t in c["tests"]]))
    data.pop("not_run", None)
    data["all_matched"] = all(c["mismatched"] == 0 for c in data["cells"])
    data["status"] = "MATCHED" if data["all_matched"] else "MISMATCHED"
    return data


def split(data: dict[str, Any], n: int = 4) -> list[dict[str, Any]]:
    """Shard k of n: every n-th test name (sorted) from k - 1, each cell holding that slice only."""
    names = sorted({t["test"] for c in data["cells"] for t in c["tests"]})
    out = []
    for k in range(1, n + 1):
        mine = names[k - 1 :: n]
        shard = copy.deepcopy(data)
        shard["shard"] = {"index": k, "total": n, "seed": SEED, "selection_tests": len(names), "tests": mine}
        for c in shard["cells"]:
            c["tests"] = [t for t in c["tests"] if t["test"] in mine]
            c.update(opjudge.summarize([opjudge.TestResult(**t) for t in c["tests"]]))
        shard["stale"] = []
        out.append(shard)
    return out


def write(tmp: Path, shards: list[dict[str, Any]], names: list[str] | None = None) -> list[Path]:
    dirs = []
    for i, data in enumerate(shards):
        d = tmp / (names[i] if names else f"shard{i + 1}")
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(data))
        dirs.append(d)
    return dirs


def refused(tmp: Path, shards: list[dict[str, Any]], names: list[str] | None = None) -> str:
    """The refusal's message; nothing written."""
    out = tmp / "merged"
    with pytest.raises(ConfigError) as exc:
        merge.run(write(tmp, shards, names), merge_settings(tmp), out=out, say=lambda _: None)
    assert not out.exists()
    return exc.value.message


def merge_settings(tmp: Path) -> Settings:
    return load({"results_dir": str(tmp / "results")})


def merged(tmp: Path, shards: list[dict[str, Any]], exp: opjudge.Expectations | None = None) -> dict[str, Any]:
    out = tmp / "merged"
    rc = merge.run(write(tmp / "in", shards), merge_settings(tmp), out=out, expectations=exp, say=lambda _: None)
    data: dict[str, Any] = json.loads((out / "summary.json").read_text())
    assert rc == (0 if data["all_matched"] else 1)
    return data


def statuses(data: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str, bool | None]]:
    return {
        (c["cell"], t["test"]): (t["status"], t["expected"], t["matched"]) for c in data["cells"] for t in c["tests"]
    }


def test_four_shards_merge_to_the_unsharded_statuses(tmp_path: Path) -> None:
    data = whole()
    one = merged(tmp_path / "one", [data])
    four = merged(tmp_path / "four", split(data))
    assert len(statuses(one)) == 98 and statuses(four) == statuses(one)
    assert [c["counts"] for c in four["cells"]] == [c["counts"] for c in data["cells"]]
    assert four["all_matched"] is one["all_matched"] is False and four["status"] == "MISMATCHED"
    assert four["stale"] == one["stale"] and "shard" not in four and four["merged"]["total"] == 4
    assert opjudge.compare(one, four) == []  # what `ops compare` reads
    assert cli.main(["ops", "compare", str(tmp_path / "one" / "merged"), str(tmp_path / "four" / "merged")]) == 0
    md = (tmp_path / "four" / "merged" / "summary.md").read_text()
    assert "Merged from 4 shard(s) of 4" in md and (tmp_path / "four" / "merged" / "junit.xml").is_file()


def test_the_cli_merges_into_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = write(tmp_path, split(whole()))
    rc = cli.main(["merge", *map(str, dirs), "--out", str(tmp_path / "out")])
    assert rc == 1  # the real run has 4 mismatched results: the merged verdict keeps them
    assert "4 test result(s) did not match" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["merged"]["total"] == 4


def test_stale_rows_and_unexpected_passes_are_judged_on_the_whole(tmp_path: Path) -> None:
    shards = split(whole())
    cell = shards[0]["cells"][0]
    t1 = next(t for t in cell["tests"] if t["status"] == "FAIL" and t["matched"])
    t3 = next(t for t in shards[2]["cells"][0]["tests"] if t["status"] == "PASS")
    t2 = next(t for t in shards[1]["cells"][0]["tests"] if t["status"] == "PASS")
    # One pattern row, used by shard 1's failure; shard 3's test under it passes now (an unexpected pass).
    t1.update(row=9001)
    t3.update(row=9001, status="UNEXPECTED-PASS", expected="FAIL", matched=False)
    used = opjudge.Expect(("3.6.1",), "vulkan-buffer", "*", "*", "FAIL", "seen", line=9001)
    stale = opjudge.Expect(("3.6.1",), "vulkan-buffer", "*", t2["test"], "FAIL", "seen once", line=9002)
    exp = opjudge.Expectations(rows=(used, stale))
    # From shard 3 alone the used row reads stale: a shard cannot judge it.
    key: opjudge.CellKey = ("3.6.1", "3.6.1", "vulkan-buffer", "host")
    alone = [(key, [opjudge.TestResult(**t) for t in shards[2]["cells"][0]["tests"]])]
    assert 9001 in {r["row"] for r in opjudge.stale_rows(exp, alone, tuple(shards[2]["selection"]))}
    data = merged(tmp_path, shards, exp)
    assert [r["row"] for r in data["stale"]] == [9002]
    assert data["unexpected_passes"] == [f"{CELL} {t3['test']}"] and data["all_matched"] is False


def test_matched_shards_merge_to_a_matched_verdict(tmp_path: Path) -> None:
    data = whole()
    data["cells"][0]["tests"] = [t for t in data["cells"][0]["tests"] if t["matched"] is not False]
    shards = split(data)
    for s in shards:
        s["shard"]["selection_tests"] = len({t["test"] for t in data["cells"][0]["tests"]})
    out = merged(tmp_path, shards, opjudge.Expectations(rows=()))
    assert out["all_matched"] is True and out["status"] == "MATCHED"


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    shards = split(whole())
    assert "shard(s) 3 of 4 missing" in refused(tmp_path, shards[:2] + shards[3:])


def test_a_shard_given_twice_names_both_dirs(tmp_path: Path) -> None:
    shards = split(whole())
    msg = refused(tmp_path, [*shards, shards[1]], ["a", "b", "c", "d", "again"])
    assert "shard 2/4 given 2 times" in msg and "/b/summary.json" in msg and "/again/summary.json" in msg


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("total", 5, "shard counts (N) differ"),
        ("seed", 99, "shard seeds differ"),
    ],
)
def test_other_n_or_seed_is_refused(tmp_path: Path, key: str, value: int, said: str) -> None:
    shards = split(whole())
    shards[2]["shard"][key] = value
    assert said in refused(tmp_path, shards)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ref", "3.3.0"),
        ("commit", "0" * 40),
        ("suite", "0.2.0"),
        ("suite_commit", "abc123"),
        ("suite_digest", "0123456789abcdef"),
        ("precision", "low"),
        ("timeout_s", 60.0),
        ("selection", ["op/"]),
        ("flake_reruns", 1),
    ],
)
def test_mixed_runs_and_verdict_settings_are_refused(tmp_path: Path, key: str, value: Any) -> None:
    shards = split(whole())
    shards[1][key] = value
    msg = refused(tmp_path, shards)
    assert f"{key} differ" in msg and "shard2/summary.json" in msg and "shard1/summary.json" in msg


def test_other_cells_are_refused(tmp_path: Path) -> None:
    shards = split(whole())
    shards[3]["cells"][0]["icd"] = "lavapipe"
    assert "cells (variant/icd) differ" in refused(tmp_path, shards)


def test_an_interrupted_shard_is_refused(tmp_path: Path) -> None:
    shards = split(whole())
    shards[2]["cells"][0]["interrupted"] = True
    assert f"shard3/summary.json was interrupted (cells {CELL})" in refused(tmp_path, shards)


def test_a_validated_run_is_refused(tmp_path: Path) -> None:
    shards = [whole()]
    shards[0]["vk_validation"] = "on"
    assert "validation layer" in refused(tmp_path, shards)


def test_overlapping_slices_and_a_short_whole_are_refused(tmp_path: Path) -> None:
    shards = split(whole())
    moved = shards[0]["shard"]["tests"][0]
    shards[1]["shard"]["tests"].append(moved)
    msg = refused(tmp_path, shards)
    assert f"test {moved} is in the slice of both" in msg
    shards = split(whole())
    shards[0]["shard"]["tests"].pop()
    shards[0]["cells"][0]["tests"].pop()
    assert "the shards' slices hold 97 tests, the whole selection 98" in refused(tmp_path / "b", shards)


def test_one_result_in_two_shards_is_refused(tmp_path: Path) -> None:
    shards = split(whole())
    shards[1]["cells"][0]["tests"].append(shards[0]["cells"][0]["tests"][0])
    assert "a result in both" in refused(tmp_path, shards)


def test_one_cell_on_two_devices_is_refused(tmp_path: Path) -> None:
    shards = split(whole())
    shards[3]["cells"][0]["device_facts"] = {"name": "NVIDIA H200", "vendor": "NVIDIA", "driver": "580.159.04"}
    assert f"cell {CELL} ran on" in refused(tmp_path, shards)


def test_what_is_not_an_ops_summary_is_refused(tmp_path: Path) -> None:
    other = whole()
    other["session"] = "mnist"
    assert "is not the summary of an ops session" in refused(tmp_path, [other])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        merge.load(tmp_path / "empty")
    bad = split(whole())[0]
    bad["shard"] = {"index": 5, "total": 4, "tests": []}
    assert "is not `index` K of `total` N" in refused(tmp_path / "c", [bad])


def test_a_results_dir_is_read_through_its_latest_run(tmp_path: Path) -> None:
    """`ops run --results-dir D` writes D/<run>/ and D/latest: D itself is an input, as users name it."""
    run = tmp_path / "D" / "20261206T000000Z-ops-1"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"session": "ops", "cells": [], "ref": "3.3.0"}))
    (tmp_path / "D" / "latest").symlink_to(run.name)
    assert merge.load(tmp_path / "D").path.resolve() == (run / "summary.json").resolve()


def test_the_suite_digest_changes_with_the_code_or_the_rows(tmp_path: Path) -> None:
    """Shards judged by other suite code or rows carry another digest (the ops header's suite_digest)."""
    from mnnrepro import fixtures

    pkg, fx = tmp_path / "pkg", tmp_path / "fixtures"
    (pkg / "sub").mkdir(parents=True)
    (fx / "ops").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (fx / "ops" / "expectations.toml").write_text("")
    first = fixtures.suite_digest(pkg, fx)
    assert first == fixtures.suite_digest(pkg, fx) and len(first) == 16
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    second = fixtures.suite_digest(pkg, fx)
    assert second != first
    (fx / "ops" / "expectations.toml").write_text("[[expect]]\n")
    assert fixtures.suite_digest(pkg, fx) != second
    assert fixtures.suite_digest() == fixtures.suite_digest()  # the real package: stable within a checkout
