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

The shards of a training session (``run SESSION --shard K/N``) merge the same way and are refused for the same
reasons (plus: another plan of cells, a CPU baseline judged differently by two shards); an ops shard and a training
shard never merge. Each cell keeps its shard's verdict (a CPU baseline, run by every shard that needs it, is kept
once), and rows are judged stale on the whole (``workloads.train.shards.judge_whole``). The training reports
(report.py) come out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import prepare, report, variants
from .contract import Device
from .errors import EXIT_MISMATCH, ConfigError
from .settings import Settings
from .workloads.ops import judge as opjudge
from .workloads.ops import report as opreport
from .workloads.train import shards as trainshards
from .workloads.train.session import SESSIONS as TRAINING_SESSIONS

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
OPS, TRAINING = "ops", "training"  # the two kinds of input; they never merge with each other
# What a training run's header holds that changes its verdicts (the refs' commits are compared apart).
TRAINING_SETTINGS = ("session", "workload", "workloads", "checks", "verdict_settings")


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
    kind: str = OPS  # OPS, or TRAINING: a training session's slice (its tests: the GPU cells' ids)

    @property
    def cells(self) -> list[dict[str, Any]]:
        return list(self.data.get("cells") or [])

    @property
    def head(self) -> dict[str, Any]:
        """The run's header: an ops summary's own top level, a training summary's `header`."""
        return self.data if self.kind == OPS else dict(self.data.get("header") or {})


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def kind_of(data: Any) -> str | None:
    """OPS for an ops session's summary, TRAINING for a training session's (`run SESSION`), else None."""
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        return None
    if data.get("session") == "ops":
        return OPS
    header = data.get("header")
    return TRAINING if isinstance(header, dict) and header.get("session") in TRAINING_SESSIONS else None


def load(path: Path) -> Shard:
    """An input, a run's directory, its summary.json, or the --results-dir it was written under (its `latest` run),
    checked to be an ops or a training session's summary."""
    file = path / "summary.json" if path.is_dir() else path
    if path.is_dir() and not file.exists() and (path / "latest" / "summary.json").exists():
        file = path / "latest" / "summary.json"  # the --results-dir a shard was given: its newest run
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"merge: cannot read {file} ({exc})", hint="give ops or training results directories"
        ) from exc
    kind = kind_of(data)
    if kind is None:
        raise ConfigError(
            f"merge: {file} is not the summary of an ops session nor of a training session",
            hint="merge takes `ops run` or `run SESSION` results",
        )
    shard = data.get("shard")
    if shard is None:  # an unsharded run: the whole selection, shard 1 of 1
        return Shard(file, data, 1, 1, None, None, None, kind)
    index, total = _int((shard or {}).get("index")), _int((shard or {}).get("total"))
    tests = shard.get("tests") if isinstance(shard, dict) else None
    if index is None or total is None or not 1 <= index <= total or not isinstance(tests, list):
        raise ConfigError(f"merge: {file}: its shard record {shard!r} is not `index` K of `total` N with its tests")
    return Shard(file, data, index, total, shard.get("seed"), tuple(tests), _int(shard.get("selection_tests")), kind)


def _differ(shards: list[Shard], what: str, value: Callable[[Shard], Any]) -> list[str]:
    """A line naming each input and its value, when the inputs do not all agree on one."""
    values = [value(s) for s in shards]
    if all(v == values[0] for v in values):
        return []
    return [f"{what} differ: " + "; ".join(f"{s.path}: {v!r}" for s, v in zip(shards, values, strict=True))]


def _field(key: str) -> Callable[[Shard], Any]:
    return lambda s: s.head.get(key)


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
    if len({s.kind for s in shards}) > 1:  # one verdict of MNN's own tests and of training would mean nothing
        return ["ops and training shards mixed: " + "; ".join(f"{s.path}: {s.kind}" for s in shards)]
    run = _run_problems if shards[0].kind == OPS else _training_problems
    return _set_problems(shards) + _partition_problems(shards) + run(shards)


def _training_problems(shards: list[Shard]) -> list[str]:
    """Another ref or commit (of any ref of the session), suite, verdict setting or plan of cells; an interrupted
    shard."""
    out = _ref_problems(shards)
    # No IDENTITY: a shard's top-level ref is the session's first ref, bare where the shard ran none of its cells.
    for key in (*SUITE, *TRAINING_SETTINGS):
        out += _differ(shards, key, _field(key))
    out += _differ(shards, "the session's plan of cells", lambda s: (s.data.get("shard") or {}).get("plan"))
    for s in shards:
        stopped = [str(c.get("cell")) for c in s.cells if c.get("verdict") == report.INTERRUPTED]
        if stopped or s.data.get("status") == report.INTERRUPTED:
            out.append(f"{s.path} was interrupted (cells {', '.join(stopped) or '?'}): run the shard again")
    return out


def _ref_problems(shards: list[Shard]) -> list[str]:
    """A ref two shards built at different commits (or MNN versions). A shard records only the refs whose cells it
    ran (its top level copies the first ref's), so each is compared over the shards that recorded it; that every
    shard planned the same refs is the plan's comparison."""
    seen: dict[tuple[str, str], dict[str, list[str]]] = {}
    for s in shards:
        for ref, h in [*(s.head.get("refs") or {}).items(), (s.head.get("ref"), s.head)]:
            for key in ("commit", "mnn_version"):
                if ref and (value := (h or {}).get(key)):
                    paths = seen.setdefault((str(ref), key), {}).setdefault(str(value), [])
                    paths += [] if str(s.path) in paths else [str(s.path)]
    return [
        f"refs (commits) differ: {ref} {key} " + "; ".join(f"{v!r} in {', '.join(p)}" for v, p in values.items())
        for (ref, key), values in seen.items()
        if len(values) > 1
    ]


def _training_cells(shards: list[Shard]) -> tuple[list[dict[str, Any]], list[str]]:
    """The whole plan's cells, each as its shard judged it, in plan order; the problems: a GPU cell in two shards,
    a CPU baseline two shards judged differently (their GPU cells were compared with different CPU runs), a cell
    of the plan in no shard."""
    first_data = sorted(shards, key=lambda s: s.index)[0].data
    plan = (first_data.get("shard") or {}).get("plan") or [c["cell"] for c in first_data["cells"]]
    found: dict[str, tuple[Shard, dict[str, Any]]] = {}
    out: list[str] = []
    for s in sorted(shards, key=lambda s: s.index):
        for c in s.cells:
            first = found.setdefault(str(c["cell"]), (s, c))
            if first[1] is c:
                continue
            if c.get("variant") != variants.BASELINE:
                out.append(f"cell {c['cell']}: a result in both {first[0].path} and {s.path}")
            elif (c.get("verdict"), c.get("matched")) != (first[1].get("verdict"), first[1].get("matched")):
                out.append(
                    f"CPU baseline {c['cell']}: {first[1].get('verdict')} in {first[0].path}, {c.get('verdict')} in "
                    f"{s.path} (the shards' GPU cells were compared with different CPU runs): run them again"
                )
    if missing := [cid for cid in plan if cid not in found]:
        out.append(f"cell(s) of the session's plan in no shard: {', '.join(missing)}")
    if extra := [cid for cid in found if cid not in plan]:
        out.append(f"cell(s) in no shard's plan: {', '.join(extra)}")
    return [found[cid][1] for cid in plan if cid in found], out


def _refuse(lines: list[str], what: str) -> None:
    if lines:
        raise ConfigError(
            "merge refused:\n  - " + "\n  - ".join(lines),
            hint=f"merge every shard K/N of one `{what} --shard` (same ref, suite, settings and seed), each once",
        )


def _merged_record(shards: list[Shard]) -> dict[str, Any]:
    """What a merged summary was made of: N, the seed, and per shard where it came from and how it ended."""
    return {
        "total": shards[0].total,
        "seed": shards[0].seed,
        "shards": [
            {"index": s.index, "from": str(s.path), "host": s.head.get("host"), "runner": s.head.get("runner"),
             "seconds": s.head.get("seconds"), "status": s.data.get("status")}
            for s in sorted(shards, key=lambda s: s.index)
        ],
    }  # fmt: skip


def merge_training(shards: list[Shard]) -> dict[str, Any]:
    """The merged training summary.json dictionary (report.py's shape), or ConfigError naming every problem."""
    found = problems(shards)
    cells, more = _training_cells(shards) if not found else ([], [])
    _refuse(found + more, "run SESSION")
    header = {k: v for k, v in sorted(shards, key=lambda s: s.index)[0].head.items() if k != "seconds"}
    # Each shard records only the refs it ran: the union, in plan order, and the first's at the top (as unsharded).
    refs = [s.head.get("refs") or {} for s in sorted(shards, key=lambda s: s.index)]
    order = dict.fromkeys([*(str(c.get("ref")) for c in cells), *(r for h in refs for r in h)])
    header["refs"] = {r: next(h[r] for h in refs if r in h) for r in order if any(r in h for h in refs)}
    if cells:
        header.update(header["refs"].get(str(cells[0].get("ref")), {}))
    for key in ("host", "python"):  # may differ per machine: every value named
        header[key] = ", ".join(dict.fromkeys(str(s.head.get(key)) for s in shards if s.head.get(key)))
    totals = [float((s.head.get("seconds") or {}).get("until_reports") or 0) for s in shards]
    header["seconds"] = {"shards_sum": round(sum(totals), 2), "longest_shard": max(totals)}
    data: dict[str, Any] = {"format": report.SUMMARY_FORMAT, "status": "complete", "header": header}
    data["merged"] = _merged_record(shards)
    data["cells"] = cells
    data.update(trainshards.judge_whole(cells))  # on the whole: every cell a row judged
    data["all_matched"] = bool(cells) and all(bool(c.get("matched")) for c in cells)
    return data


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
    _refuse(found + overlaps, "ops run")
    first = sorted(shards, key=lambda s: s.index)[0].data
    header = {k: v for k, v in first.items() if k not in RECOMPUTED}
    for key in ("runner", "jobs", "host", "gdb_absent"):  # may differ per machine: every value named
        values = list(dict.fromkeys(str(s.data.get(key, "")) for s in shards if s.data.get(key) not in (None, "")))
        header[key] = values[0] if len(values) == 1 else ", ".join(values)
    header["merged"] = _merged_record(shards)
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
    """What a merged summary was made of: every shard, where it ran, its status (report.py's words)."""
    return report.merged_line(data)


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
    if any(s.kind == TRAINING for s in shards):
        return _run_training(shards, settings, out=out, say=say)
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


def _run_training(shards: list[Shard], settings: Settings, *, out: Path | None, say: Say) -> int:
    """`mnnrepro merge` of a training session's shards: check and merge, then the training reports."""
    data = merge_training(shards)
    written = report.write_all(out if out is not None else prepare.results_dir(settings, "merge"), data)
    say(merged_line(data))
    width = max(len(str(c["cell"])) for c in data["cells"])
    for c in data["cells"]:
        mark = "ok" if c.get("matched") and not report.failed(c) else "MISMATCH"
        say(f"  {c['cell']!s:{width}}  {c['verdict']:18}  {(c.get('expected') or '-'):18}  {mark}")
    for line in trainshards.whole_lines(data):
        say(line)
    say("\nreports: " + ", ".join(str(p) for p in written))
    if data["all_matched"]:
        say("merge: every cell matched its expectation")
        return 0
    say(f"merge: {sum(not c.get('matched') for c in data['cells'])} cell(s) did not match their expectation")
    return EXIT_MISMATCH
