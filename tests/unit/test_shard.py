"""--shard K/N for `ops run` (issue 26): a deterministic stride over a fixed-seed shuffle, and a shard's reports that
call themselves partial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from mnnrepro import cli, shard
from mnnrepro.errors import ConfigError
from mnnrepro.settings import Settings, load
from mnnrepro.workloads.ops import judge as opjudge
from mnnrepro.workloads.ops import report as opreport
from mnnrepro.workloads.ops import session as opsession

NAMES = [f"op/{family}/{i:02d}" for family in ("add", "conv", "matmul", "pool", "softmax") for i in range(20)]


def test_the_same_selection_splits_the_same_way_in_another_process() -> None:
    # hash() is salted per process (PYTHONHASHSEED): a split that used it would differ here.
    code = "import json, sys; from mnnrepro import shard; print(json.dumps(shard.split(json.load(sys.stdin), 4)))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(NAMES[::-1]), env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == shard.split(NAMES, 4)


@pytest.mark.parametrize("total", [1, 2, 3, 4, 7, 100, 150])
def test_the_shards_cover_the_selection_once(total: int) -> None:
    parts = shard.split(NAMES, total)
    assert len(parts) == total
    flat = [t for part in parts for t in part]
    assert sorted(flat) == sorted(NAMES) and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # a stride: sizes differ by one at most


def test_neighbours_in_the_sorted_list_spread_over_the_shards() -> None:
    # The ten slow tests of one family sit together in the sorted selection (op/conv/*): a plain stride over the
    # sorted list would still spread them, a contiguous split would put them all in one shard; the shuffle must
    # do no worse than leave most shards some of them.
    slow = [t for t in NAMES if t.startswith("op/conv/")][:10]
    per_shard = [len(set(part) & set(slow)) for part in shard.split(NAMES, 4)]
    assert sum(per_shard) == 10
    assert max(per_shard) <= 5 and sum(n > 0 for n in per_shard) >= 3, per_shard
    # And the order is a shuffle, not the sorted list itself.
    assert shard.shuffled(NAMES) != sorted(NAMES)


def test_the_seed_is_a_constant_of_the_module() -> None:
    assert shard.SEED == int.from_bytes(__import__("hashlib").sha256(b"mnnrepro shard v1").digest()[:8], "big")


@pytest.mark.parametrize(("text", "index", "total"), [("1/4", 1, 4), (" 4 / 4 ", 4, 4), ("1/1", 1, 1)])
def test_k_of_n(text: str, index: int, total: int) -> None:
    assert shard.parse(text, {}) == shard.Shard(index, total)


def test_no_shard() -> None:
    assert shard.parse("", {"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "2"}) is None


@pytest.mark.parametrize(
    "text", ["0/4", "5/4", "1/0", "0/0", "a/b", "1/4/2", "-1/4", "1.5/4", "4", "/4", "\u00b2/4", "autox"]
)
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="shard"):
        shard.parse(text, {})


def test_auto_reads_gitlabs_node_variables() -> None:
    assert shard.parse("auto", {"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "4"}) == shard.Shard(3, 4)


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({}, "CI_NODE_INDEX and CI_NODE_TOTAL not set"),
        ({"CI_NODE_INDEX": "1"}, "CI_NODE_TOTAL not set"),
        ({"CI_NODE_INDEX": "x", "CI_NODE_TOTAL": "4"}, "not integers"),
        ({"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "4"}, "1 <= K <= N"),
        ({"CI_NODE_INDEX": "5", "CI_NODE_TOTAL": "4"}, "1 <= K <= N"),
    ],
)
def test_auto_refuses_missing_or_malformed_variables(environ: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        shard.parse("auto", environ)


def test_the_node_variables_are_read_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_NODE_INDEX", "2")
    monkeypatch.setenv("CI_NODE_TOTAL", "4")
    assert shard.parse("") is None
    assert opsession.shard_of(Settings(icds=("lavapipe",))) is None
    assert shard.parse("auto") == shard.Shard(2, 4)


def test_the_setting_flows_from_the_environment_and_the_command_line(tmp_path: Path) -> None:
    none = tmp_path / "pyproject.toml"
    assert load({}, environ={"MNNREPRO_SHARD": "2/4"}, pyproject=none).shard == "2/4"
    args = cli.parser().parse_args(["ops", "run", "--shard", "3/4"])
    assert load({"shard": args.shard}, environ={}, pyproject=none).shard == "3/4"


def test_the_ops_session_refuses_a_bad_shard_before_anything_is_built() -> None:
    with pytest.raises(ConfigError, match="1 <= K <= N"):
        opsession.check(Settings(icds=("lavapipe",), shard="5/4"))
    with pytest.raises(ConfigError, match="vk-validation"):
        opsession.check(Settings(icds=("lavapipe",), shard="1/4", vk_validation="on"))


def test_the_header_has_the_shape_the_merge_reads() -> None:
    head = shard.Shard(2, 4).header(NAMES[::-1])
    assert head == {
        "index": 2,
        "total": 4,
        "seed": shard.SEED,
        "selection_tests": len(NAMES),
        "tests": shard.split(NAMES, 4)[1],
    }


def _summary(with_shard: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """_summary over one finished cell, with a stale row found: kept whole, never from a shard."""
    row = {"row": 7, "refs": ["3.3.0"], "variant": "*", "icd": "*", "test": "op/add/01", "status": "FAIL", "why": "x"}
    monkeypatch.setattr(opjudge, "stale_rows", lambda *a, **k: [row])
    header: dict[str, Any] = {"ref": "3.3.0", "mnn_version": "3.3.0"}
    if with_shard:
        header["shard"] = shard.Shard(1, 4).header(NAMES)
    cell = {"cell": "3.3.0/cpu/-", "variant": "cpu", "icd": "-", "seconds": 1.0, "tests": []}
    return opsession._summary(header, [cell], [], opjudge.load_expectations(), ("op/",), {}, None)


def test_a_shard_calls_no_row_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _summary(False, monkeypatch)["stale"] and "stale_not_judged" not in _summary(False, monkeypatch)
    sliced = _summary(True, monkeypatch)
    assert sliced["stale"] == [] and "shard 1/4" in sliced["stale_not_judged"]


def test_every_report_of_a_shard_says_partial(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = _summary(True, monkeypatch)
    data.update(commit="5047919a1ae5", selection=["op/"], precision="high", jobs=2, timeout_s=60.0, registered=100)
    words = "shard 1/4: partial, not a whole verdict"
    assert opreport.table(data).splitlines()[0].startswith(words)
    assert words in opreport.markdown(data).splitlines()[0]
    opreport.write_all(tmp_path, data)
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    assert "shard 1/4" in suites.get("name", "") and all("shard 1/4" in s.get("name", "") for s in suites)
    assert json.loads((tmp_path / "summary.json").read_text())["shard"]["index"] == 1
    whole = _summary(False, monkeypatch)
    whole.update(commit="5047919a1ae5", selection=["op/"], precision="high", jobs=2, timeout_s=60.0, registered=100)
    assert "shard" not in opreport.table(whole) + opreport.markdown(whole)
