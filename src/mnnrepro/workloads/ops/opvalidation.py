"""Khronos validation on MNN's own tests (issue 25: ``ops run --vk-validation on|sync``): the VUIDs per test, so a
kernel's misuse is pinned to an op, and per cell the table VUID -> tests.

Each test process of a Vulkan cell gets its own settings file and log in its own directory (written here before the
batch), and optest_batch.py relays a FIFO per test into the test's validation.log (the layer truncates
log_filename at every vkCreateInstance: validation.py's docstring). The op verdict (PASS, FAIL, ...) stays what it
is; validation is reported beside it.

Proof that the layer ran, since mnn_optest has no ``--vk-canary`` (adding one would rebuild every test object):

- Per cell, the canary: the suite's driver, of the same build, runs once with ``--vk-canary`` under the same ICD,
  layer and settings (its own settings file and FIFO, in ``validation-canary/``). It makes its one deliberate invalid
  call in its device probe and then stops at loading data (``--data`` names a directory that does not exist: no
  training, exit 3). validation.assess judges it as a training cell's: the layer must report the canary's VUID. This
  proves that in this cell's environment the layer is found, loads and reports errors with these settings.
- Per test, the layer's own word that it was loaded in that process: the settings add ``info`` to report_flags, and
  1.3.239 logs ``UNASSIGNED-khronos-validation-createinstance-status-message`` at every vkCreateInstance ("Khronos
  Validation Layer Active: Settings File: Found at PATH ... Current Enables: ..."). A test counts only when its log
  holds at least one such message and every one of them names the test's own settings file (so the messages came
  from this process's layer, reading this test's settings); in sync mode each must also list the synchronization
  enable. mnn_optest's device probe creates an instance before MNN does, so every test that reached its probe has
  one. The loader's VK_LOADER_DEBUG was not taken: it writes to stderr (the issue wants no stderr scraping) and says
  the loader inserted the layer, not that the layer read these settings and logs where we read.

A test whose log cannot be shown to come from a loaded layer (no status message, another settings file, a log the
relay could not keep whole), or any test of a cell whose canary was not reported, is NOT-EXERCISED for validation,
never "0 errors". Info messages are evidence, not findings: the VUID counts hold errors and warnings only, as a
training cell's (report_flags error,warn there).

The raw log is kept gzipped (``validation.log.gz``, LOG_GZ): optest_batch.py compresses it once the relay has closed
and kept it whole, since a heavy test's log runs to hundreds of MB (the first 8 validated tests: 680 MB). What is
recorded (counts, first messages, the per-test record, the log's size before and after) is read from it through the
same chunked parse as a plain log; the canary's log stays plain (validation.assess reads it, and it is small).

Known VUIDs of tests are rows of fixtures/validation.toml with a ``tests`` pattern (validation.Known.covers_test); a
VUID no such row lists is a finding (reported, the op verdict unchanged), a row none of its exercised tests raised
is stale.
"""

from __future__ import annotations

import fnmatch
import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ... import validation

STATUS_ID = "UNASSIGNED-khronos-validation-createinstance-status-message"
CANARY_DIR = "validation-canary"
CANARY_NAME = "(validation canary)"
# The enable as 1.3.239's status message names it, the settings file's name less _EXT ("Current Enables:
# VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION.", seen 2026-12-06; checking for the _EXT name made every
# test of a sync cell NOT-EXERCISED).
SYNC_STATUS = validation.SYNC_ENABLE.removesuffix("_EXT")
_SYNC_LISTED = re.compile(rf"\b{SYNC_STATUS}(?:_EXT)?\b")  # either spelling, and no longer name
LOG_GZ = validation.LOG + ".gz"  # a test's log once optest_batch.py compressed it
_FLAGS = "khronos_validation.report_flags = error,warn\n"
_SETTINGS_FOUND = re.compile(r"Settings File: Found at (.+?) specified by")
_ENABLES = re.compile(r"Current Enables: (.*?)\.\s*$", re.M)
EVIDENCE_SEVERITIES = ("INFO",)  # messages kept apart from the counts: report_flags adds info for the status message
# A test's log is read this many lines at a time: op/convolution/conv2d at 3.3.0 in image mode writes 145 MB in two
# minutes under the layer (3177 instances), too much to hold as one string and its lines.
CHUNK_LINES = 200_000


@dataclass
class Scan:
    """One log read through: the messages (validation.Parsed) and each status message's settings file and enables."""

    parsed: validation.Parsed = field(default_factory=validation.Parsed)
    settings: list[str] = field(default_factory=list)
    enables: list[str] = field(default_factory=list)
    log_bytes: int = 0  # the layer's text, uncompressed
    stored_bytes: int = 0  # what the log takes on disk (gzipped, or plain where it could not be compressed)


def stored_log(directory: Path) -> Path:
    """A test run's log as kept: the .gz (whole once it exists: written aside and renamed), else the plain one."""
    packed = directory / LOG_GZ
    return packed if packed.is_file() else directory / validation.LOG


def scan(log: Path) -> Scan:
    """validation.parse_log over the log (plain or .gz) a chunk of whole lines at a time (a message's header is one
    line, so the counts, first messages and severities are those of the whole text), with the status messages'
    lines and the log's size."""
    out = Scan()
    if not log.is_file():
        return out
    out.stored_bytes = log.stat().st_size

    def feed(lines: list[str]) -> None:
        text = "".join(lines)
        part = validation.parse_log(text)
        for vuid, n in part.counts.items():
            out.parsed.counts[vuid] = out.parsed.counts.get(vuid, 0) + n
            out.parsed.first.setdefault(vuid, part.first[vuid])
            out.parsed.severity.setdefault(vuid, part.severity[vuid])
        out.settings.extend(m.strip() for m in _SETTINGS_FOUND.findall(text))
        out.enables.extend(_ENABLES.findall(text))

    with gzip.open(log, "rb") if log.suffix == ".gz" else open(log, "rb") as f:
        lines: list[str] = []
        for raw in f:
            out.log_bytes += len(raw)
            lines.append(raw.decode(errors="replace"))
            if len(lines) >= CHUNK_LINES:
                feed(lines)
                lines = []
        feed(lines)
    return out


def settings_text(log: Path, mode: str) -> str:
    """A training cell's settings (validation.settings_text) with info added to report_flags, for the layer's status
    message at every vkCreateInstance (the per-process evidence, see the docstring)."""
    text = validation.settings_text(log, mode)
    if _FLAGS not in text:  # the line this relies on changed: fail loudly rather than run without the evidence
        raise RuntimeError(f"validation.settings_text has no {_FLAGS.strip()!r} line to extend with info")
    return text.replace(_FLAGS, "khronos_validation.report_flags = error,warn,info\n")


def prepare_run(directory: Path, mode: str, *, compress: bool = True) -> tuple[dict[str, str], dict[str, Any]]:
    """One process's settings file in its directory: the variables that load the layer with it, and the relay spec
    optest_batch.py takes (its plan entry's "validation"; ``compress``: the log kept as LOG_GZ)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in (validation.LOG, LOG_GZ, validation.RECORD, validation.RELAY_FAILED):
        (directory / stale).unlink(missing_ok=True)
    settings = directory / validation.SETTINGS_FILE
    settings.write_text(settings_text(directory / validation.FIFO, mode))
    env = {"VK_INSTANCE_LAYERS": validation.LAYER, "VK_LAYER_SETTINGS_PATH": str(settings)}
    relay = {
        "fifo": str(directory / validation.FIFO),
        "log": str(directory / validation.LOG),
        "failed": str(directory / validation.RELAY_FAILED),
        "grace_s": validation.RELAY_GRACE_S,
    }
    if compress:
        relay["compressed"] = str(directory / LOG_GZ)
    return env, relay


def canary_entry(cell_dir: Path, driver: Path, plugin: Path | None, mode: str, timeout_s: float) -> dict[str, Any]:
    """The plan entry of the cell's canary: the driver's device probe with --vk-canary, stopped at loading data."""
    directory = cell_dir / CANARY_DIR
    env, relay = prepare_run(directory, mode, compress=False)  # validation.assess reads a plain log
    (directory / "events.jsonl").unlink(missing_ok=True)
    argv = [str(driver), "--backend", "vulkan", "--data", str(directory / "no-data"), "--out", str(directory)]
    argv += [*(["--plugin", str(plugin)] if plugin is not None else []), validation.CANARY_ARG]
    return {
        "name": CANARY_NAME,
        "dir": str(directory),
        "argv": argv,
        "env": env,
        "timeout_s": timeout_s,
        "validation": relay,
    }


def canary_record(cell_dir: Path, mode: str) -> dict[str, Any]:
    """The canary judged as a training cell's (EXERCISED only when the layer reported the canary's VUID)."""
    record = validation.assess(cell_dir / CANARY_DIR, ref="", version=None, variant="", icd="", mode=mode, known=[])
    return {"status": record["status"], "reason": record["reason"], "directory": str(cell_dir / CANARY_DIR)}


def status_evidence(seen: Scan, settings: Path, mode: str) -> tuple[int, str]:
    """(status messages, "" or why they do not prove the layer read this settings file) of one process's log."""
    count = seen.parsed.counts.get(STATUS_ID, 0)
    if count == 0:
        return 0, f"the layer logged no {STATUS_ID} (it logs one at every vkCreateInstance): not loaded in this process"
    found = seen.settings
    # Resolved: a results directory reached through a link (results/latest) names the same file.
    if len(found) != count or any(Path(path).resolve() != settings.resolve() for path in found):
        return count, f"the layer's status messages name settings {sorted(set(found))}, not only {settings}"
    if mode == "sync":
        enables = seen.enables
        if len(enables) != count or not all(_SYNC_LISTED.search(e) for e in enables):
            return count, f"a status message does not list {SYNC_STATUS}: ran without sync validation"
    return count, ""


def assess_test(directory: Path | None, mode: str, canary: dict[str, Any]) -> dict[str, Any]:
    """One test run's record: NOT-EXERCISED (with why) unless the canary was reported and the log shows this
    process's layer; else every error and warning id with its count and first message."""
    record: dict[str, Any] = {"mode": mode, "status": validation.NOT_EXERCISED, "vuids": {}, "instances": 0}
    if directory is None:
        return {**record, "reason": "the test did not run"}
    failed, log = directory / validation.RELAY_FAILED, stored_log(directory)
    record["log"] = str(log)
    if canary.get("status") != validation.EXERCISED:
        return {**record, "reason": f"the cell's canary was not reported ({canary.get('reason')})"}
    if failed.is_file():
        return {**record, "reason": f"the layer's log could not be kept whole ({failed.read_text().strip()})"}
    seen = scan(log)
    record.update(log_bytes=seen.log_bytes, stored_bytes=seen.stored_bytes)
    instances, problem = status_evidence(seen, directory / validation.SETTINGS_FILE, mode)
    record["instances"] = instances
    if problem:
        return {**record, "reason": problem}
    parsed = seen.parsed
    counted = {v: n for v, n in parsed.counts.items() if parsed.severity[v] not in EVIDENCE_SEVERITIES}
    info = {v: n for v, n in parsed.counts.items() if v not in counted}
    record.update(
        status=validation.EXERCISED,
        reason=f"the layer loaded in {instances} instance(s); {sum(counted.values())} message(s), {len(counted)} id(s)",
        vuids={
            v: {"count": n, "severity": parsed.severity[v], "first": parsed.first[v]}
            for v, n in sorted(counted.items(), key=lambda item: (-item[1], item[0]))
        },
        info=info,
    )
    return record


# Op verdicts of a run in which no op ran on the Vulkan backend: the layer saw only mnn_optest's device probe, whose
# instance satisfies status_evidence, so "EXERCISED, 0 messages" would be a false green (FALLBACK: every op on the CPU,
# unless `partial` names the op types that fell back).
NO_VULKAN_WORK = ("NOT-EXERCISED", "NO-GPU-WORK")
# A run that did not finish (its own status, or the first status under FLAKE or CPU-FAIL): its VUIDs count, but a row
# it did not raise says nothing, since the op that raises it may not have run yet.
ENDED_EARLY = ("TIMEOUT", "CRASH")


def join_verdict(record: dict[str, Any], status: str, partial: dict[str, int]) -> dict[str, Any]:
    """A test's record beside its op verdict: NOT-EXERCISED where no op ran on the Vulkan backend; a partial
    FALLBACK's CPU op types marked (``fallback``), the VUIDs then of the ops that did run on Vulkan only."""
    if status in NO_VULKAN_WORK or (status == "FALLBACK" and not partial):
        record.update(status=validation.NOT_EXERCISED, reason=f"no op ran on the Vulkan backend ({status})")
    elif partial:
        record["fallback"] = dict(partial)
    return record


def cell_table(
    records: dict[str, dict[str, Any]],
    canary: dict[str, Any],
    known: list[validation.Known],
    cell: tuple[str, str | None, str, str],
    mode: str,
    ended_early: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """A cell's validation: VUID -> {tests: {test: count}, count, first, listed}; each test's findings and known
    VUIDs marked in its record; the rows of its tests none of their exercised tests raised (stale). A test in
    ``ended_early`` (TIMEOUT, CRASH: ENDED_EARLY) covers no row for staleness."""
    ref, version, variant, icd = cell
    vuids: dict[str, dict[str, Any]] = {}
    exercised = [t for t, r in sorted(records.items()) if r["status"] == validation.EXERCISED]
    for test in exercised:
        record = records[test]
        rows = [k for k in known if k.covers_test(ref, version, variant, icd, test, mode)]
        listed = {v for v in record["vuids"] if any(fnmatch.fnmatchcase(v, k.vuid) for k in rows)}
        record["findings"] = sorted(set(record["vuids"]) - listed)
        record["known"] = sorted(listed)
        for vuid, info in record["vuids"].items():
            entry = vuids.setdefault(vuid, {"count": 0, "tests": {}, "first": info["first"], "new_in": []})
            entry["count"] += info["count"]
            entry["tests"][test] = info["count"]
            if vuid not in listed:
                entry["new_in"].append(test)
    stale = []
    for row in known:
        if row.sometimes or not row.tests:
            continue
        covered = [
            t for t in exercised if t not in ended_early and row.covers_test(ref, version, variant, icd, t, mode)
        ]
        if covered and not any(fnmatch.fnmatchcase(v, row.vuid) for t in covered for v in records[t]["vuids"]):
            stale.append(row.describe())
    not_exercised = {t: r["reason"] for t, r in sorted(records.items()) if r["status"] != validation.EXERCISED}
    return {
        "mode": mode,
        "canary": canary,
        "exercised": len(exercised),
        "not_exercised": not_exercised,
        "vuids": dict(sorted(vuids.items(), key=lambda item: (-len(item[1]["tests"]), -item[1]["count"], item[0]))),
        "findings": sorted(v for v, e in vuids.items() if e["new_in"]),
        "stale": stale,
        # The layer's text of every test run read here, and what its logs take on disk (gzipped).
        "log_bytes": sum(int(r.get("log_bytes", 0)) for r in records.values()),
        "stored_bytes": sum(int(r.get("stored_bytes", 0)) for r in records.values()),
    }


def problems(table: dict[str, Any]) -> str:
    """Why a cell's validation fails the session's exit code ("" when it does not): a canary the layer did not
    report, no test exercised, new VUIDs (findings) or stale rows. The op verdicts stay what they are."""
    canary = table["canary"]
    if canary.get("status") != validation.EXERCISED:
        return f"the canary was not reported ({canary.get('reason')})"
    why = []
    if not table["exercised"]:
        why.append("0 tests exercised for validation")
    if table["findings"]:
        why.append(f"new VUID(s) {', '.join(table['findings'])}")
    if table["stale"]:
        why.append(f"stale row(s) {'; '.join(table['stale'])}")
    return "; ".join(why)


def one_line(table: dict[str, Any]) -> str:
    """A cell's validation for the terminal table."""
    canary = table["canary"]
    if canary.get("status") != validation.EXERCISED:
        return f"validation {table['mode']}: {validation.NOT_EXERCISED} (canary not reported: {canary.get('reason')})"
    vuids = table["vuids"]
    text = (
        f"validation {table['mode']}: {table['exercised']} test(s) exercised, {len(table['not_exercised'])} "
        f"NOT-EXERCISED; {sum(v['count'] for v in vuids.values())} message(s) in {len(vuids)} id(s)"
    )
    if table["findings"]:
        text += f"; NEW: {', '.join(table['findings'])}"
    if table["stale"]:
        text += f"; STALE: {', '.join(table['stale'])}"
    if table.get("log_bytes"):
        text += f"; logs {table['log_bytes'] / 1e6:.1f} MB, kept {table.get('stored_bytes', 0) / 1e6:.1f} MB"
    return text
