"""One verdict from the shards of an op sweep (issue 26): ``python -m mnnrepro merge DIR... [--out DIR]``.

Each shard (``ops run --shard K/N``) runs a slice of the selection and judges each of its tests as an unsharded
run would. What a shard cannot judge is what needs the whole: an expectation row is stale only if no test of the
whole selection showed what it expects, and a row whose pattern covers tests of several shards is used by any of
them. The merge takes the shards' summaries from any machines and runners, refuses a set that is not one run split
(a shard missing or given twice, another N or seed, another MNN ref or commit, another suite, other settings that
change verdicts, an interrupted shard, an input that is not an ops summary), keeps every test's status and
judgement as its shard judged it, and judges on the whole with the ops judge itself (``opjudge.stale_rows``,
``opjudge.summarize``): stale rows, unexpected passes, counts, ``all_matched``. An unsharded run given alone is
accepted as shard 1 of 1, so ``ops compare UNSHARDED MERGED`` shows whether the statuses are the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import prepare
from .contract import Device
from .errors import EXIT_MISMATCH, ConfigError
from .settings import Settings
from .workloads.ops import judge as opjudge
from .workloads.ops import report as opreport

# The header fields that make two runs different runs of MNN, or of the suite: merged only when every shard agrees.
IDENTITY = ("ref", "commit", "mnn_version")
SUITE = ("suite", "suite_commit", "suite_digest")  # the version, and the content that judged (fixtures.suite_digest)
# Settings a verdict depends on (limits, reruns, precision, the selection, the layer); the cells (variants x ICDs)
# are compared apart. jobs, runner, host and toolchain may differ: they change no rule a test is judged by.
VERDICT_SETTINGS = (
    "selection",
    "precision",
    "timeout_s",
    "timeout_rerun_factor",
    "validation_timeout_factor",
    "flake_reruns",
    "vk_validation",
)
# A shard's own verdict and what it left to the merge (`stale_not_judged`): the merged summary has its own.
RECOMPUTED = ("cells", "stale", "stale_not_judged", "all_matched", "status", "not_run", "shard", "seconds")
Say = Callable[[str], None]


@dataclass(frozen=True)
class Shard:
    """One input: its summary.json and the shard it says it is (an unsharded run: 1 of 1)."""

    path: Path
    data: dict[str, Any]
    index: int
    total: int
    seed: int | None
    tests: tuple[str, ...] | None  # the shard's slice of the selection (None: an unsharded run, all of it)
    selection_tests: int | None  # how many tests the whole selection has

    @property
    def cells(self) -> list[dict[str, Any]]:
        return list(self.data.get("cells") or [])


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def load(path: Path) -> Shard:
    """An input, a run's directory, its summary.json, or the --results-dir it was written under (its `latest` run),
    checked to be an ops session's summary."""
    file = path / "summary.json" if path.is_dir() else path
    if path.is_dir() and not file.exists() and (path / "latest" / "summary.json").exists():
        file = path / "latest" / "summary.json"  # the --results-dir a shard was given: its newest run
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"merge: cannot read {file} ({exc})", hint="give ops results directories") from exc
    if not isinstance(data, dict) or data.get("session") != "ops" or not isinstance(data.get("cells"), list):
        raise ConfigError(f"merge: {file} is not the summary of an ops session", hint="merge takes `ops run` results")
    shard = data.get("shard")
    if shard is None:  # an unsharded run: the whole selection, shard 1 of 1
        return Shard(file, data, 1, 1, None, None, None)
    index, total = _int((shard or {}).get("index")), _int((shard or {}).get("total"))
    tests = shard.get("tests") if isinstance(shard, dict) else None
    if index is None or total is None or not 1 <= index <= total or not isinstance(tests, list):
        raise ConfigError(f"merge: {file}: its shard record {shard!r} is not `index` K of `total` N with its tests")
    return Shard(file, data, index, total, shard.get("seed"), tuple(tests), _int(shard.get("selection_tests")))


def _differ(shards: list[Shard], what: str, value: Callable[[Shard], Any]) -> list[str]:
    """A line naming each input and its value, when the inputs do not all agree on one."""
    values = [value(s) for s in shards]
    if all(v == values[0] for v in values):
        return []
    return [f"{what} differ: " + "; ".join(f"{s.path}: {v!r}" for s, v in zip(shards, values, strict=True))]


def _field(key: str) -> Callable[[Shard], Any]:
    return lambda s: s.data.get(key)


def _set_problems(shards: list[Shard]) -> list[str]:
    """A shard given twice (both named), shards missing (their K named), different N or seed."""
    out = _differ(shards, "shard counts (N)", lambda s: s.total) + _differ(shards, "shard seeds", lambda s: s.seed)
    if out:
        return out
    by_index: dict[int, list[Shard]] = {}
    for s in shards:
        by_index.setdefault(s.index, []).append(s)
    for k, given in sorted(by_index.items()):
        if len(given) > 1:
            out.append(
                f"shard {k}/{shards[0].total} given {len(given)} times: " + ", ".join(str(s.path) for s in given)
            )
    if missing := [k for k in range(1, shards[0].total + 1) if k not in by_index]:
        out.append(f"shard(s) {', '.join(map(str, missing))} of {shards[0].total} missing")
    return out


def _partition_problems(shards: list[Shard]) -> list[str]:
    """The shards' slices must not overlap and must make up the whole selection they say it has."""
    owner: dict[str, Shard] = {}
    out = []
    for s in shards:
        for t in s.tests or ():
            if t in owner:
                out.append(f"test {t} is in the slice of both {owner[t].path} and {s.path}")
            owner.setdefault(t, s)
    wholes = {s.selection_tests for s in shards if s.tests is not None}
    if len(wholes) > 1:
        out.append(
            "shards disagree on the size of the whole selection: " + ", ".join(map(str, sorted(wholes, key=str)))
        )
    elif wholes and (whole := wholes.pop()) is not None and whole != len(owner):
        out.append(f"the shards' slices hold {len(owner)} tests, the whole selection {whole}")
    return out


def _run_problems(shards: list[Shard]) -> list[str]:
    """Another ref, commit, suite or verdict setting; other cells; a shard that was interrupted; a validated run."""
    out = []
    for key in (*IDENTITY, *SUITE, *VERDICT_SETTINGS):
        out += _differ(shards, key, _field(key))
    out += _differ(shards, "cells (variant/icd)", lambda s: sorted((c.get("variant"), c.get("icd")) for c in s.cells))
    for s in shards:
        stopped = [str(c.get("cell")) for c in s.cells if c.get("interrupted")] + list(s.data.get("not_run") or [])
        if stopped or s.data.get("status") == "INTERRUPTED":
            out.append(f"{s.path} was interrupted (cells {', '.join(stopped) or '?'}): run the shard again")
        if s.data.get("vk_validation", "off") != "off":
            # The VUID -> tests tables and their stale rows are per cell and would need merging too: not done yet.
            out.append(f"{s.path} ran under the validation layer: merging validated shards is not supported yet")
    return out


def problems(shards: list[Shard]) -> list[str]:
    """Every reason the inputs are not one run split into shards (empty: they can be merged)."""
    if not shards:
        return ["no inputs"]
    return _set_problems(shards) + _partition_problems(shards) + _run_problems(shards)


def _device(c: dict[str, Any]) -> Device:
    facts = c.get("device_facts") or {}
    return Device(str(facts.get("name", "")), str(facts.get("vendor", "")), str(facts.get("driver", "")))


def _new_cell(c: dict[str, Any]) -> dict[str, Any]:
    named = {k: c.get(k) for k in ("cell", "ref", "variant", "icd")}
    return {**named, "seconds": 0.0, "device": "", "device_facts": Device().as_dict(), "tests": []}


def _merge_cells(shards: list[Shard]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per cell (ref/variant/icd) the union of the shards' tests, each as its shard judged it; the problems: one
    test in two shards (a NOT-RUN of the build, not built in every shard alike, is kept once), a cell whose shards
    ran on different devices (rows name devices: one cell, one device)."""
    merged: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[str, str], tuple[Shard, dict[str, Any]]] = {}
    out: list[str] = []
    for s in shards:
        for c in s.cells:
            cell = merged.setdefault(c["cell"], _new_cell(c))
            cell["seconds"] = round(cell["seconds"] + float(c.get("seconds") or 0), 1)
            known, mine = _device(cell), _device(c)
            if known.known and mine.known and known != mine:
                out.append(f"cell {c['cell']} ran on {known.as_dict()} and on {mine.as_dict()} (in {s.path})")
            elif mine.known and not known.known:
                cell["device"], cell["device_facts"] = c.get("device", ""), mine.as_dict()
            cell["device"] = cell["device"] or c.get("device", "")
            for t in c.get("tests", []):
                first = seen.setdefault((c["cell"], t["test"]), (s, t))
                if first[1] is t:
                    cell["tests"].append(t)
                elif not (t["status"] == first[1]["status"] == opjudge.NOT_RUN and t == first[1]):
                    out.append(f"{c['cell']} {t['test']}: a result in both {first[0].path} and {s.path}")
    for cell in merged.values():
        cell["tests"].sort(key=lambda t: t["test"])
    return list(merged.values()), out


def merge(shards: list[Shard], expectations: opjudge.Expectations) -> dict[str, Any]:
    """The merged summary.json dictionary, or ConfigError naming every problem of the set (nothing merged)."""
    found = problems(shards)
    cells, overlaps = _merge_cells(shards) if not found else ([], [])
    if found or overlaps:
        raise ConfigError(
            "merge refused:\n  - " + "\n  - ".join(found + overlaps),
            hint="merge every shard K/N of one `ops run --shard` (same ref, suite, settings and seed), each once",
        )
    first = sorted(shards, key=lambda s: s.index)[0].data
    header = {k: v for k, v in first.items() if k not in RECOMPUTED}
    for key in ("runner", "jobs", "host", "gdb_absent"):  # may differ per machine: every value named
        values = list(dict.fromkeys(str(s.data.get(key, "")) for s in shards if s.data.get(key) not in (None, "")))
        header[key] = values[0] if len(values) == 1 else ", ".join(values)
    header["merged"] = {
        "total": shards[0].total,
        "seed": shards[0].seed,
        "shards": [
            {"index": s.index, "from": str(s.path), "host": s.data.get("host"), "runner": s.data.get("runner"),
             "seconds": s.data.get("seconds"), "status": s.data.get("status")}
            for s in sorted(shards, key=lambda s: s.index)
        ],
    }  # fmt: skip
    judged: list[tuple[opjudge.CellKey, list[opjudge.TestResult]]] = []
    devices: dict[opjudge.CellKey, Device] = {}
    for c in cells:
        results = [opjudge.TestResult(**t) for t in c["tests"]]
        c.update(opjudge.summarize(results))
        cell_key = (str(c["ref"]), first.get("mnn_version"), str(c["variant"]), str(c["icd"]))
        judged.append((cell_key, results))
        devices[cell_key] = _device(c)
    # Judged on the whole (issue 26): a row is stale only if no test of the whole selection used it.
    stale = opjudge.stale_rows(expectations, judged, tuple(first.get("selection") or ()), devices)
    data = {**header, "cells": cells, "stale": stale}
    data["unexpected_passes"] = [
        f"{c['cell']} {t['test']}" for c in cells for t in c["tests"] if t["status"] == "UNEXPECTED-PASS"
    ]
    data["seconds"] = {
        "shards_sum": round(sum(float((s.data.get("seconds") or {}).get("total") or 0) for s in shards), 1),
        "longest_shard": max(float((s.data.get("seconds") or {}).get("total") or 0) for s in shards),
    }
    data["all_matched"] = bool(cells) and all(c["mismatched"] == 0 for c in cells)
    data["status"] = "MATCHED" if data["all_matched"] else "MISMATCHED"
    return data


def merged_line(data: dict[str, Any]) -> str:
    """What a merged summary was made of: every shard, where it ran, its status."""
    m = data["merged"]
    shards = "; ".join(f"{s['index']}/{m['total']} from {s['from']} ({s['status']})" for s in m["shards"])
    return f"Merged from {len(m['shards'])} shard(s) of {m['total']} (seed {m['seed']}): {shards}."


def run(
    paths: list[Path],
    settings: Settings,
    *,
    out: Path | None = None,
    expectations: opjudge.Expectations | None = None,
    say: Say = print,
) -> int:
    """`mnnrepro merge`: read and check every input, merge, then (only then) write the three reports."""
    shards = [load(p) for p in paths]
    if out is not None and (out / "summary.json").exists():
        raise ConfigError(f"merge: {out} already holds a summary.json", hint="name a new --out directory")
    data = merge(shards, expectations or opjudge.load_expectations())
    results = out if out is not None else prepare.results_dir(settings, "merge")
    written = opreport.write_all(results, data)
    # The Markdown says it is a merge, of which shards, before anything else (report.py renders any ops summary).
    title, _, rest = written[2].read_text().partition("\n")
    written[2].write_text(f"{title}\n\n{merged_line(data)}\n{rest}")
    say(merged_line(data))
    say(opreport.table(data))
    say("\nreports: " + ", ".join(str(p) for p in written))
    if data["all_matched"]:
        say("merge: every test that ran matched its expectation")
        return 0
    say(f"merge: {sum(c['mismatched'] for c in data['cells'])} test result(s) did not match their expectation")
    return EXIT_MISMATCH
