"""Khronos validation layer on a Vulkan cell (issue 25): the layer's settings file, its environment, the capture of
its log, the canary that proves it ran, per-VUID counts, and the known VUIDs of fixtures/validation.toml.

Capture is through the layer's own settings (vk_layer_settings.txt: debug_action log, log_filename, report_flags,
no message limit), never by reading the driver's stderr. The layer (1.3.239) reopens log_filename for writing,
truncating it, at every vkCreateInstance, and MNN creates many instances in one training run: a plain file kept
the last instance's messages only (1 message where the layer's stdout had 65, 3.3.0 vulkan-buffer on lavapipe).
So log_filename is a FIFO in the cell's directory (reopening a FIFO truncates nothing) and `relay` appends what
the layer writes there to the cell's validation.log.

A cell's counts count only when the log holds the canary's VUID (the driver's `--vk-canary`: one deliberate
invalid call through the same loader, native/src/probe.cpp); otherwise the cell is NOT-EXERCISED for validation,
never "0 errors".
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import select
import threading
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .contract import ContractError, Device, device_fits, read_events
from .errors import ConfigError, FixtureError
from .fixtures import DEVICE_KEYS, ROOT, covers_cell, host_names_device
from .settings import VK_VALIDATION_MODES as MODES

LAYER = "VK_LAYER_KHRONOS_validation"
SETTINGS_FILE = "vk_layer_settings.txt"
LOG_ACTION = "VK_DBG_LAYER_ACTION_LOG_MSG"  # a judged cell's only action (never the break action: issue 25)
LOG = "validation.log"
FIFO = "validation.fifo"
RELAY_FAILED = "validation.relay-failed"  # the relay could not keep the log whole: the cell is NOT-EXERCISED
RELAY_GRACE_S = 10.0  # how long the relay drains after the driver ended before it gives up on a writer
RECORD = "validation.json"
CANARY_ARG = "--vk-canary"
CANARY_VUID = "VUID-VkPhysicalDeviceProperties2-sType-sType"  # native/src/probe.hpp kCanaryVuid
# The layer's key for synchronization validation in 1.3.239 (its manifest's `enables` flags).
SYNC_ENABLE = "VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT"
EXPECTATIONS = ROOT / "fixtures" / "validation.toml"
NOT_EXERCISED = "NOT-EXERCISED"
EXERCISED = "EXERCISED"
FIRST_MESSAGE_CHARS = 600
# One message's first line: "<id>(ERROR / SPEC): msgNum: <n> - <text>"; the lines after it ("Objects: ...") are
# indented and belong to it.
_HEADER = re.compile(
    r"^(?P<id>[A-Za-z0-9_.:-]+)\((?P<severity>[A-Z]+) / (?P<kind>[A-Z_]+)\): msgNum: -?\d+ - (?P<text>.*)$"
)


_PREFIX = re.compile(r"^.*?\| MessageID = 0x[0-9a-f]+ \| ")


def settings_text(log: Path, mode: str, *, action: str = LOG_ACTION, mute: Sequence[str] = ()) -> str:
    """The layer's settings file. report_flags error,warn: errors are the spec's VUIDs (and sync hazards);
    warnings are undefined-behaviour cases the spec names without a VUID (UNASSIGNED-...). info, perf and debug
    say nothing about MNN's correctness. The message limit is off so no VUID's count is cut at 10.

    ``action`` and ``mute`` are for the attribution reruns only (validation_frames.py): the break action there,
    and message_id_filter, which 1.3.239 reads from this file as one comma-separated list of VUID strings (or
    0x message ids) and mutes before any action runs. A judged cell keeps the defaults: log only, nothing muted."""
    if mode not in MODES or mode == "off":
        raise ValueError(f"no validation settings for mode {mode!r}")
    bad = [m for m in mute if not m or "," in m or any(c.isspace() for c in m)]
    if bad:
        raise ValueError(f"message ids to mute must be single tokens: {bad!r}")
    lines = [
        f"khronos_validation.debug_action = {action}",
        f"khronos_validation.log_filename = {log}",
        "khronos_validation.report_flags = error,warn",
        "khronos_validation.enable_message_limit = false",
        "khronos_validation.duplicate_message_limit = 1000000000",
    ]
    if mode == "sync":
        lines.append(f"khronos_validation.enables = {SYNC_ENABLE}")
    if mute:
        lines.append(f"khronos_validation.message_id_filter = {','.join(mute)}")
    return "\n".join(lines) + "\n"


def prepare_cell(result_dir: Path, mode: str) -> dict[str, str]:
    """Writes the cell's settings file (log_filename: the cell's FIFO, see the module's docstring) and returns the
    variables that enable the layer with it. The layer is found where the system installs it (explicit_layer.d):
    no VK_LAYER_PATH, so a caller's VK_LAYER_PATH still decides (a missing layer then shows as NOT-EXERCISED)."""
    for stale in (LOG, RECORD):
        (result_dir / stale).unlink(missing_ok=True)
    settings = result_dir / SETTINGS_FILE
    settings.write_text(settings_text(result_dir / FIFO, mode))
    return {"VK_INSTANCE_LAYERS": LAYER, "VK_LAYER_SETTINGS_PATH": str(settings)}


@contextmanager
def relay(result_dir: Path) -> Iterator[Path]:
    """The cell's FIFO while the driver runs; what the layer writes to it is appended to validation.log (every
    instance's messages, in order). Opened read-write here so the layer's open never blocks and the reader sees
    no end of file between instances; drained after the run."""
    fifo, log = result_dir / FIFO, result_dir / LOG
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    done, abandon = threading.Event(), threading.Event()
    (result_dir / RELAY_FAILED).unlink(missing_ok=True)

    def pump() -> None:
        # A log that cannot be written loses messages: the pipe is still drained (a full pipe would stall the
        # layer's write, and the driver with it) and the failure is written down, so assess() never counts a
        # log with messages missing.
        out: IO[bytes] | None = None
        try:
            out = open(log, "ab")  # closed below, after the last read
        except OSError as error:
            (result_dir / RELAY_FAILED).write_text(f"{log}: {error}\n")
        while not abandon.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if out is not None:
                    try:
                        out.write(chunk)
                    except OSError as error:
                        (result_dir / RELAY_FAILED).write_text(f"{log}: {error}\n")
                        out.close()
                        out = None
                continue
            if done.is_set():  # the run ended and nothing is left in the pipe
                break
        if out is not None:
            out.close()

    thread = threading.Thread(target=pump, name=f"validation-relay {result_dir.name}", daemon=True)
    thread.start()
    try:
        yield log
    finally:
        done.set()
        thread.join(RELAY_GRACE_S)
        if thread.is_alive():
            # Something outside the driver (a process it left behind) still writes: stop reading, and say the log
            # is not whole rather than wait for it.
            abandon.set()
            thread.join()
            (result_dir / RELAY_FAILED).write_text(
                f"{log}: still written {RELAY_GRACE_S:g} s after the driver ended (a process it left holds the FIFO)\n"
            )
        os.close(fd)
        fifo.unlink(missing_ok=True)


@dataclass
class Parsed:
    counts: dict[str, int] = field(default_factory=dict)  # message id (VUID or UNASSIGNED-...) -> messages
    first: dict[str, str] = field(default_factory=dict)  # message id -> its first message's text
    severity: dict[str, str] = field(default_factory=dict)


def parse_log(text: str) -> Parsed:
    """Per message id: how many messages, the first one's text (cut at FIRST_MESSAGE_CHARS) and its severity."""
    parsed = Parsed()
    for line in text.splitlines():
        match = _HEADER.match(line)
        if match is None:
            continue
        vuid = match["id"]
        parsed.counts[vuid] = parsed.counts.get(vuid, 0) + 1
        text = _PREFIX.sub("", match["text"])  # the object handles and message number: the spec's words stay
        parsed.first.setdefault(vuid, text[:FIRST_MESSAGE_CHARS])
        parsed.severity.setdefault(vuid, match["severity"])
    return parsed


def canary_event(events: Path) -> dict[str, Any] | None:
    """The driver's vk_canary event (events.jsonl, read by contract.read_events like every other event), or None.
    Events that break the contract prove no canary: None, so the cell is NOT-EXERCISED, never "0 errors"."""
    try:
        return read_events(events).canary
    except ContractError:
        return None


@dataclass(frozen=True)
class Known:
    """A row of fixtures/validation.toml: a VUID MNN is known to raise on these refs, variant and ICD."""

    refs: tuple[str, ...]
    variant: str
    icd: str
    vuid: str
    reason: str
    upstream: str = ""
    commit: str = ""
    sometimes: bool = False  # seen in some runs only (uninitialised memory decides): never stale
    # "sync": a message only synchronization validation raises (SYNC-HAZARD-*): the row covers sync runs only, so
    # an "on" run neither lists nor calls it stale; "" covers both modes.
    mode: str = ""
    # MNN's own tests (ops run --vk-validation): an fnmatch pattern of the test names the row covers. A row with
    # tests covers those tests only, never a training cell; a row without covers training cells only (its counts
    # were seen on MNIST, not on any one op's test).
    tests: str = ""
    # The device the row was learned on (issue 22's keys, as fixtures/matrix.toml's rows): fnmatch patterns of the
    # cell's probed device name, PCI vendor and driver version; "" is any. A row that names one never holds on a
    # cell whose device is unknown; a row that covers the host ICD must name one (host is another GPU everywhere).
    device: str = ""
    vendor: str = ""
    driver: str = ""

    def covers(
        self, ref: str, version: str | None, variant: str, icd: str, mode: str = "on", device: Device | None = None
    ) -> bool:
        return (
            not self.tests
            and (not self.mode or self.mode == mode)
            and covers_cell(self.refs, self.variant, self.icd, ref, version, variant, icd)
            and device_fits(device, self.device, self.vendor, self.driver)
        )

    def covers_test(self, ref: str, version: str | None, variant: str, icd: str, test: str, mode: str = "on") -> bool:
        """A row of MNN's own tests that covers this test of the cell (workloads/ops/opvalidation.py)."""
        return (
            bool(self.tests)
            and fnmatch.fnmatchcase(test, self.tests)
            and (not self.mode or self.mode == mode)
            and covers_cell(self.refs, self.variant, self.icd, ref, version, variant, icd)
            and not (self.device or self.vendor or self.driver)  # MNN's tests: no device facts per test yet
        )

    def describe(self) -> str:
        where = ", ".join(x for x in (self.upstream, self.commit and f"fixed by {self.commit}") if x)
        tests = f" tests {self.tests}" if self.tests else ""
        on = "".join(f" {k}={getattr(self, k)!r}" for k in DEVICE_KEYS if getattr(self, k))
        return (
            f"{self.vuid} ({','.join(self.refs)} {self.variant} {self.icd}{on}{tests}{'; ' + where if where else ''})"
        )


_ROW_KEYS = {
    "refs",
    "variant",
    "icd",
    "vuid",
    "reason",
    "upstream",
    "commit",
    "sometimes",
    "mode",
    "tests",
    *DEVICE_KEYS,
}


def load_known(path: Path = EXPECTATIONS) -> list[Known]:
    """The rows of fixtures/validation.toml; an unknown key or a row without refs, VUID or reason is an error."""
    data = tomllib.loads(path.read_text()) if path.is_file() else {}
    rows = []
    for number, row in enumerate(data.get("known", []), 1):
        unknown = set(row) - _ROW_KEYS
        missing = {"refs", "vuid", "reason"} - set(row)
        if row.get("mode", "") not in ("", "sync"):
            raise ConfigError(
                f"{path}: [[known]] row {number}: mode = {row['mode']!r}", hint='mode is "sync" or absent'
            )
        if unknown or missing or not isinstance(row.get("refs"), list):
            raise ConfigError(
                f"{path}: [[known]] row {number}: unknown {sorted(unknown)}, missing {sorted(missing)}",
                hint=f"keys: {', '.join(sorted(_ROW_KEYS))}; refs is a list",
            )
        # icd: a pattern or a list of them, one row per entry (as fixtures/matrix.toml's rows).
        icds = row.get("icd", "*")
        on = {k: str(row[k]) for k in DEVICE_KEYS if k in row}
        if row.get("tests") and on:
            # Known.covers_test matches no row with device keys (ops pass no device per test yet): such a row
            # would never list its VUID nor go stale, silently.
            raise ConfigError(
                f"{path}: [[known]] row {number}: tests together with {', '.join(sorted(on))}",
                hint="a row of MNN's own tests names no device, vendor or driver (ops pass no device yet)",
            )
        for icd in icds if isinstance(icds, list) else [icds]:
            try:
                host_names_device(f"{path}: [[known]] row {number}", str(row.get("variant", "*")), str(icd), on)
            except FixtureError as error:
                raise ConfigError(str(error), hint='e.g. vendor = "NVIDIA"') from None
            rows.append(
                Known(
                    tuple(str(r) for r in row["refs"]),
                    str(row.get("variant", "*")),
                    str(icd),
                    str(row["vuid"]),
                    str(row["reason"]),
                    str(row.get("upstream", "")),
                    str(row.get("commit", "")),
                    bool(row.get("sometimes", False)),
                    str(row.get("mode", "")),
                    str(row.get("tests", "")),
                    **on,
                )
            )
    return rows


def assess(
    result_dir: Path,
    *,
    ref: str,
    version: str | None,
    variant: str,
    icd: str,
    mode: str,
    known: list[Known],
    device: Device | None = None,
) -> dict[str, Any]:
    """The cell's validation record (validation.json, the verdict's evidence): NOT-EXERCISED unless the driver
    made the canary and the log holds its VUID; else every VUID with its count and first message (the canary's
    own messages taken out), the unlisted ones (`findings`) and the listed ones that did not appear (`stale`)."""
    log = result_dir / LOG
    failed = result_dir / RELAY_FAILED
    if failed.is_file():
        why = f"the layer's log could not be kept whole ({failed.read_text().strip()}): its counts would be short"
        return {
            "mode": mode,
            "log": str(log),
            "settings": str(result_dir / SETTINGS_FILE),
            "status": NOT_EXERCISED,
            "reason": why,
            "vuids": {},
            "findings": [],
            "stale": [],
            "known": [],
        }
    canary = canary_event(result_dir / "events.jsonl")
    parsed = parse_log(log.read_text(errors="replace")) if log.is_file() else Parsed()
    record: dict[str, Any] = {"mode": mode, "log": str(log), "settings": str(result_dir / SETTINGS_FILE)}
    made = int(canary.get("count", 0)) if canary and canary.get("made") else 0
    if not made or parsed.counts.get(CANARY_VUID, 0) < made:
        why = (
            "the driver made no canary call (no vk_canary event: it ended before its device probe, or is older)"
            if not made
            else f"the layer did not report the canary ({CANARY_VUID}): it was not loaded or did not log"
        )
        record.update(status=NOT_EXERCISED, reason=why, vuids={}, findings=[], stale=[], known=[])
        return record
    counts = dict(parsed.counts)
    counts[CANARY_VUID] -= made
    if counts[CANARY_VUID] == 0:
        del counts[CANARY_VUID]
    rows = [k for k in known if k.covers(ref, version, variant, icd, mode, device)]

    # A row's vuid is a pattern (fnmatch): one row may name a family whose member the run's own unset memory picks.
    def listed(v: str) -> bool:
        return any(fnmatch.fnmatchcase(v, k.vuid) for k in rows)

    record.update(
        status=EXERCISED,
        reason=f"the layer reported the canary; {sum(counts.values())} message(s) in {len(counts)} id(s)",
        vuids={
            v: {"count": n, "severity": parsed.severity[v], "first": parsed.first[v]}
            for v, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        },
        findings=sorted(v for v in counts if not listed(v)),
        known=sorted(v for v in counts if listed(v)),
        stale=[
            k.describe() for k in rows if not k.sometimes and not any(fnmatch.fnmatchcase(v, k.vuid) for v in counts)
        ],
    )
    return record


def write_record(result_dir: Path, record: dict[str, Any]) -> None:
    (result_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")


def one_line(record: dict[str, Any]) -> str:
    """The record for the verdict table: NOT-EXERCISED with why, or the counts, findings and stale rows."""
    if record.get("status") != EXERCISED:
        return f"validation {record.get('mode')}: {NOT_EXERCISED}: {record.get('reason')}"
    vuids = record.get("vuids", {})
    text = f"validation {record.get('mode')}: {sum(v['count'] for v in vuids.values())} message(s), {len(vuids)} id(s)"
    if record.get("findings"):
        text += f"; NEW: {', '.join(record['findings'])}"
    if record.get("stale"):
        text += f"; STALE: {', '.join(record['stale'])}"
    attribution = record.get("attribution")
    if attribution and attribution["status"] == "skipped":
        if vuids:  # a clean cell has no frame to miss: why none was attributed is noise there
            text += f"; frames skipped: {attribution['reason']}"
    elif attribution:  # where MNN issued them (validation_frames.py): its cost is one rerun per VUID
        text += f"; frames {attribution['status']} ({attribution['runs']} rerun(s), {attribution['seconds']} s)"
    return text


def first_frame(info: dict[str, Any], attribution: dict[str, Any] | None) -> str:
    """The VUID's first MNN frame (validation_frames.py's rerun under gdb), or why there is none: "-" where no
    attribution was made (an older record), else its note, the run's skip reason."""
    frames = info.get("frames")
    if frames:
        return str(frames[0])
    if frames is None:
        return "-" if not attribution else f"not attributed: {attribution.get('reason', '')}"
    return str(info.get("note") or "no MNN frame")


def vuid_rows(cells: list[dict[str, Any]]) -> list[tuple[str, str, int, str, str, str]]:
    """(cell, VUID, count, listed|NEW, first MNN frame, first message) for every cell's validation record."""
    rows = []
    for c in cells:
        record = (c.get("evidence") or {}).get("validation")
        if not record:
            continue
        if record.get("status") != EXERCISED:
            rows.append((c["cell"], NOT_EXERCISED, 0, "-", "-", str(record.get("reason", ""))))
            continue
        findings = set(record.get("findings", []))
        attribution = record.get("attribution")
        for vuid, info in record.get("vuids", {}).items():
            listed = "NEW" if vuid in findings else "listed"
            rows.append((c["cell"], vuid, int(info["count"]), listed, first_frame(info, attribution), info["first"]))
        rows += [(c["cell"], f"STALE {s}", 0, "stale", "-", "listed, not seen") for s in record.get("stale", [])]
    return rows
